"""What the benchmarks share: timing with cores used, the fp32 and bf16 matrix-product peaks, running a row
in either precision, the run's setup, output."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import transformers

import neobert
import neobert.runtime
from neobert.train.precision import time_matmul

ROOT = Path(__file__).resolve().parent.parent
MIN_CORES = 1.8  # below this, the machine was busy and the figure is unreliable
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def time_calls(
    fn: Callable[[], object], repeats: int, warmup: int = 1, sync: Callable[[], object] | None = None
) -> dict:
    """Median wall time over `repeats` calls after `warmup`, and cores used (CPU time / wall time).
    `sync` (torch.cuda.synchronize) waits for a call's queued device work, so its time counts."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    walls = []
    # CPU time and wall time over one and the same window (the gaps between calls included in both), so
    # the ratio cannot exceed the CPUs the process may use.
    cpu_start, window_start = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        walls.append(time.perf_counter() - start)
    cores = (time.process_time() - cpu_start) / (time.perf_counter() - window_start)
    return {"median_s": statistics.median(walls), "cores": cores, "reliable": cores >= MIN_CORES}


def measure_peak(sizes: tuple[int, ...], repeats: int, precision: str = "fp32") -> dict:
    """The square matrix-product peak in one precision: the library's own measurement, at each size."""
    rows = []
    for n in sizes:
        timing = asdict(time_matmul(DTYPES[precision], n, max(5, repeats)))
        rows.append({**timing, "reliable": timing["cores"] >= MIN_CORES})
    return {"precision": precision, "sizes": rows, "gflops": max(row["gflops"] for row in rows)}


def measure_peaks(sizes: tuple[int, ...], repeats: int) -> dict:
    """Both peaks, whatever `--precision` asks for: they say whether bf16 can pay on this host at all."""
    return {peak_key(name): measure_peak(sizes, repeats, name) for name in DTYPES}


def peak_key(precision: str) -> str:
    """Report keys without a suffix are fp32 (as they were before bf16 was measured); bf16 adds `_bf16`."""
    return "peak" if precision == "fp32" else "peak_bf16"


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "both"),
        default="both",
        help="fp32, bf16 autocast over fp32 weights, or each in turn (default)",
    )


def precisions(choice: str) -> tuple[str, ...]:
    return tuple(DTYPES) if choice == "both" else (choice,)


def computing_in(precision: str) -> torch.autocast:
    """bf16 as the trainer runs it: autocast over fp32 weights, so every call pays its casts."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def add_speed_ratios(rows: list[dict], rate: str, identity: Callable[[dict], tuple]) -> None:
    """Gives each bf16 row `bf16_over_fp32`: its `rate` over the fp32 row with the same `identity`."""
    fp32 = {identity(r): r[rate] for r in rows if r["precision"] == "fp32" and rate in r}
    for row in rows:
        if row["precision"] == "bf16" and rate in row and identity(row) in fp32:
            row["bf16_over_fp32"] = row[rate] / fp32[identity(row)]


def ratio_cell(row: dict) -> str:
    return f"{row['bf16_over_fp32']:.2f}x" if "bf16_over_fp32" in row else ""


def peaks_line(report: dict) -> str:
    fp32, bf16 = report["peak"]["gflops"], report["peak_bf16"]["gflops"]
    return f"matrix-product peak: fp32 {fp32:.1f}, bf16 {bf16:.1f} GFLOP/s (bf16/fp32 {bf16 / fp32:.2f}x)"


def measure_device_peak(
    sizes: tuple[int, ...],
    repeats: int,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    sync: Callable[[], object] | None = None,
) -> dict:
    """The peak of `dtype` products on any device; `sync` waits for queued device work (CUDA)."""
    rows = []
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
        timing = time_calls(lambda a=a, b=b: a @ b, max(5, repeats), sync=sync)
        rows.append({"size": n, **timing, "gflops": 2 * n**3 / timing["median_s"] / 1e9})
    return {"sizes": rows, "gflops": max(row["gflops"] for row in rows)}


def git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
    return names[0] if names else None


def setup_info(allocator: str, quick: bool) -> dict:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "neobert": neobert.__version__,
        "threads": torch.get_num_threads(),
        "logical_cpus": os.cpu_count(),
        "allocator": allocator,
        "git_commit": git("rev-parse", "HEAD"),
        # Uncommitted edits to tracked files (the model may be changing under a concurrent edit).
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "cpu_model": cpu_model(),
    }


def target(name: str, value: float | None, goal: float, at_most: bool = False) -> dict:
    """Passed when `value` reaches `goal` (stays at or below it with `at_most`); an unmeasured value
    (None) has not passed."""
    passed = value is not None and (value <= goal if at_most else value >= goal)
    return {"name": name, "value": value, "target": goal, "at_most": at_most, "passed": passed}


def table(header: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    """Right-aligned columns, the first left-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    aligned = [
        [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        for row in [header, *rows]
    ]
    return ["  ".join(cells) for cells in aligned]


def cores_cell(row: dict) -> str:
    return f"{row['cores']:.2f}{'' if row['reliable'] else ' *'}"


def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(report, out, indent=2)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def set_allocator(tune: bool) -> str:
    """Applies to every model in the process alike; returns the mode that ran."""
    if not tune:
        return "glibc default (--no-tune-allocator)"
    return "tuned" if neobert.runtime.tune_cpu_allocator() else "default (tuning unavailable)"
