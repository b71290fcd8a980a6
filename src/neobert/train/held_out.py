"""The held-out rule, the `data.eval` section of the pre-training config, and the flat keys it had before.

Every run is scored on held-out batches made under this rule, kept apart from the training recipe so that runs
trained with other settings are scored on the same sequences and masked positions. Its settings have the names
of the training ones; before it was a section they were flat keys of `data` (`data.eval_sequence`, ...), which
still work with a DeprecatedKey warning naming the key to write, and a run folder saved with them still resumes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from neobert.train.config import DataSection


class DeprecatedKey(DeprecationWarning):
    """A config key that still works under an older name; the message names the key to write instead."""


# Python hides a DeprecationWarning raised outside __main__; a user's config file is where this one belongs.
warnings.simplefilter("default", DeprecatedKey)

# The settings that say what a sample is and how it is masked, under the same names in `data`, in the held-out
# rule `data.eval` and in the loader's own config (data/loader.py's LoaderConfig).
SAMPLE_SETTINGS = ("sequence", "max_length", "mlm_probability", "mask_mode", "mlm_identity_probability", "seed")


@dataclass
class HeldOutSection:
    """`data.eval`, the held-out rule: kept apart from the training recipe so that runs trained with other mask
    rates, lengths, sequences, batch sizes or seeds are scored on the same masked positions. Each setting means
    what the training setting of the same name means; unset (None), it is the training value (batch_size:
    this rank's micro-batch)."""

    sequence: Literal["truncate", "pack", "pack_naive"] | None = None
    max_length: int | None = None
    mlm_probability: float | None = None
    mask_mode: Literal["all", "bert"] | None = None
    mlm_identity_probability: float | None = None
    seed: int | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_length", "batch_size"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"data.eval.{name} must be positive, got {getattr(self, name)}")
        if self.mlm_probability is not None and not 0 < self.mlm_probability < 1:
            raise ValueError(f"data.eval.mlm_probability must lie in (0, 1), got {self.mlm_probability}")

    def over(self, training: DataSection) -> HeldOutSection:
        """This rule with its unset sample settings taken from the training ones (batch_size stays as it is:
        the micro-batch it falls back to is known at run time)."""
        unset = {name: getattr(training, name) for name in SAMPLE_SETTINGS if getattr(self, name) is None}
        return replace(self, **unset)


# The held-out rule's keys before it became the `data.eval` section: data.eval_sequence, data.eval_seed, ...
FLAT_KEYS = tuple(f"eval_{f.name}" for f in fields(HeldOutSection))


def in_current_keys(tree: dict[str, Any], source: str | None = None) -> dict[str, Any]:
    """`tree` (changed in place) with keys that moved under their current names: `data.eval_<name>`, the
    held-out rule before it became the `data.eval` section, is `data.eval.<name>`. With a `source` (a config
    file: the user's own words), a DeprecatedKey warning names the keys to write; a run folder's saved config
    is read silently."""
    data = tree.get("data")
    if not isinstance(data, dict):
        return tree
    moved = {key.removeprefix("eval_"): data.pop(key) for key in FLAT_KEYS if key in data}
    if not moved:
        return tree
    if source is not None:
        old_keys, new_keys = (", ".join(f"data.eval{sep}{name}" for name in moved) for sep in ("_", "."))
        warnings.warn(
            f"{source}: {old_keys} {'is' if len(moved) == 1 else 'are'} deprecated; write {new_keys} "
            "(the same settings, in the data.eval section)",
            DeprecatedKey,
            stacklevel=3,
        )
    section = dict(data["eval"]) if isinstance(data.get("eval"), dict) else {}
    for name, value in moved.items():
        if name in section and section[name] != value:
            raise ValueError(
                f"{source or 'config'}: data.eval_{name} and data.eval.{name} disagree; keep data.eval.{name}"
            )
        section[name] = value
    data["eval"] = section
    return tree


def current_override_keys(keys: list[str], assignment: str) -> list[str]:
    """The dotted keys of an override, a flat held-out key (`data.eval_seed=3`) moved into `data.eval`."""
    if len(keys) != 2 or keys[0] != "data" or keys[1] not in FLAT_KEYS:
        return keys
    name = keys[1].removeprefix("eval_")
    warnings.warn(
        f"override {assignment!r}: data.eval_{name} is deprecated; write data.eval.{name} (the same setting)",
        DeprecatedKey,
        stacklevel=4,
    )
    return ["data", "eval", name]
