"""Tokens per second per core of `neobert prepare --tasks` (the task path on datatrove's local executor), and
the wall time that projects to for 600B tokens (RefinedWeb) on 100 and 1,000 cores.

The demo corpus's pre-training text is written as `--files` JSON Lines files and prepared as `--tasks`
tasks, `--tasks` at a time, each tokenising in one process (as one Slurm task with one CPU does). Per
core means over the CPU time the run used (this process and its task processes, from the kernel's
accounting), so a machine shared with other jobs does not lower it; wall-clock figures are reported beside
it. Tokenising is per document and tasks share nothing, so the projection divides by the core count.

    python benchmarks/studies/cluster_prepare_throughput.py [--tasks 2] [--repeats 3] [--parquet] [--quick]
        [--out x.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))
from prepare_throughput import demo_text, quick_text  # noqa: E402

REFINEDWEB_TOKENS = 600e9
CORES = (100, 1000)


def split_into_files(source: Path, folder: Path, files: int, parquet: bool) -> Path:
    """The JSON Lines file cut into `files` files of about equal size, in order; as Parquet files with a
    `content` column (RefinedWeb's layout) when `parquet`."""
    # Records end at "\n" only: str.splitlines would also cut at U+2028 inside a record's text.
    lines = [line + "\n" for line in source.read_text(encoding="utf-8").split("\n") if line]
    folder.mkdir(parents=True)
    per_file = -(-len(lines) // files)
    for number in range(files):
        part = lines[number * per_file : (number + 1) * per_file]
        if parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            texts = [json.loads(line)["text"] for line in part]
            pq.write_table(pa.table({"content": texts}), folder / f"part_{number:04d}.parquet")
        else:
            (folder / f"part_{number:04d}.jsonl").write_text("".join(part))
    return folder


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (the task processes, once joined)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def one_run(inputs: Path, out: Path, tasks: int, max_length: int, text_field: str) -> dict:
    from neobert.data.cluster_executors import run_local
    from neobert.data.cluster_prepare import make_plan, write_plan
    from neobert.data.prepare import PrepareConfig
    from neobert.data.sources import ReaderOptions, resolve_sources
    from neobert.tokenizer import load_tokenizer

    config = PrepareConfig(max_length=max_length, workers=1, progress=False, reader=ReaderOptions(text_field))
    tokenizer = load_tokenizer()
    cpu_before, wall_before = cpu_seconds(), time.perf_counter()
    plan = make_plan(resolve_sources([str(inputs)], config.reader), tokenizer, config, tasks)
    write_plan(out, plan)
    summary = run_local(out, plan, parallel=tasks)
    wall, cpu = time.perf_counter() - wall_before, cpu_seconds() - cpu_before
    tokens = summary.manifest["stats"]["tokens"]
    return {
        "tokens": tokens,
        "text_bytes": summary.manifest["stats"]["text_bytes"],
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "tokens_per_cpu_second": round(tokens / cpu),
        "tokens_per_wall_second": round(tokens / wall),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="made-up text instead of the demo corpus")
    parser.add_argument("--parquet", action="store_true", help="Parquet input files (RefinedWeb's format)")
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        source, documents, size, _ = (quick_text if args.quick else demo_text)(scratch)
        inputs = split_into_files(source, scratch / "inputs", args.files, args.parquet)
        field = "content" if args.parquet else "text"
        runs = [one_run(inputs, scratch / f"out_{n}", args.tasks, args.max_length, field) for n in range(args.repeats)]
    per_core = statistics.median(run["tokens_per_cpu_second"] for run in runs)
    report = {
        "corpus": {"name": "quick (made-up)" if args.quick else "demo", "documents": documents, "text_mb": size / 1e6},
        "tasks": args.tasks,
        "files": args.files,
        "format": "parquet" if args.parquet else "jsonl",
        "runs": runs,
        "tokens_per_second_per_core": per_core,
        "projected_hours_for_600b_tokens": {
            str(cores): round(REFINEDWEB_TOKENS / (per_core * cores) / 3600, 2) for cores in CORES
        },
    }
    print(
        f"{args.tasks} tasks over {args.files} {report['format']} files, {documents:,} documents, "
        f"{size / 1e6:.1f} MB of text"
    )
    for run in runs:
        print(
            f"  {run['tokens']:,} tokens in {run['wall_seconds']:.1f} s wall, {run['cpu_seconds']:.1f} s CPU: "
            f"{run['tokens_per_cpu_second']:,} tokens per CPU second, {run['tokens_per_wall_second']:,} per wall second"
        )
    print(f"median: {per_core:,.0f} tokens/s per core")
    for cores, hours in report["projected_hours_for_600b_tokens"].items():
        print(f"  600B tokens on {cores} cores: {hours:,.1f} h ({hours / 24:.1f} days)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
