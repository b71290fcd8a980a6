"""A run folder remembers the settings it was started with, so that only the same run is ever resumed in it.

`finetune` and `ablate` continue what an earlier command left in their output folder. Before this record, a
second command with other data or settings "resumed" a finished run: nothing trained, and the old results
were kept under the new settings. Now the first command writes `run-settings.json` (settings, and digests
of the data and of the starting model) before it trains; a later command compares its own with them and
refuses to continue a different run, naming what differs and the one flag that starts afresh: `--restart`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from neobert.files import sha256_file, write_json_atomically

SETTINGS_FILE = "run-settings.json"
RESTART_FLAG = "--restart"


class RunMismatch(ValueError):
    """The folder holds a run started with other settings or data: a user error (exit 2 in every command)."""


def digest_of(value: Any) -> str:
    """SHA-256 of a JSON-able value (its canonical JSON), e.g. token ids and targets of a data split."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def folder_digest(folder: str | os.PathLike, names: tuple[str, ...]) -> str | None:
    """A digest of the files `names` present in `folder` (e.g. a model's config and weights, or a corpus's
    manifest, which itself lists every shard's checksum); None when none of them is there."""
    folder = Path(folder)
    parts = {name: sha256_file(folder / name) for name in names if (folder / name).is_file()}
    return digest_of(parts) if parts else None


def model_digest(folder: str | os.PathLike) -> str | None:
    """A model folder's identity: its checkpoint manifest (which lists every file's checksum) when it has
    one, else its config and weights."""
    if (Path(folder) / "manifest.json").is_file():
        return folder_digest(folder, ("manifest.json",))
    return folder_digest(
        folder, ("config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    )


def _describe(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`name: old -> new` for every setting that differs (nested ones named `a.b`); digests as "other contents"."""
    changes = []
    for key in sorted(set(recorded) | set(current)):
        old, new = recorded.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += [f"{key}.{change}" for change in differences(old, new)]
        elif old != new and _is_digest(old) and _is_digest(new):
            changes.append(f"{key}: other contents")
        elif old != new:
            changes.append(f"{key}: {_describe(old)} -> {_describe(new)}")
    return changes


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))  # tuples as lists, as read back


def check_same_run(folder: str | os.PathLike, current: dict[str, Any], option: str = "--out") -> None:
    """RunMismatch unless `folder` records exactly `current` (a folder without a record holds a run whose
    settings are unknown: refused too, since nothing says it is the same run)."""
    path = Path(folder) / SETTINGS_FILE
    restart = f"pass {RESTART_FLAG} to start afresh in it (this deletes its earlier run), or choose another {option}"
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunMismatch(
            f"{option} {folder} holds an earlier run whose settings were not recorded ({SETTINGS_FILE} is "
            f"missing), so it cannot be resumed as this one; {restart}"
        ) from None
    except (OSError, ValueError) as error:
        raise RunMismatch(f"{path}: unreadable ({error}); {restart}") from None
    changes = differences(recorded, _plain(current))
    if changes:
        shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
        raise RunMismatch(f"{option} {folder} holds a run started with other settings ({shown}); {restart}")


def record_run(folder: str | os.PathLike, current: dict[str, Any]) -> None:
    write_json_atomically(Path(folder) / SETTINGS_FILE, _plain(current))


# What `pretrain --resume` may change: the trainer applies these on purpose (a longer budget, another learning
# rate or weight decay, another cadence of logs and checkpoints, more processes, another attention kernel).
# The data, the masking, the model and the seeds make the run what it is: changed, it is another run.
CHANGEABLE_ON_RESUME = (
    "budget.",
    "system.",
    "phase.",
    "data.eval_",  # data.eval_batches, data.eval_split
    "data.eval.",  # the held-out rule
    "model.attention:",
    "model.activation_checkpointing:",
    "model.init_from:",
    "train.",
)
FIXED_ON_RESUME = ("train.seed:",)


def _same_corpus(change: str) -> bool:
    """`data.path: 'a' -> 'b'` where both name the same prepared corpus (one written another way)."""
    import ast

    if not change.startswith("data.path: "):
        return False
    try:
        old, new = (ast.literal_eval(part) for part in change.removeprefix("data.path: ").split(" -> "))
        before, after = folder_digest(old, ("manifest.json",)), folder_digest(new, ("manifest.json",))
    except (ValueError, SyntaxError, TypeError, OSError):
        return False
    return before is not None and before == after


def check_resumed_settings(folder: str | os.PathLike, changes: list[str]) -> None:
    """RunMismatch (exit 2) naming the settings (`key: old -> new`) that differ from those the checkpoint
    `folder` was saved with, unless each is one a resumed run may change (`CHANGEABLE_ON_RESUME`)."""
    fixed = [
        change
        for change in changes
        if (not change.startswith(CHANGEABLE_ON_RESUME) or change.startswith(FIXED_ON_RESUME))
        and not _same_corpus(change)
    ]
    if fixed:
        shown = "; ".join(fixed[:6]) + (f"; and {len(fixed) - 6} more" if len(fixed) > 6 else "")
        raise RunMismatch(
            f"{folder} was saved by a run with other settings ({shown}); --resume continues a run with its own "
            f"data, model and seeds (train.*, budget.* and system.* may change): resume with them, pass "
            f"{RESTART_FLAG} to start afresh in it (this deletes the earlier run), or choose another system.output_dir"
        )
