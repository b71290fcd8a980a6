"""Masked-language-model masking (spec B.4): vectorised, seeded, never touching special tokens.

Each token that is not special is selected independently with probability `mlm_probability` (20% by
default). The paper replaces every selected token with [MASK] (`mask_mode="all"`); BERT's rule
(`mask_mode="bert"`) keeps 10% of them and swaps 10% for a random token of the vocabulary (80/10/10).
Labels hold the original id at selected positions and -100 elsewhere. [PAD], [CLS] and [SEP] are never
selected, nor [UNK] and [MASK] (as transformers' special-tokens mask does).

`mlm_identity_probability` also scores that share of the tokens that were not selected, left unchanged in
the input, as themselves (drawn from the same uniform, just above `mlm_probability`): BERT's kept 10%
widened. The loss then reads the output of real tokens too, which keeps their identity in the final hidden
states (docs/speedrun.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

IGNORE_INDEX = -100
MASK_MODES = ("all", "bert")


@dataclass(frozen=True)
class MaskingConfig:
    """The pre-training config's masking settings (`data.mlm_probability`, `data.mask_mode`,
    `data.mlm_identity_probability`), under the same names."""

    mlm_probability: float = 0.2
    mask_mode: str = "all"
    mlm_identity_probability: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"mlm_probability must lie in (0, 1), not {self.mlm_probability}")
        if not 0 <= self.mlm_identity_probability < 1 - self.mlm_probability:
            raise ValueError(
                "mlm_identity_probability must lie in [0, 1 - mlm_probability) = "
                f"[0, {1 - self.mlm_probability:g}), not {self.mlm_identity_probability}"
            )
        if self.mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {MASK_MODES}, not {self.mask_mode!r}")


def sequence_draws(seed: int, stream: int, sample: int, length: int, config: MaskingConfig, vocab_size: int):
    """The random draws that mask one sample of `length` tokens: a function of (seed, stream, the sample's
    index in the global sample order) alone, so a sample gets the same mask whatever batch, rank, process
    count or accumulation it lands in. Returns (select, action, random ids); the last two only for "bert"."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream, sample]))
    select = rng.random(length)
    if config.mask_mode == "all":
        return select, None, None
    return select, rng.random(length), rng.integers(0, vocab_size, length)


def mask_with_draws(
    input_ids: torch.Tensor,
    config: MaskingConfig,
    special_ids: Sequence[int],
    mask_id: int,
    draws: tuple[np.ndarray, np.ndarray | None, np.ndarray | None],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (masked input_ids, labels) of flat `input_ids` masked with `draws` of the same length (see
    `sequence_draws`); `input_ids` is left unchanged."""
    select, action, random_ids = (None if d is None else torch.from_numpy(d) for d in draws)
    specials = torch.as_tensor(list(special_ids), dtype=input_ids.dtype)
    maskable = ~torch.isin(input_ids, specials)
    return _apply(input_ids, config, maskable, select, action, random_ids, mask_id)


def _apply(input_ids, config: MaskingConfig, maskable, select, action, random_ids, mask_id: int):
    selected = (select < config.mlm_probability) & maskable
    # The selected ones and the identity ones.
    scored = (select < config.mlm_probability + config.mlm_identity_probability) & maskable
    labels = torch.where(scored, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    if config.mask_mode == "all":
        return input_ids.masked_fill(selected, mask_id), labels
    # 80/10/10 from a second draw: below 0.8 -> [MASK], 0.8-0.9 -> random token, else unchanged.
    masked = input_ids.masked_fill(selected & (action < 0.8), mask_id)
    swap = selected & (action >= 0.8) & (action < 0.9)
    return torch.where(swap, random_ids.to(input_ids.dtype), masked), labels
