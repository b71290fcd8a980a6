"""`neobert glue --model DIR --data PATH [--tasks rte,mrpc] [--grid paper|paper-text|small] --out DIR`."""

from __future__ import annotations

import argparse

from neobert.commands.finetune import add_settings_arguments, settings_from

# Bad data, a bad grid, an unknown task (see neobert.cli.exit_code_of; a missing model too).
USER_ERRORS = (ValueError,)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a model folder or checkpoint")
    parser.add_argument(
        "--data",
        required=True,
        help="the GLUE folder (CoLA/, SST-2/, ...), a saved datasets folder "
        "with one sub-folder per task, or hf:nyu-mll/glue",
    )
    parser.add_argument("--tasks", default=None, help="comma list (default: the paper's eight; wnli optional)")
    parser.add_argument("--grid", default="paper", help="paper (60 runs a task), paper-text (40) or small (6)")
    parser.add_argument("--lrs", default=None, help="comma list replacing the grid's learning rates")
    parser.add_argument("--batch-sizes", default=None, help="comma list replacing the grid's batch sizes")
    parser.add_argument("--weight-decays", default=None, help="comma list replacing the grid's weight decays")
    parser.add_argument("--mnli-model", default=None, help="the MNLI model to start RTE/STS-B/MRPC/QNLI from")
    parser.add_argument(
        "--out", default="runs/glue", help="output folder (finished runs of the same settings are reused)"
    )
    parser.add_argument("--restart", action="store_true", help="delete the earlier runs of these tasks in --out first")
    add_settings_arguments(parser)
    parser.set_defaults(max_length=1024)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from neobert.errors import UsageError
    from neobert.finetune.glue import GRIDS, run_glue
    from neobert.finetune.glue_data import resolve_tasks
    from neobert.run_lock import check_output_folder

    check_output_folder(args.out, "--out")
    tasks = resolve_tasks(args.tasks)
    if args.grid not in GRIDS:
        raise UsageError(f"--grid must be one of {', '.join(GRIDS)}, got {args.grid!r}")
    grid = GRIDS[args.grid]
    if args.lrs:
        grid = replace(grid, lrs=tuple(float(v) for v in args.lrs.split(",")))
    if args.batch_sizes:
        grid = replace(grid, batch_sizes=tuple(int(v) for v in args.batch_sizes.split(",")))
    if args.weight_decays:
        grid = replace(grid, weight_decays=tuple(float(v) for v in args.weight_decays.split(",")))
    report = run_glue(
        args.model, args.data, tasks, grid, settings_from(args), args.out, args.mnli_model, restart=args.restart
    )
    print(report["table"])
    return 0
