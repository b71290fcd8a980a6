"""How the pre-training loader's memory and start-up grow with the corpus.

For each corpus size this writes a synthetic corpus in the real on-disk format (`neobert.data.shards`: one
manifest, token and offsets files per shard of about 2^25 tokens, as `neobert prepare` cuts them). Document
lengths are log-normal (mean about 660 tokens) and the offsets files are real data; the token files are
sparse (a header, then a hole), so 10^8 documents cost their offsets (about 800 MB) and little else. The
tokenizer ids in the manifest keep 0 an ordinary token, so the holes read as text.

Each size and rank count is measured in a fresh Python process (`--child`): peak RSS (ru_maxrss of that
process), start-up (building the loader until its first batch) and batches per second over 200 batches of
8 packs of 1,024 tokens, for 1 rank and for rank 0 of 8. A second fresh process then takes the same batches:
its rate (`batches_per_s`) is the loader's own work, the first one's (`batches_per_s_cold`) also pays for
the kernel filling the page cache from the sparse files, which depends on the access pattern (readahead
around each document read) more than on the loader. `--src` points the child at another checkout's
`src` to measure another version of the loader on the same corpora.

    python benchmarks/studies/loader_scale.py --documents 1e5,1e6,1e7 --json loader_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARD_TOKENS = 1 << 25  # `neobert prepare`'s default shard size
MAX_LENGTH = 1024
MEAN_LENGTH = 660
SIGMA = 1.0
BATCH = 8
TIMED_BATCHES = 200
SPECIAL_IDS = {"pad": 1, "unk": 2, "cls": 3, "sep": 4, "mask": 5}


def _document_lengths(count: int, rng: np.random.Generator) -> np.ndarray:
    mu = np.log(MEAN_LENGTH) - SIGMA**2 / 2
    return np.maximum(1, rng.lognormal(mu, SIGMA, count)).astype(np.int64)


def _write_sparse_tokens(path: Path, tokens: int) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint16)), "fortran_order": False, "shape": (tokens,)}
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.truncate(handle.tell() + 2 * tokens)


def write_corpus(root: Path, documents: int, seed: int = 0, shard_tokens: int = SHARD_TOKENS) -> int:
    """A corpus of `documents` documents in the real format; returns its token count."""
    from neobert.data.shards import FORMAT, FORMAT_VERSION, MANIFEST, ShardEntry, shard_files
    from neobert.files import sha256_file

    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True, exist_ok=True)
    per_shard = max(1, shard_tokens // MEAN_LENGTH)
    shards, total = [], 0
    for index, first in enumerate(range(0, documents, per_shard)):
        lengths = _document_lengths(min(per_shard, documents - first), rng)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens_file, offsets_file = shard_files("train", index)
        np.save(root / offsets_file, offsets)
        _write_sparse_tokens(root / tokens_file, int(offsets[-1]))
        entry = ShardEntry(
            "train",
            index,
            tokens_file,
            offsets_file,
            len(lengths),
            int(offsets[-1]),
            "0" * 64,  # never read: the benchmark opens shards with verify="size"
            sha256_file(root / offsets_file),
        )
        shards.append(entry.to_dict())
        total += int(offsets[-1])
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tokenizer": {
            "name": "synthetic",
            "fingerprint": "0" * 64,
            "vocab_size": 30522,
            "dtype": "uint16",
            "special_ids": SPECIAL_IDS,
        },
        "max_length": MAX_LENGTH,
        "splits": {"train": {"shards": shards}, "heldout": {"shards": []}},
    }
    (root / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    return total


def measure(corpus: Path, ranks: int, blocks: str | None = None) -> dict[str, float]:
    """In this (fresh) process: start-up to the first batch, batches/s, and peak RSS. `blocks`: "B,W" for
    the loader's block_documents and window_blocks (default: LoaderConfig's)."""
    from neobert.data.loader import LoaderConfig, build_loader

    order = {}
    if blocks:
        order = dict(zip(("block_documents", "window_blocks"), map(int, blocks.split(",")), strict=True))
    config = LoaderConfig(str(corpus), sequence="pack", batch_size=BATCH, verify="size", seed=1, **order)
    start = time.perf_counter()
    loader = build_loader(config, rank=0, world_size=ranks)
    next(loader)
    startup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(TIMED_BATCHES):
        next(loader)
    rate = TIMED_BATCHES / (time.perf_counter() - start)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {"peak_rss_mb": peak_kb / 1024, "startup_s": startup, "batches_per_s": rate}


def run_child(corpus: Path, ranks: int, src: Path, blocks: str | None = None) -> dict[str, float]:
    environment = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, __file__, "--child", str(corpus), "--ranks", str(ranks)]
    command += ["--blocks", blocks] if blocks else []
    done = subprocess.run(command, env=environment, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the measuring process failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def plot(reports: dict[str, Path], out: Path) -> None:
    """Peak RSS and start-up against corpus size, rank 0 of 1, one line per report (e.g. old and new loader),
    each extended to 10^9 documents along a straight line through its last two sizes (dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, path in reports.items():
        records = sorted(
            (r for r in json.loads(path.read_text(encoding="utf-8")) if r["ranks"] == 1), key=lambda r: r["documents"]
        )
        sizes = [r["documents"] for r in records]
        for axis, field in zip(axes, ("peak_rss_mb", "startup_s"), strict=True):
            values = [r[field] for r in records]
            (line,) = axis.plot(sizes, values, marker="o", label=label)
            slope = (values[-1] - values[-2]) / (sizes[-1] - sizes[-2])
            axis.plot(
                [sizes[-1], 1e9], [values[-1], values[-1] + slope * (1e9 - sizes[-1])], ":", color=line.get_color()
            )
    for axis, title in zip(axes, ("peak RSS (MB)", "start-up until the first batch (s)"), strict=True):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("documents in the corpus (dotted: extrapolated)")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parents[2] / "src"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", default="1e5,1e6,1e7,1e8", help="comma-separated corpus sizes")
    parser.add_argument("--ranks", default="1,8", help="rank counts to measure rank 0 of")
    parser.add_argument("--json", type=Path, default=None, help="write one record per size and rank count")
    parser.add_argument("--src", type=Path, default=here, help="the neobert source tree to measure")
    parser.add_argument("--workdir", type=Path, default=None, help="where the corpora go (deleted after)")
    parser.add_argument("--plot", type=Path, default=None, help="draw LABEL=REPORT.json ... (the positional ones)")
    parser.add_argument("reports", nargs="*", help="with --plot: LABEL=path of a --json report")
    parser.add_argument("--blocks", default=None, help="B,W: block_documents and window_blocks (default: the loader's)")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plot is not None:
        plot({item.split("=", 1)[0]: Path(item.split("=", 1)[1]) for item in args.reports}, args.plot)
        return 0
    ranks = [int(value) for value in args.ranks.split(",")]
    if args.child is not None:
        import torch

        torch.set_num_threads(1)
        print(json.dumps(measure(args.child, ranks[0], args.blocks)))
        return 0
    sizes = [int(float(value)) for value in args.documents.split(",")]
    sys.path.insert(0, str(here))  # the corpus writer is this checkout's, whatever --src measures
    records = []
    for documents in sizes:
        folder = Path(tempfile.mkdtemp(prefix="loader-scale-", dir=args.workdir))
        try:
            started = time.perf_counter()
            tokens = write_corpus(folder / "corpus", documents)
            seconds = time.perf_counter() - started
            print(f"{documents:.0e} documents, {tokens / 1e9:.2f} B tokens: written in {seconds:.0f} s")
            for count in ranks:
                record = {"documents": documents, "tokens": tokens, "ranks": count}
                cold = run_child(folder / "corpus", count, args.src, args.blocks)
                warm = run_child(
                    folder / "corpus", count, args.src, args.blocks
                )  # the same batches, now in the page cache
                record.update(cold)
                record["batches_per_s_cold"] = cold["batches_per_s"]
                record["batches_per_s"] = warm["batches_per_s"]
                records.append(record)
                print(
                    f"  rank 0 of {count}: peak RSS {record['peak_rss_mb']:.0f} MB, start-up "
                    f"{record['startup_s']:.2f} s, {record['batches_per_s']:.1f} batches/s "
                    f"({record['batches_per_s_cold']:.1f} on first reading the corpus)",
                    flush=True,
                )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
