"""Data pipeline speed and memory, against the official route, in one run.

1. Prepare throughput on the demo corpus's pre-training text (MB/s of UTF-8 text, tokens/s, peak memory of
   the whole process tree): `neobert.data.prepare` against the released code's route, `datasets.map` with
   the same tokenizer (batched, truncation at max_length) followed by `save_to_disk`. Each route runs in
   its own process, timed from the start of its work (imports and tokenizer loading excluded, reported
   apart), alternating, `--repeats` times; medians are reported. The official route runs with
   num_proc=None and num_proc=<cores>, and the faster is the baseline.
2. Loader batch rate against the `tiny` model's training step rate (forward + backward + AdamW step) on
   the loader's own batches, for the packed scheme and the official truncate-and-pad scheme.

    python benchmarks/peers/prepare_throughput.py [--repeats 3] [--out results/prepare_throughput.json] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


# ---- child side: one route, timed from inside ------------------------------------------------------------
def run_route(route: str, source: Path, out: Path, workers: int, max_length: int) -> dict:
    started = time.perf_counter()
    from neobert.tokenizer import load_tokenizer

    tokenizer = load_tokenizer()
    if route == "neobert":
        from neobert.data.prepare import PrepareConfig, prepare
        from neobert.data.sources import ReaderOptions, resolve_sources

        ready = time.perf_counter()
        config = PrepareConfig(max_length=max_length, workers=workers, progress=False)
        summary = prepare(resolve_sources([str(source)], ReaderOptions()), out, tokenizer, config)
        tokens = summary.tokens
    else:
        import datasets

        datasets.disable_progress_bars()
        ready = time.perf_counter()
        num_proc = None if route == "official" else workers
        dataset = datasets.load_dataset("json", data_files=str(source), split="train", cache_dir=str(out / "hf_cache"))
        encoded = dataset.map(
            lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
            batched=True,
            num_proc=num_proc,
            remove_columns=dataset.column_names,
            load_from_cache_file=False,
        )
        encoded.save_to_disk(str(out / "tokenised"))
        tokens = sum(len(ids) for batch in encoded.iter(batch_size=10_000) for ids in batch["input_ids"])
    finished = time.perf_counter()
    return {
        "route": route,
        "work_seconds": finished - ready,
        "setup_seconds": ready - started,
        "tokens": tokens,
    }


# ---- parent side ------------------------------------------------------------------------------------------
def _tree(pid: int) -> list[int]:
    pids, index = [pid], 0
    while index < len(pids):
        for task in Path(f"/proc/{pids[index]}/task").glob("*"):
            with contextlib.suppress(OSError):  # the process may have exited meanwhile
                pids += [int(c) for c in (task / "children").read_text().split()]
        index += 1
    return pids


def _pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages (forked workers, memory maps) are split, not counted twice."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(route: str, source: Path, workers: int, max_length: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            sys.executable,
            __file__,
            "--child",
            route,
            "--source",
            str(source),
            "--scratch",
            scratch,
            "--workers",
            str(workers),
            "--max-length",
            str(max_length),
        ]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        }
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        peak, stop = [0], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], sum(_pss_bytes(p) for p in _tree(process.pid)))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        output, _ = process.communicate()
        stop.set()
        sampler.join()
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if process.returncode != 0:
            raise RuntimeError(f"{route} failed with exit code {process.returncode}")
        result = json.loads(output.strip().splitlines()[-1])
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return {**result, "process_seconds": wall, "cores_used": cpu / wall, "peak_pss_mb": peak[0] / 1e6}


def demo_text(folder: Path) -> tuple[Path, int, int, float]:
    """The demo corpus's pre-training documents as JSON Lines (the common input of both routes)."""
    from neobert.demo import corpus as demo_corpus

    started = time.perf_counter()
    archives = demo_corpus.fetch_archives()
    path, documents, size = folder / "demo.jsonl", 0, 0
    with open(path, "w", encoding="utf-8") as handle:
        for text in demo_corpus.pretraining_documents(archives):
            handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            documents += 1
            size += len(text.encode("utf-8"))
    return path, documents, size, time.perf_counter() - started


def quick_text(folder: Path) -> tuple[Path, int, int, float]:
    """Made-up English-like documents (for `--quick`: no download, seconds)."""
    import random

    started, rng = time.perf_counter(), random.Random(0)
    vocabulary = (
        "the of and a to in is was he for it with as his on be at by this had not are but from or "
        "have an they which one you were her all she there would their we him been has when who"
    )
    words = vocabulary.split()
    path, documents, size = folder / "quick.jsonl", 3000, 0
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(documents):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(5, 600))).capitalize() + "."
            handle.write(json.dumps({"text": text}) + "\n")
            size += len(text.encode("utf-8"))
    return path, documents, size, time.perf_counter() - started


