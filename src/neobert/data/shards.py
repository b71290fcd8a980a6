"""The on-disk format of a prepared corpus, shared by `prepare` (writer) and the loader (reader).

```
DIR/manifest.json                    written last: its presence means the corpus is complete
DIR/plan.json                        what the corpus is made from (sources, settings, tokenizer)
DIR/progress/block_00000.json        one record per finished input block (for resuming)
DIR/train/shard_00000.tokens.npy     content token ids of the documents, end to end (uint16 or uint32)
DIR/train/shard_00000.offsets.npy    int64, n_documents + 1 boundaries into the tokens
DIR/heldout/shard_00000.*            the same for the held-out split
```
Documents hold content ids only, without [CLS] / [SEP]. Every file is written under a temporary name and
renamed, and a block's record is written after its shards, so a half-written shard never looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neobert.files import publish, sha256_file, write_beside

FORMAT = "neobert-token-shards"
FORMAT_VERSION = 1
SPLITS = ("train", "heldout")
MANIFEST = "manifest.json"
PLAN = "plan.json"
PROGRESS = "progress"


class DataError(ValueError):
    """Bad input or a damaged corpus; the message names the file."""


def write_npy_atomically(path: Path, array: np.ndarray) -> str:
    """Writes `array` as .npy under a temporary name, renames it, and returns the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def write_and_hash(handle) -> str:
        np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)
        handle.flush()
        handle.seek(0)
        digest = hashlib.sha256()
        for piece in iter(lambda: handle.read(1 << 22), b""):
            digest.update(piece)
        return digest.hexdigest()

    name, digest = write_beside(path, write_and_hash)
    publish(name, path)
    return digest


@dataclass
class ShardEntry:
    """One shard of one split, as listed in a block record and in the manifest."""

    split: str
    index: int
    tokens_file: str  # relative to the corpus folder
    offsets_file: str
    documents: int
    tokens: int
    tokens_sha256: str
    offsets_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> ShardEntry:
        return cls(**payload)


def shard_files(split: str, index: int) -> tuple[str, str]:
    stem = f"{split}/shard_{index:05d}"
    return f"{stem}.tokens.npy", f"{stem}.offsets.npy"


def write_shard(root: Path, split: str, index: int, tokens: np.ndarray, lengths: np.ndarray) -> ShardEntry:
    tokens_file, offsets_file = shard_files(split, index)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens_sha = write_npy_atomically(root / tokens_file, tokens)
    offsets_sha = write_npy_atomically(root / offsets_file, offsets)
    return ShardEntry(split, index, tokens_file, offsets_file, len(lengths), int(offsets[-1]), tokens_sha, offsets_sha)


def _open_npy(path: Path, expected_shape: tuple[int, ...], dtype: np.dtype | None) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: shard file is missing")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"{path}: not a readable shard ({error}); the file is truncated or corrupted") from error
    if array.shape != expected_shape or (dtype is not None and array.dtype != dtype):
        raise DataError(
            f"{path}: shape {array.shape} and dtype {array.dtype} differ from the manifest "
            f"({expected_shape}, {dtype}); the file is truncated or was replaced"
        )
    return array


# Shard files whose checksum this process has checked, with (size, mtime) then: a loader built again (held-out
# batches at every evaluation) does not read the corpus again.
_checked: dict[Path, tuple[int, ...]] = {}
VERIFY_MODES = ("first_use", "full", "size", "none")


def check_checksum(path: Path, expected: str) -> None:
    """DataError naming `path` unless its sha256 is `expected` (remembered while the file is unchanged)."""
    if not path.is_file():
        raise DataError(f"{path}: shard file is missing")
    status = path.stat()
    key, stamp = path.resolve(), (status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)
    if _checked.get(key) == stamp:
        return
    if sha256_file(path) != expected:
        raise DataError(
            f"{path}: checksum mismatch (the file is damaged); run the same `neobert prepare` command again "
            "to re-create it"
        )
    _checked[key] = stamp


def open_shard(root: Path, entry: ShardEntry, dtype: np.dtype, verify: str = "size") -> tuple[np.ndarray, np.ndarray]:
    """Memory-maps a shard after checking it: `verify="size"` checks headers and sizes (cheap, catches
    truncation); `"first_use"` also checks the offsets file's checksum (it is read whole anyway) and leaves the
    tokens file to `check_tokens`, called on the shard's first use; `"full"` checks both checksums now."""
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, not {verify!r}")
    tokens_path, offsets_path = root / entry.tokens_file, root / entry.offsets_file
    if verify in ("full", "first_use"):
        check_checksum(offsets_path, entry.offsets_sha256)
    if verify == "full":
        check_checksum(tokens_path, entry.tokens_sha256)
    offsets = _open_npy(offsets_path, (entry.documents + 1,), np.dtype(np.int64))
    tokens = _open_npy(tokens_path, (entry.tokens,), dtype)
    if verify != "none" and (int(offsets[0]) != 0 or int(offsets[-1]) != entry.tokens):
        raise DataError(f"{offsets_path}: document offsets do not cover the shard's {entry.tokens} tokens")
    return tokens, offsets


def load_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a finished corpus, with a clear error when the folder is not one."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        if (root / PLAN).is_file():
            raise DataError(
                f"{root}: preparation did not finish (no {MANIFEST}); run the same `neobert prepare` "
                "command again to resume it"
            )
        raise DataError(f"{root}: not a prepared corpus (no {MANIFEST}); create one with `neobert prepare`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error})") from error
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('version')!r}; "
            f"this neobert reads {FORMAT!r} version {FORMAT_VERSION}"
        )
    return manifest


def check_tokenizer(manifest: dict[str, Any], root: str | os.PathLike, fingerprint: str) -> None:
    """Refuses a corpus tokenised with another tokenizer than the one training will use."""
    recorded = manifest["tokenizer"]
    if recorded["fingerprint"] != fingerprint:
        raise DataError(
            f"{Path(root) / MANIFEST}: the corpus was tokenised with {recorded.get('name')!r} "
            f"(fingerprint {recorded['fingerprint'][:12]}), not with this tokenizer (fingerprint "
            f"{fingerprint[:12]}); prepare it again with the tokenizer you train with"
        )


def verify_corpus(root: str | os.PathLike, full: bool = True) -> int:
    """Checks every shard of a finished corpus against its manifest; returns the number of shards."""
    root = Path(root)
    manifest = load_manifest(root)
    dtype = np.dtype(manifest["tokenizer"]["dtype"])
    count = 0
    for split in SPLITS:
        for payload in manifest["splits"][split]["shards"]:
            open_shard(root, ShardEntry.from_dict(payload), dtype, verify="full" if full else "size")
            count += 1
    return count
