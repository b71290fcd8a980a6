"""A bounded load run against Infinity serving an exported NeoBERT folder (randomly initialised) on
127.0.0.1, beside `neobert.encode` in-process on the same texts: a fixed number of OpenAI `/embeddings`
requests sent by a fixed number of concurrent clients (one keep-alive connection each), so it stops by
itself. Reports requests/s and p50/p99 latency for both, the server's cores used and the machine's load.

    python benchmarks/peers/serve_load.py [--requests 200] [--concurrency 4] [--texts-per-request 1]
        [--preset tiny] [--threads 1] [--out results/bench/serve_load.json] [--quick]

In-process, each request's texts are one `encode` call, made one after another (no concurrency: the same
work without HTTP, JSON or a scheduler); `encode (all texts, one call)` is the batched bound. Both sides
run `--threads` torch threads. Needs the serving environment (`make serve-env`).
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench_common, one folder up

from bench_common import ROOT, setup_info, table, write_json
from encode_throughput import neobert_folder, short_texts
from infinity_serving import InfinityServer, embeddings_request, request, serve_python, vectors
from neobert.embed import encode, load_embedder

IN_PROCESS = "neobert.encode in-process (one call per request)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, in the server and in-process")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "serve_load.json")
    parser.add_argument("--quick", action="store_true", help="a seconds-long check of the script (20 requests)")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.concurrency = 20, 2
    if min(args.requests, args.concurrency, args.texts_per_request, args.threads) < 1:
        parser.error("--requests, --concurrency, --texts-per-request and --threads must be positive")
    return args


def latency_summary(latencies: list[float], wall: float) -> dict:
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "wall_s": wall,
        "requests_per_s": len(ordered) / wall,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * float(np.percentile(ordered, 99)),
        "max_ms": 1000 * ordered[-1],
    }


def load_run(server: InfinityServer, batches: list[list[str]], concurrency: int) -> tuple[dict, list[int]]:
    """Sends every batch once, `concurrency` at a time; each client keeps its connection open."""
    host, port = server.url.removeprefix("http://").split(":")
    clients = [http.client.HTTPConnection(host, int(port), timeout=120) for _ in range(concurrency)]
    free = list(clients)
    latencies, failures = [], []

    def send(batch: list[str]) -> None:
        connection = free.pop()  # list.pop/append are atomic: each worker holds one connection at a time
        try:
            start = time.perf_counter()
            body = embeddings_request(batch)
            status, answer = request(server.url, "POST", "/embeddings", body, connection=connection)
            latencies.append(time.perf_counter() - start)
            if status != 200 or len(answer["data"]) != len(batch):
                failures.append(status)
        finally:
            free.append(connection)

    cpu_before, start = server.cpu_seconds(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(send, batches))
    wall = time.perf_counter() - start
    summary = latency_summary(latencies, wall)
    summary["server_cores"] = (server.cpu_seconds() - cpu_before) / wall
    for connection in clients:
        connection.close()
    return summary, failures


def in_process_run(embedder, batches: list[list[str]]) -> dict:
    latencies = []
    start = time.perf_counter()
    for batch in batches:
        begin = time.perf_counter()
        encode(embedder, batch, show_progress=False)
        latencies.append(time.perf_counter() - begin)
    return latency_summary(latencies, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    python, why = serve_python()
    if python is None:
        print(why, file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    texts = short_texts(args.requests * args.texts_per_request)
    while len(texts) < args.requests * args.texts_per_request:  # more requests than reserved texts: reuse them
        texts += texts[: args.requests * args.texts_per_request - len(texts)]
    batches = [texts[i : i + args.texts_per_request] for i in range(0, len(texts), args.texts_per_request)]
    report: dict = {
        "setup": {
            **setup_info("default", quick=args.quick),
            "preset": args.preset,
            "requests": len(batches),
            "concurrency": args.concurrency,
            "texts_per_request": args.texts_per_request,
            "server": "infinity_emb v2 (torch engine, CPU)",
            "load_average_before": os.getloadavg(),
        }
    }
    with tempfile.TemporaryDirectory() as scratch:
        folder = neobert_folder(Path(scratch), args.preset)
        embedder = load_embedder(folder)
        with InfinityServer(python, folder, threads=args.threads) as server:
            report["setup"]["infinity"] = server_version(python)
            # Infinity starts without its warm-up (see infinity_serving.py): a few requests do it, and check
            # that the served vectors are the in-process ones.
            for batch in batches[:4]:
                status, answer = request(server.url, "POST", "/embeddings", embeddings_request(batch))
                assert status == 200, answer
                served = np.asarray(vectors(answer), dtype=np.float32)
                difference = float(np.abs(served - encode(embedder, batch, show_progress=False)).max())
                report["warmup_max_abs_difference"] = max(report.get("warmup_max_abs_difference", 0.0), difference)
            served_summary, failures = load_run(server, batches, args.concurrency)
        for batch in batches[:4]:
            encode(embedder, batch, show_progress=False)
        in_process = in_process_run(embedder, batches)
        start = time.perf_counter()
        encode(embedder, texts, show_progress=False)
        one_call = time.perf_counter() - start
    report["rows"] = {
        f"Infinity /embeddings ({args.concurrency} clients)": {**served_summary, "failures": len(failures)},
        IN_PROCESS: in_process,
        "neobert.encode (all texts, one call)": {"wall_s": one_call, "texts_per_s": len(texts) / one_call},
    }
    report["setup"]["load_average_after"] = os.getloadavg()
    write_json(report, args.out)
    rows = [
        [name, f"{row.get('requests_per_s', len(batches) / row['wall_s']):.1f}"]
        + [f"{row[key]:.1f}" if key in row else "-" for key in ("p50_ms", "p99_ms")]
        for name, row in report["rows"].items()
    ]
    print("\n".join(table(("route", "requests/s", "p50 ms", "p99 ms"), rows)))
    print(f"server cores used: {served_summary['server_cores']:.2f}; failures: {len(failures)}")
    print(f"load average before/after: {report['setup']['load_average_before']} / {os.getloadavg()}")
    print(f"wrote {args.out}")
    return 1 if failures else 0


def server_version(python: Path) -> str:
    probe = "from importlib.metadata import version as v; print(v('infinity_emb'), v('transformers'), v('torch'))"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60)
    infinity, transformers, torch_version = done.stdout.split()
    return f"infinity_emb {infinity}, transformers {transformers}, torch {torch_version}"


if __name__ == "__main__":
    sys.exit(main())
