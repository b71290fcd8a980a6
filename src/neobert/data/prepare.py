"""Text sources -> token shards + document index + manifest, streaming, in parallel, resumable.

The document stream (sources in order, documents in order) is cut into blocks: a block closes once its
training documents hold `shard_tokens` tokens, and becomes one training shard and one held-out shard.
Block boundaries depend only on the documents and the tokenizer, never on the number of workers, so the
output is byte-identical from run to run. A re-run reads the stream again but skips the documents of
finished blocks without tokenising them.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import shutil
import signal
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neobert.data.sequences import sequence_forecast
from neobert.data.shards import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    PLAN,
    PROGRESS,
    SPLITS,
    DataError,
    ShardEntry,
    load_manifest,
    open_shard,
    verify_corpus,
    write_shard,
)
from neobert.data.sources import ReaderOptions, Source
from neobert.data.tokenization import (
    DocumentEncoder,
    EncodedBatch,
    TokenizerSpec,
    encode_in_worker,
    init_worker,
    token_dtype,
)
from neobert.files import write_json_atomically
from neobert.runtime import usable_cores

DOCUMENT_FORMAT = "content token ids only; [CLS] and [SEP] are added when sequences are formed"


@dataclass(frozen=True)
class PrepareConfig:
    # The sequence length the corpus is meant for: the loader's default and the summary's reference.
    max_length: int = 1024
    workers: int = 0  # tokenising processes; 0 = one per CPU core, 1 = tokenise in this process
    heldout_fraction: float = 0.01  # documents whose text hash falls below this go to the held-out split
    shard_tokens: int = 1 << 25  # training tokens per shard (64 MB at uint16)
    batch_bytes: int = 1 << 20  # text per tokenisation task
    max_document_chars: int = 1_000_000  # longer documents are cut (at whitespace) so memory stays bounded
    reader: ReaderOptions = field(default_factory=ReaderOptions)
    progress: bool = True
    overwrite: bool = False  # replace a corpus prepared from other inputs or settings in the same folder

    def decisive(self) -> dict[str, Any]:
        """The settings that decide the output bytes (workers, batch size and progress do not)."""
        return {
            "max_length": self.max_length,
            "heldout_fraction": self.heldout_fraction,
            "shard_tokens": self.shard_tokens,
            "max_document_chars": self.max_document_chars,
            **self.reader.plan_settings(),
        }


@dataclass
class PrepareSummary:
    out: Path
    manifest: dict[str, Any]
    seconds: float = 0.0
    text_bytes: int = 0  # text tokenised in this run (resumed blocks excluded)
    tokens: int = 0  # tokens produced in this run
    reused_blocks: int = 0
    already_complete: bool = False

    def describe(self) -> str:
        splits, stats = self.manifest["splits"], self.manifest["stats"]
        lines = [f"prepared {self.out}"]
        for split in SPLITS:
            info = splits[split]
            lines.append(
                f"  {split}: {info['documents']:,} documents, {info['tokens']:,} tokens, {len(info['shards'])} shard(s)"
            )
        if self.already_complete:
            lines.append("  already complete (every shard matches its checksum): nothing to do")
        elif self.seconds > 0:
            lines.append(
                f"  this run: {self.text_bytes / 1e6:.1f} MB of text in {self.seconds:.1f} s = "
                f"{self.text_bytes / 1e6 / self.seconds:.2f} MB/s, {self.tokens / self.seconds:,.0f} "
                f"tokens/s; {self.reused_blocks} finished block(s) reused"
            )
        lines.append(
            f"  skipped: {stats['undecodable_lines']:,} undecodable line(s), "
            f"{stats['empty_documents']:,} empty "
            f"document(s), {stats['documents_without_tokens']:,} without tokens; "
            f"{stats['documents_cut']:,} over-long document(s) cut into pieces"
        )
        max_length = self.manifest["max_length"]
        lines.append(
            f"  {stats['documents_longer_than_max_length']:,} document(s) longer than {max_length} tokens: "
            f"truncation (the official scheme) would drop {stats['tokens_beyond_max_length']:,} tokens "
            f"({100 * stats['tokens_beyond_max_length'] / max(1, stats['tokens']):.1f}%); packing keeps them"
        )
        forecast = stats.get("sequences_at_max_length") or {}
        if forecast:
            packed, padded = forecast["packing_efficiency"], forecast["truncate_pad_to_max_efficiency"]
            lines.append(
                f"  token slots filled at {max_length}: packing {100 * packed:.1f}%, "
                f"truncating and padding to {max_length} {100 * padded:.1f}%"
            )
        return "\n".join(lines)


class _DocumentStream:
    """The documents of all sources in order, over-long ones cut into pieces, grouped into batches."""

    def __init__(self, sources: list[Source], config: PrepareConfig):
        self.sources, self.config = sources, config
        self.documents_cut = 0

    def documents(self) -> Iterator[str]:
        for source in self.sources:
            for piece, number in source.pieces(self.config.max_document_chars):
                if number == 0:
                    source.counts.documents += 1
                elif number == 1:
                    self.documents_cut += 1
                yield piece

    def batches(self, skip: int) -> Iterator[list[str]]:
        """Batches of about `batch_bytes` characters, after skipping the first `skip` documents."""
        documents = self.documents()
        for _ in itertools.islice(documents, skip):
            pass
        batch: list[str] = []
        size = 0
        for text in documents:
            batch.append(text)
            size += len(text)
            if size >= self.config.batch_bytes:
                yield batch
                batch, size = [], 0
        if batch:
            yield batch


class _Block:
    """Accumulates the documents of one block and writes its two shards and its record."""

    def __init__(self, root: Path, index: int, config: PrepareConfig, dtype: np.dtype):
        self.root, self.index, self.config, self.dtype = root, index, config, dtype
        self.parts: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {s: ([], []) for s in SPLITS}
        self.train_tokens = 0
        self.input_documents = 0
        self.stats = {
            "text_bytes": 0,
            "documents_without_tokens": 0,
            "longest_document_tokens": 0,
            "documents_longer_than_max_length": 0,
            "tokens_beyond_max_length": 0,
        }

    @property
    def full(self) -> bool:
        return self.train_tokens >= self.config.shard_tokens

    def take(self, batch: EncodedBatch, starts: np.ndarray, text_bytes: np.ndarray, first: int) -> int:
        """Adds documents from `first` on until the block is full; returns the index after the last taken."""
        lengths, heldout = batch.lengths, batch.heldout
        train_lengths = np.where(heldout[first:], 0, lengths[first:])
        running = self.train_tokens + np.cumsum(train_lengths)
        over = np.flatnonzero(running >= self.config.shard_tokens)
        stop = first + int(over[0]) + 1 if len(over) else len(lengths)
        self.input_documents += stop - first
        self.train_tokens += int(train_lengths[: stop - first].sum())
        self.stats["text_bytes"] += int(text_bytes[first:stop].sum())
        span_lengths, span_heldout = lengths[first:stop], heldout[first:stop]
        span_tokens = batch.tokens[starts[first] : starts[stop]]
        for split, members in (("train", ~span_heldout), ("heldout", span_heldout)):
            members = members & (span_lengths > 0)
            if members.any():
                token_parts, length_parts = self.parts[split]
                token_parts.append(span_tokens[np.repeat(members, span_lengths)])
                length_parts.append(span_lengths[members])
        kept_lengths = span_lengths[span_lengths > 0]
        self.stats["documents_without_tokens"] += len(span_lengths) - len(kept_lengths)
        if len(kept_lengths):
            self.stats["longest_document_tokens"] = max(self.stats["longest_document_tokens"], int(kept_lengths.max()))
        limit = self.config.max_length - 2  # content tokens that fit beside [CLS] and [SEP]
        self.stats["documents_longer_than_max_length"] += int((kept_lengths > limit).sum())
        self.stats["tokens_beyond_max_length"] += int(np.clip(kept_lengths - limit, 0, None).sum())
        return stop

    def write(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "block": self.index,
            "input_documents": self.input_documents,
            "stats": self.stats,
        }
        for split in SPLITS:
            token_parts, length_parts = self.parts[split]
            tokens = np.concatenate(token_parts) if token_parts else np.zeros(0, dtype=self.dtype)
            lengths = np.concatenate(length_parts) if length_parts else np.zeros(0, dtype=np.int64)
            record[split] = write_shard(
                self.root, split, self.index, tokens.astype(self.dtype, copy=False), lengths
            ).to_dict()
        # The record goes last: a block without one is redone, whatever shard files it left behind.
        write_json_atomically(_record_path(self.root, self.index), record)
        return record


def _record_path(root: Path, index: int) -> Path:
    return root / PROGRESS / f"block_{index:05d}.json"


def _finished_blocks(root: Path, dtype: np.dtype) -> list[dict[str, Any]]:
    """Records of finished blocks whose shards still match their checksums, in order. A damaged block
    and every block after it are forgotten (their records removed), so they are prepared again."""
    records, index = [], 0
    while _record_path(root, index).is_file():
        path = _record_path(root, index)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            for split in SPLITS:
                open_shard(root, ShardEntry.from_dict(record[split]), dtype, verify="full")
        except (DataError, KeyError, ValueError) as error:
            print(f"warning: {path}: block {index} will be prepared again ({error})")
            break
        records.append(record)
        index += 1
    for stale in sorted((root / PROGRESS).glob("block_*.json")) if (root / PROGRESS).is_dir() else []:
        if int(stale.stem.split("_")[1]) >= len(records):
            stale.unlink()
    return records


def _ordered_results(
    batches: Iterable[list[str]], spec: TokenizerSpec, config: PrepareConfig
) -> Iterator[tuple[list[str], EncodedBatch]]:
    """Encodes batches in worker processes (or here), yielding results in input order with a bounded
    number of batches in flight, so reading never runs far ahead of tokenising."""
    workers = config.workers or usable_cores()
    if workers <= 1:
        encoder = DocumentEncoder(spec, config.heldout_fraction)
        for batch in batches:
            yield batch, encoder.encode(batch)
        return
    # fork: workers inherit the imported modules (spawning re-imports torch and transformers: seconds each).
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    # Each worker runs the Rust tokenizer single-threaded; the processes are the parallelism. Setting the
    # variable around the fork also keeps tokenizers from warning about a fork after parallel use.
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        pool = multiprocessing.get_context(method).Pool(
            workers, _start_worker, (os.getpid(), spec, config.heldout_fraction)
        )
    finally:
        if previous is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous
    try:
        pending: deque = deque()
        for batch in batches:
            pending.append((batch, pool.apply_async(encode_in_worker, (batch,))))
            if len(pending) >= 2 * workers:
                done, result = pending.popleft()
                yield done, result.get()
        while pending:
            done, result = pending.popleft()
            yield done, result.get()
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def die_with_parent(parent: int) -> None:
    """Linux: this process is killed when its parent ends (elsewhere nothing happens)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent:  # the parent ended before the request took effect
        os._exit(1)