def loader_against_training(corpus: Path, steps: int, max_length: int, timed_batches: int) -> list[dict]:
    import torch

    import neobert
    from neobert.data.loader import LoaderConfig, PretrainingLoader

    torch.set_num_threads(os.cpu_count() or 1)
    results = []
    settings = {
        f"pack 8 x {max_length}": dict(sequence="pack", batch_size=8, max_length=max_length),
        f"truncate+pad 8 x <={max_length} (official)": dict(sequence="truncate", batch_size=8, max_length=max_length),
    }
    for name, setting in settings.items():
        loader = PretrainingLoader(LoaderConfig(str(corpus), **setting))
        next(loader)
        rates = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(timed_batches):
                next(loader)
            rates.append(timed_batches / (time.perf_counter() - started))
        torch.manual_seed(0)
        model = neobert.NeoBERTForMaskedLM(neobert.NeoBERTConfig.from_preset("tiny")).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        durations = []
        for step in range(steps + 2):
            batch = next(loader)
            started = time.perf_counter()
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= 2:  # the first steps warm up allocators and kernels
                durations.append(time.perf_counter() - started)
        batches_per_second = statistics.median(rates)
        steps_per_second = 1 / statistics.median(durations)
        results.append(
            {
                "setting": name,
                "loader_batches_per_second": batches_per_second,
                "train_steps_per_second": steps_per_second,
                "ratio": batches_per_second / steps_per_second,
                "packing_efficiency": loader.packing_efficiency,
                "tokens_per_batch": loader.stats["tokens"] / loader.stats["batches"],
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--train-steps", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "results" / "prepare_throughput.json"))
    parser.add_argument("--quick", action="store_true", help="made-up text, one repeat, short: a smoke run")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--source", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = run_route(args.child, Path(args.source), Path(args.scratch) / "out", args.workers, args.max_length)
        print(json.dumps(result))
        return

    if args.quick:
        args.repeats, args.train_steps, args.max_length = 1, 1, 256
    with tempfile.TemporaryDirectory() as scratch:
        if args.quick:
            source, documents, size, extraction = quick_text(Path(scratch))
        else:
            source, documents, size, extraction = demo_text(Path(scratch))
        print(
            f"{'quick' if args.quick else 'demo'} corpus: {documents:,} documents, "
            f"{size / 1e6:.1f} MB of text (written in {extraction:.1f} s)"
        )
        routes = ["neobert", "official", "official-num_proc"]
        runs: dict[str, list[dict]] = {route: [] for route in routes}
        for repeat in range(args.repeats):
            for route in routes:
                run = measure(route, source, args.workers, args.max_length)
                runs[route].append(run)
                print(
                    f"  run {repeat + 1} {route:18s} {size / 1e6 / run['work_seconds']:6.2f} MB/s  "
                    f"{run['tokens'] / run['work_seconds'] / 1e6:5.2f} M tokens/s  "
                    f"peak {run['peak_pss_mb']:6.0f} MB  cores {run['cores_used']:.2f}"
                )
        summary = {}
        for route, items in runs.items():
            seconds = statistics.median(r["work_seconds"] for r in items)
            summary[route] = {
                "mb_per_second": size / 1e6 / seconds,
                "tokens_per_second": statistics.median(r["tokens"] for r in items) / seconds,
                "peak_memory_mb": max(r["peak_pss_mb"] for r in items),
                "work_seconds_median": seconds,
                "setup_seconds_median": statistics.median(r["setup_seconds"] for r in items),
                "cores_used_median": statistics.median(r["cores_used"] for r in items),
                "runs": items,
            }
        baseline = max(("official", "official-num_proc"), key=lambda r: summary[r]["mb_per_second"])
        speedup = summary["neobert"]["mb_per_second"] / summary[baseline]["mb_per_second"]
        # A prepared demo corpus for the loader half.
        corpus = Path(scratch) / "corpus"
        from neobert.data.prepare import PrepareConfig, prepare
        from neobert.data.sources import ReaderOptions, resolve_sources
        from neobert.tokenizer import load_tokenizer

        prepare(
            resolve_sources([str(source)], ReaderOptions()),
            corpus,
            load_tokenizer(),
            PrepareConfig(max_length=args.max_length, progress=False),
        )
        loader = loader_against_training(corpus, args.train_steps, args.max_length, 10 if args.quick else 100)

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    report = {
        "benchmark": "prepare_throughput",
        "git_commit": commit.strip(),
        "cpu_count": os.cpu_count(),
        "settings": vars(args),
        "corpus": {
            "name": "quick (made-up)" if args.quick else "demo",
            "documents": documents,
            "text_mb": size / 1e6,
            "preparation_seconds": extraction,
        },
        "prepare": summary,
        "baseline": baseline,
        "prepare_speedup_vs_official": speedup,
        "loader_vs_tiny_training": loader,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nprepare (medians of {args.repeats}):")
    for route in routes:
        item = summary[route]
        print(
            f"  {route:18s} {item['mb_per_second']:6.2f} MB/s  "
            f"{item['tokens_per_second'] / 1e6:5.2f} M tokens/s  peak {item['peak_memory_mb']:6.0f} MB  "
            f"cores {item['cores_used_median']:.2f}"
        )
    print(
        f"  neobert / {baseline}: {speedup:.2f}x (target >= 2x), "
        f"peak {summary['neobert']['peak_memory_mb']:.0f} MB (target < 2000 MB)"
    )
    print("loader against tiny-model training steps:")
    for item in loader:
        print(
            f"  {item['setting']:36s} loader {item['loader_batches_per_second']:8.1f} batches/s  "
            f"train {item['train_steps_per_second']:6.2f} steps/s  "
            f"ratio {item['ratio']:7.1f}x (target >= 20x)  "
            f"packing efficiency {item['packing_efficiency']:.3f}"
        )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
