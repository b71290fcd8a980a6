"""Checkpoints that survive being killed at any moment, and everything an exact resume needs.

Layout of `<run>/checkpoints/`:

    step-00001000/
        config.json, model.safetensors   the model, as `save_pretrained` writes it (`from_pretrained` reads it)
        trainer.pt                       step, optimiser, scheduler, anything else the loop keeps
        rank-00000.pt ...                per process: data-loader position and RNG states
        config.yaml                      the resolved run configuration
        manifest.json                    written last: every file with its size and SHA-256
    latest -> step-00001000              a symlink (a one-line file where symlinks are unavailable)

A checkpoint is written under a temporary name, every file is fsynced, the manifest goes in last, and only
then is the folder renamed into place; the `latest` pointer is replaced atomically too. A folder without a
valid manifest is never read, so `kill -9` at any point leaves the previous checkpoint as the latest good one.

Reading a checkpoint verifies every file of its manifest against its SHA-256 (it reads those bytes anyway), so
a file damaged after it was written is never resumed from: `find_resumable` falls back to the newest one that
verifies and says what it skipped. Retention counts verified checkpoints only and never deletes one that does
not verify, so damaged folders cannot push good ones out. Finding and verifying live in `checkpoint_verify.py`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from neobert.errors import EXIT_DISK_FULL, CheckpointError
from neobert.files import sha256_file
from neobert.train.checkpoint_verify import (
    LATEST,
    MANIFEST,
    Verify,
    forget_verified,
    is_verified,
    list_checkpoints,
    remember_verified,
    resolve_checkpoint,
    verify_checkpoint,
)
from neobert.train.checkpoint_verify import Skipped as Skipped
from neobert.train.checkpoint_verify import find_latest_good as find_latest_good
from neobert.train.checkpoint_verify import find_resumable as find_resumable
from neobert.train.checkpoint_verify import no_good_checkpoint as no_good_checkpoint
from neobert.train.checkpoint_verify import verify_model_folder as verify_model_folder

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
TRAINER_FILE = "trainer.pt"
CONFIG_FILE = "config.yaml"


class DiskFullError(CheckpointError):
    """Writing a checkpoint ran out of space; the previous checkpoint is untouched."""

    exit_code = EXIT_DISK_FULL


# Below this much free space, a failed write is put down to a full disk (torch.save then reports only
# "unexpected pos" from its zip writer, not ENOSPC).
_NEARLY_FULL_BYTES = 256 << 20


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def rank_file(rank: int) -> str:
    return f"rank-{rank:05d}.pt"


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


# ---- RNG ---------------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (when present) CUDA generator states, as plain picklable values."""
    numpy_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {**numpy_state, "state": {**numpy_state["state"], "key": numpy_state["state"]["key"].tolist()}},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {**numpy_state["state"], "key": np.asarray(numpy_state["state"]["key"], dtype=np.uint32)}
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _plain(value: Any) -> Any:
    """NumPy scalars and arrays turned into Python values, so `torch.load(weights_only=True)` reads them."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


# ---- writing -----------------------------------------------------------------------------------------------


def _fsync_path(path: Path) -> None:
    # Directories are opened read-only to fsync their entries (the rename and new names).
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class RankState:
    """What each process keeps for itself: its data-loader position and its RNG states."""

    loader: dict[str, Any] | None
    rng: dict[str, Any]

    @classmethod
    def capture(cls, loader: Any = None) -> RankState:
        return cls(loader=_plain(loader.state_dict()) if loader is not None else None, rng=rng_state())

    def as_dict(self) -> dict[str, Any]:
        return {"loader": self.loader, "rng": self.rng}


def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    model: nn.Module,
    trainer_state: dict[str, Any],
    rank_states: list[RankState],
    config: dict[str, Any] | None = None,
    model_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write `root/step-XXXXXXXX` atomically and point `root/latest` at it; returns the folder.

    `trainer_state` holds the optimiser and scheduler state dicts and whatever else the loop needs (the
    step is added). `rank_states[r]` is process r's. `model_state` replaces the model's own state dict
    (a full state dict gathered from FSDP shards). Call on one process only.
    """
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")
    if not rank_states:
        raise ValueError("rank_states needs one entry per process (at least one)")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    final = root / checkpoint_name(step)
    temporary = root / f".tmp-{final.name}-{os.getpid()}"
    temporary.mkdir()
    try:
        with _quiet_transformers():
            unwrap_model(model).save_pretrained(temporary, state_dict=model_state)
        if not (temporary / MODEL_FILE).is_file():
            raise CheckpointError(f"save_pretrained did not write {MODEL_FILE} (sharded models are not supported)")
        torch.save({"format": FORMAT_VERSION, **_plain(trainer_state), "step": step}, temporary / TRAINER_FILE)
        for rank, state in enumerate(rank_states):
            torch.save(_plain(state.as_dict()), temporary / rank_file(rank))
        if config is not None:
            (temporary / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        _write_manifest(temporary, step, world_size=len(rank_states))
        _fsync_path(temporary)
        if final.exists():
            # Saving a step twice (a resumed run reaching a step it had saved): move the old one aside first;
            # until the rename below, the previous checkpoint in `latest` is still whole.
            _discard(final)
        os.rename(temporary, final)
        _fsync_path(root)
    except BaseException as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if _is_disk_full(error, root):
            raise DiskFullError(
                f"the disk holding {root} is full ({shutil.disk_usage(root).free / 1e6:.0f} MB free): the "
                f"checkpoint of step {step} was not written; the previous checkpoint is kept ({_latest_name(root)})"
            ) from error
        raise
    _point_latest(root, final.name)
    remember_verified(final)
    return final


def _is_disk_full(error: BaseException, root: Path) -> bool:
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    if not isinstance(error, RuntimeError):  # torch's zip writer: "unexpected pos", "file write failed"
        return False
    try:
        return shutil.disk_usage(root).free < _NEARLY_FULL_BYTES
    except OSError:
        return False


def _latest_name(root: Path) -> str:
    try:
        return resolve_checkpoint(root / LATEST, "marker").name
    except (CheckpointError, OSError):
        return "there was none"


@contextlib.contextmanager
def _quiet_transformers():
    """No "Writing model shards" bar in the middle of the training progress bar."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _write_manifest(folder: Path, step: int, world_size: int) -> None:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        _fsync_path(path)
        files[path.relative_to(folder).as_posix()] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    manifest = {"format": FORMAT_VERSION, "step": step, "world_size": world_size, "files": files}
    target = folder / MANIFEST
    with open(target, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())


def _point_latest(root: Path, name: str) -> None:
    pointer, temporary = root / LATEST, root / f".tmp-{LATEST}-{os.getpid()}"
    if temporary.is_symlink() or temporary.exists():
        temporary.unlink()
    try:
        os.symlink(name, temporary)
    except OSError:  # file systems without symlinks: a one-line file naming the folder
        temporary.write_text(name + "\n", encoding="utf-8")
    os.replace(temporary, pointer)
    _fsync_path(root)


def _discard(folder: Path) -> None:
    # Rename before deleting, so a half-deleted folder never carries a checkpoint's name.
    trash = folder.with_name(f".tmp-trash-{folder.name}-{os.getpid()}")
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _remove_stale_temporaries(root: Path) -> None:
    """Leftovers of writers that were killed. Only one process writes checkpoints, so none is live."""
    for leftover in root.glob(".tmp-*"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


# ---- retention ---------------------------------------------------------------------------------------------


def apply_retention(root: str | os.PathLike, keep_last: int, keep_every: int | None = None) -> list[Path]:
    """Delete checkpoints except the newest `keep_last` verified ones, those whose step is a multiple of
    `keep_every`, and the one `latest` points to. Only verified checkpoints are ever deleted, and only
    verified ones count towards `keep_last`: a damaged folder is left for the user to look at, and never
    takes a good checkpoint's place. Folders without a manifest (a writer killed before the rename; should not
    happen) older than the newest verified one are deleted. Returns the deleted folders."""
    if keep_last <= 0:
        raise ValueError(f"keep_last must be positive, got {keep_last}")
    root = Path(root)
    keep: set[Path] = set()
    # No pointer yet, or one naming a folder that is gone: nothing extra to protect.
    with contextlib.suppress(CheckpointError, OSError):
        keep.add(resolve_checkpoint(root / LATEST, "marker").resolve())
    # Newest first. A checkpoint is read only when it may count towards keep_last or may be deleted, so
    # the ones kept by keep_every are not read again at every save.
    newest_verified, counted, deleted = None, 0, []
    for step, folder in reversed(list_checkpoints(root)):
        every = bool(keep_every) and step % keep_every == 0
        protected = folder.resolve() in keep
        if every and counted >= keep_last:
            continue
        if not (folder / MANIFEST).exists():
            # A folder renamed into place without a manifest (should not happen): it goes once a verified
            # checkpoint is newer; a damaged one with a manifest is left for the user to look at.
            if newest_verified is not None and not protected:
                _discard(folder)
                deleted.append(folder)
            continue
        if not is_verified(folder):
            continue
        newest_verified = newest_verified if newest_verified is not None else step
        if counted < keep_last:
            counted += 1
            continue
        if every or protected:
            continue
        _discard(folder)
        forget_verified(folder)
        deleted.append(folder)
    return deleted


# ---- reading -----------------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A verified checkpoint's contents, read on the CPU."""

    folder: Path
    step: int
    world_size: int
    model_state: dict[str, torch.Tensor]
    trainer_state: dict[str, Any]
    rank_state: dict[str, Any]
    config: dict[str, Any] | None