def _start_worker(parent: int, spec: TokenizerSpec, heldout_fraction: float) -> None:
    """A tokenising worker leaves Ctrl-C to its parent, which stops the pool, and ends with its parent: one
    outliving a killed `prepare` printed a BrokenPipeError traceback when it sent its result."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)
    init_worker(spec, heldout_fraction)


def replace_other_preparation(
    out: Path, differing: list[str], overwrite: bool, what: str, folders: tuple[str, ...]
) -> None:
    """`out` holds a preparation of another plan: refused, unless `overwrite`, which removes its `folders`,
    manifest and plan (and nothing else of the user's)."""
    if not overwrite:
        raise DataError(
            f"{out}: holds a corpus prepared from {what} (differs in: {', '.join(differing)}); choose another "
            "--out, or pass --restart to replace it"
        )
    for name in folders:
        shutil.rmtree(out / name, ignore_errors=True)
    for name in (MANIFEST, PLAN):
        (out / name).unlink(missing_ok=True)


def _check_out_folder(out: Path, plan: dict[str, Any], overwrite: bool) -> bool:
    """Makes `out` ready for this plan; returns True when a finished corpus for the same plan is there."""
    plan_path = out / PLAN
    if plan_path.is_file():
        previous = json.loads(plan_path.read_text(encoding="utf-8"))
        if previous == plan:
            return (out / MANIFEST).is_file()
        differing = sorted(key for key in plan if previous.get(key) != plan[key])
        replace_other_preparation(out, differing, overwrite, "other inputs or settings", (*SPLITS, PROGRESS))
    elif out.is_dir() and any(out.iterdir()):
        raise DataError(f"{out}: the folder is not empty and holds no prepared corpus; choose an empty --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomically(plan_path, plan)
    return False


def _progress_bar(enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=None,
        unit="B",
        unit_scale=True,
        unit_divisor=1000,
        desc="tokenising",
        disable=None if enabled else True,
        mininterval=0.5,
        dynamic_ncols=True,
    )


def _manifest(
    spec: TokenizerSpec,
    config: PrepareConfig,
    sources: list[Source],
    records: list[dict[str, Any]],
    documents_cut: int,
    forecast: dict[str, float],
) -> dict[str, Any]:
    splits = {}
    for split in SPLITS:
        shards = [record[split] for record in records]
        splits[split] = {
            "documents": sum(s["documents"] for s in shards),
            "tokens": sum(s["tokens"] for s in shards),
            "shards": shards,
        }
    stats = {key: sum(record["stats"][key] for record in records) for key in records[0]["stats"]}
    stats["longest_document_tokens"] = max(record["stats"]["longest_document_tokens"] for record in records)
    stats.update(
        tokens=splits["train"]["tokens"] + splits["heldout"]["tokens"],
        undecodable_lines=sum(s.counts.undecodable_lines for s in sources),
        empty_documents=sum(s.counts.empty_documents for s in sources),
        documents_cut=documents_cut,
        sequences_at_max_length=forecast,
    )
    from neobert import __version__

    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "created_by": f"neobert {__version__}",
        "tokenizer": spec.describe(),
        "document_format": DOCUMENT_FORMAT,
        "max_length": config.max_length,
        "settings": config.decisive(),
        "sources": [
            {
                **s.describe(),
                "documents": s.counts.documents,
                "undecodable_lines": s.counts.undecodable_lines,
                "empty_documents": s.counts.empty_documents,
            }
            for s in sources
        ],
        "splits": splits,
        "stats": stats,
    }


def prepare(
    sources: list[Source], out: str | os.PathLike, tokenizer: Any = None, config: PrepareConfig | None = None
) -> PrepareSummary:
    """Tokenises `sources` into a corpus folder `out` (see `neobert.data.shards` for the layout); `tokenizer`
    is a fast tokenizer or its `TokenizerSpec`."""
    config = config or PrepareConfig()
    if not sources:
        raise DataError("no sources given")
    if not 0 <= config.heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must lie in [0, 1), not {config.heldout_fraction}")
    if config.max_length < 3:
        raise ValueError(f"max_length must leave room for [CLS] and [SEP] (>= 3), not {config.max_length}")
    if tokenizer is None:
        from neobert.tokenizer import load_tokenizer

        tokenizer = load_tokenizer()
    # A spec is what a cluster task receives: it carries the tokenizer without needing its files on the node.
    spec = tokenizer if isinstance(tokenizer, TokenizerSpec) else TokenizerSpec.from_tokenizer(tokenizer)
    dtype = token_dtype(spec.vocab_size)
    for source in sources:
        source.check()
    out = Path(out)
    plan = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tokenizer": spec.describe(),
        "settings": config.decisive(),
        "sources": [s.identity() for s in sources],
    }
    if _check_out_folder(out, plan, config.overwrite):
        try:
            verify_corpus(out, full=True)
            return PrepareSummary(out, load_manifest(out), already_complete=True)
        except DataError as error:
            # The blocks from the damaged one on are prepared again below; the manifest goes until then.
            print(f"warning: {error}; preparing the damaged part again")
            (out / MANIFEST).unlink()

    for leftover in itertools.chain.from_iterable((out / split).glob(".*.tmp") for split in SPLITS):
        leftover.unlink()  # a temporary file of an interrupted run; its block has no record
    records = _finished_blocks(out, dtype)
    stream = _DocumentStream(sources, config)
    skip = sum(record["input_documents"] for record in records)
    summary = PrepareSummary(out, {}, reused_blocks=len(records))
    started = time.perf_counter()
    block = _Block(out, len(records), config, dtype)
    with _progress_bar(config.progress) as bar:
        for batch, encoded in _ordered_results(stream.batches(skip), spec, config):
            starts = np.zeros(len(encoded.lengths) + 1, dtype=np.int64)
            np.cumsum(encoded.lengths, out=starts[1:])
            text_bytes = np.fromiter((len(text.encode("utf-8")) for text in batch), np.int64, len(batch))
            position = 0
            while position < len(batch):
                position = block.take(encoded, starts, text_bytes, position)
                if block.full:
                    records.append(block.write())
                    block = _Block(out, len(records), config, dtype)
            summary.text_bytes += int(text_bytes.sum())
            summary.tokens += len(encoded.tokens)
            bar.update(int(text_bytes.sum()))
            elapsed = max(time.perf_counter() - started, 1e-9)
            bar.set_postfix_str(f"{summary.tokens / elapsed / 1e6:.2f}M tokens/s", refresh=False)
    if block.input_documents:
        records.append(block.write())
    if not records or all(r["train"]["documents"] + r["heldout"]["documents"] == 0 for r in records):
        raise DataError(f"no text found in {', '.join(s.spec for s in sources)}")
    summary.seconds = time.perf_counter() - started
    forecast = sequence_forecast(out, records, config.max_length)
    summary.manifest = _manifest(spec, config, sources, records, stream.documents_cut, forecast)
    write_json_atomically(out / MANIFEST, summary.manifest)
    return summary
