"""Latency of one text (a serving request) through `encode`'s onnxruntime routes.

`RowSplitSession` runs a batch with fewer rows than workers on a session whose operators use every worker's
thread (`open_threaded`); this measures whether that is faster for one text than a single-threaded session,
the one a batch's rows get. Each route runs the same single-row feed, alternating, after warm-up runs;
the figure is the median of `--repeats` calls (wall clock: run it on a quiet machine).

    python benchmarks/studies/onnx_request_latency.py --preset neobert-250m --out onnx_latency.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from int8_hosts import build  # a random-weight model folder with the float and int8 graphs

LENGTHS = (16, 64, 256)


def median_ms(session, feed: dict, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(["sentence_embedding"], feed)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(folder: Path, backend: str, repeats: int) -> dict:
    import numpy as np

    from neobert.export.onnx_files import onnx_session
    from neobert.runtime import usable_cores

    routed = onnx_session(folder, backend=backend)  # what `encode` opens
    single = routed.session  # one thread: what each run of a batch's rows gets
    rows = {}
    for length in LENGTHS:
        ids = np.full((1, length), 2023, dtype=np.int64)
        ids[0, 0], ids[0, -1] = 101, 102
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        for _ in range(3):  # warm-up; the last run's vectors are compared
            (routed_vector,) = routed.run(["sentence_embedding"], feed)
            (single_vector,) = single.run(["sentence_embedding"], feed)
        threaded_ms, single_ms = [], []
        for _ in range(2):  # alternate, so a change of load touches both
            threaded_ms.append(median_ms(routed, feed, repeats))
            single_ms.append(median_ms(single, feed, repeats))
        rows[str(length)] = {
            "threaded_ms": min(threaded_ms),
            "single_thread_ms": min(single_ms),
            "speed_up": min(single_ms) / min(threaded_ms),
            "max_abs_diff": float(np.abs(routed_vector - single_vector).max()),
        }
    # A one-row batch must have gone to the threaded session, else this measured one route twice.
    return {"workers": usable_cores(), "threaded_session_used": routed._threaded is not None, "lengths": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="neobert-250m")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="the tiny preset, 3 repeats (the smoke test)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.preset, args.repeats = "tiny", 3
    with tempfile.TemporaryDirectory() as root:
        folder = build(Path(root), args.preset)
        backends = ["onnx", "onnx-int8"]
        result = {"preset": args.preset, **{backend: measure(folder, backend, args.repeats) for backend in backends}}
    for backend in backends:
        for length, row in result[backend]["lengths"].items():
            print(
                f"{backend:10s} {length:>4s} tokens: {row['threaded_ms']:8.2f} ms on "
                f"{result[backend]['workers']} threads, {row['single_thread_ms']:8.2f} ms on one "
                f"({row['speed_up']:.2f}x)"
            )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
