"""`neobert pretrain CONFIG.yaml... [section.key=value ...] [--resume [CHECKPOINT]]`.

The same command runs on one CPU and under `torchrun --nproc-per-node N -m neobert pretrain ...`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# A bad configuration or corpus: exit 2. The other exit codes (README, "Pre-training"), mapped by
# neobert.cli.exit_code_of: 0 done, or stopped by a signal with its checkpoint saved; 3 no checkpoint to resume
# from verifies (or the one named is damaged); 4 the disk filled up while saving (the previous checkpoint is
# kept); 5 the loss became NaN or infinite.
USER_ERRORS = (ValueError, FileNotFoundError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "items",
        nargs="+",
        metavar="CONFIG_OR_OVERRIDE",
        help="YAML files or preset names (demo, neobert-250m-stage1, neobert-250m-stage2, ablations/m0..m9), "
        "merged in order, then dotted overrides such as train.lr=6e-4 budget.hours=2",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CHECKPOINT",
        help="continue from the run's latest good checkpoint, or from the one named (a key=value after "
        "--resume is an override, not a checkpoint)",
    )
    parser.add_argument("--stop-at-step", type=int, default=None, help="checkpoint and stop at this step")
    parser.add_argument(
        "--restart", action="store_true", help="delete the run in system.output_dir first and start afresh"
    )
    parser.epilog = "--resume continues the run; --restart replaces it (the convention of every command)"


def split_items(items: list[str]) -> tuple[list[str], list[str]]:
    """YAML files (a preset name stands for its file) on one side, `key=value` overrides on the other."""
    from neobert.train.config import preset_path

    overrides = [item for item in items if "=" in item]
    paths = [item for item in items if "=" not in item]
    return [p if Path(p).exists() or p.endswith((".yaml", ".yml")) else str(preset_path(p)) for p in paths], overrides


def run(args: argparse.Namespace) -> int:
    from neobert.train.config import load_config
    from neobert.train.data import make_eval_batches, make_loader
    from neobert.train.pretrain import pretrain

    if isinstance(args.resume, str) and "=" in args.resume:
        # `--resume` takes an optional checkpoint, so argparse hands it the override that follows it; a
        # checkpoint path with "=" in it is not worth that trap: the item is an override, and the run resumes.
        args.items.append(args.resume)
        args.resume = True
    paths, overrides = split_items(args.items)
    config = load_config(paths, overrides)
    result = pretrain(config, make_loader, make_eval_batches, args.resume, args.stop_at_step, restart=args.restart)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, one summary: rank 0's
    print(f"{result.status} at step {result.step}; checkpoint: {result.checkpoint}")
    for phase in result.phases:  # the branch points this run descends from (phase.json)
        label = f"phase {phase['name']}" if phase["name"] else "phase"
        print(
            f"  {label} from {phase['source']} (step {phase['step']}, manifest sha256 "
            f"{phase['manifest_sha256']}), carrying its {phase['carry']}"
        )
    for name, value in sorted(result.last_eval.items()):
        if name != "step":
            print(f"  {name}: {value:.4f}")
    return 0