def read_checkpoint(path: str | os.PathLike, rank: int = 0, verify: Verify = "full") -> Checkpoint:
    folder = resolve_checkpoint(path, verify)
    manifest = verify_checkpoint(folder, "marker")
    world_size = int(manifest.get("world_size", 1))
    if not 0 <= rank < world_size:
        raise CheckpointError(f"{folder} was written by {world_size} process(es); it has no state for rank {rank}")
    trainer_state = torch.load(folder / TRAINER_FILE, map_location="cpu", weights_only=True)
    if trainer_state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{folder}: checkpoint format {trainer_state.get('format')!r}, expected {FORMAT_VERSION}")
    config_path = folder / CONFIG_FILE
    return Checkpoint(
        folder=folder,
        step=int(trainer_state["step"]),
        world_size=world_size,
        model_state=load_file(folder / MODEL_FILE),
        trainer_state=trainer_state,
        rank_state=torch.load(folder / rank_file(rank), map_location="cpu", weights_only=True),
        config=yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.exists() else None,
    )


def saved_world_size(path: str | os.PathLike) -> int:
    """How many processes wrote a checkpoint (one rank file each)."""
    return int(verify_checkpoint(resolve_checkpoint(path, "marker"), "marker").get("world_size", 1))


def load_model_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a full state dict into an unsharded model, insisting every key matches."""
    missing, unexpected = unwrap_model(model).load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not fit the model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


def restore_rank_state(rank_state: dict[str, Any], loader: Any = None, rng: bool = True) -> None:
    if loader is not None:
        if rank_state.get("loader") is None:
            raise CheckpointError("the checkpoint holds no data-loader state to resume from")
        loader.load_state_dict(rank_state["loader"])
    if rng:
        restore_rng_state(rank_state["rng"])
