"""Finding and verifying checkpoints (see `checkpoint.py` for the layout): a checkpoint is complete when its
manifest is there, and good when every file it lists has its size and SHA-256; resuming, retention and every
reader of a model folder ask here which checkpoint is good.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from neobert.errors import CheckpointError
from neobert.files import sha256_file

MANIFEST = "manifest.json"
LATEST = "latest"
STEP_FOLDER = re.compile(r"^step-(\d{8,})$")  # `checkpoint_name(step)`
Verify = Literal["marker", "size", "full"]


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, folder) of every folder named like a checkpoint, oldest first; verified or not."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_FOLDER.match(p.name))]
    return sorted(found)


def verify_checkpoint(folder: str | os.PathLike, verify: Verify = "full") -> dict[str, Any]:
    """The manifest of a complete checkpoint, or CheckpointError saying what is wrong.

    "marker": the manifest exists and parses; "size": also every listed file exists with its size;
    "full": also every SHA-256 matches (reads every byte).
    """
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{folder} is not a complete checkpoint (no readable {MANIFEST}: {error})") from None
    if verify == "marker":
        return manifest
    for name, expected in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != expected["bytes"]:
            raise CheckpointError(f"{folder}: {name} is missing or has the wrong size")
        if verify == "full" and sha256_file(path) != expected["sha256"]:
            raise CheckpointError(f"{folder}: {name} does not match its checksum (the file is damaged)")
    return manifest


# Checkpoints this process wrote or fully verified, with the size and mtime of each file then: retention asks
# at every save, and re-reading every kept checkpoint each time would cost more than the save.
_verified: dict[Path, tuple[tuple[Any, ...], ...]] = {}


def _stat_key(folder: Path) -> tuple[tuple[Any, ...], ...]:
    stats = [(p.name, p.stat()) for p in sorted(folder.iterdir()) if p.is_file()]
    return tuple((name, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns) for name, s in stats)


def remember_verified(folder: Path) -> None:
    with contextlib.suppress(OSError):
        _verified[folder.resolve()] = _stat_key(folder)


def forget_verified(folder: Path) -> None:
    _verified.pop(folder.resolve(), None)


def is_verified(folder: Path) -> bool:
    """Every file of the checkpoint matches its manifest's checksum (remembered while the files are unchanged)."""
    key = folder.resolve()
    try:
        if _verified.get(key) == _stat_key(folder):
            return True
        verify_checkpoint(folder, "full")
    except (CheckpointError, OSError):
        return False
    remember_verified(folder)
    return True


@dataclass
class Skipped:
    """A checkpoint passed over when looking for one to resume from, and why."""

    step: int
    folder: Path
    reason: str

    def describe(self) -> str:
        return f"skipped the checkpoint of step {self.step} ({self.folder.name}): {self.reason}"


def find_resumable(root: str | os.PathLike, verify: Verify = "full") -> tuple[Path | None, list[Skipped]]:
    """The newest checkpoint under `root` that verifies (or None), and the newer ones skipped on the way."""
    skipped = []
    for step, folder in reversed(list_checkpoints(root)):
        try:
            verify_checkpoint(folder, verify)
        except CheckpointError as error:
            skipped.append(Skipped(step, folder, str(error).removeprefix(f"{folder}: ")))
            continue
        if verify == "full":
            remember_verified(folder)
        return folder, skipped
    return None, skipped


def no_good_checkpoint(root: Path, skipped: list[Skipped]) -> str:
    reasons = "; ".join(f"step {s.step}: {s.reason}" for s in skipped)
    return f"{root} holds no checkpoint that verifies ({reasons})"


def find_latest_good(root: str | os.PathLike, verify: Verify = "full") -> Path | None:
    """The newest checkpoint under `root` that verifies, or None. Half-written or corrupt ones are skipped,
    and the newest complete one wins even when a crash came before `latest` was updated."""
    return find_resumable(root, verify)[0]


def resolve_checkpoint(path: str | os.PathLike, verify: Verify = "full") -> Path:
    """A checkpoint folder from what users type: the folder itself, a `latest` pointer, or a `checkpoints`
    folder (its latest good checkpoint)."""
    path = Path(path)
    if path.is_file() and not path.is_symlink() and path.name == LATEST:
        path = path.parent / path.read_text(encoding="utf-8").strip()
    if path.is_dir() and not (path / MANIFEST).exists() and list_checkpoints(path):
        found, skipped = find_resumable(path, verify)
        if found is None:
            raise CheckpointError(no_good_checkpoint(path, skipped))
        return found
    verify_checkpoint(path, verify)
    return path.resolve()


def verify_model_folder(path: str | os.PathLike) -> None:
    """Every reader of a model folder calls this first: a folder that is a training checkpoint (it has a
    manifest) must verify in full, or CheckpointError names the damaged file; folders without one (exports,
    hub snapshots) have nothing to check against and pass."""
    folder = Path(path)
    if (folder / MANIFEST).exists() and not is_verified(folder):
        verify_checkpoint(folder, "full")  # raises, naming the file
