"""MLM masking as the loader draws it (`sequence_draws` per sample, `mask_with_draws`): the rate, the
replacement rule, special tokens never selected, seeded determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neobert.data.masking import IGNORE_INDEX, MaskingConfig, mask_with_draws, sequence_draws

PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103
SPECIALS = (PAD, UNK, CLS, SEP, MASK)
VOCAB = 30522


def batch_of_text(rows: int = 64, length: int = 512) -> torch.Tensor:
    ids = torch.randint(999, VOCAB, (rows, length), generator=torch.Generator().manual_seed(5))
    ids[:, 0], ids[:, -1] = CLS, SEP
    ids[::3, 300:] = PAD  # padded rows
    ids[1::7, 10] = UNK
    ids[:, 200] = SEP  # a packed row's inner boundary
    ids[:, 201] = CLS
    return ids


def mask_rows(ids: torch.Tensor, config: MaskingConfig, seed: int, stream: int = 0):
    """Each row masked as the loader masks one sample (the row's index is its place in the sample order)."""
    rows, length = ids.shape
    parts = [sequence_draws(seed, stream, row, length, config, VOCAB) for row in range(rows)]
    draws = tuple(None if part[0] is None else np.concatenate(part) for part in zip(*parts, strict=True))
    masked, labels = mask_with_draws(ids.reshape(-1), config, SPECIALS, MASK, draws)
    return masked.view(rows, length), labels.view(rows, length)


def test_all_mask_rate_and_rules():
    ids = batch_of_text()
    masked, labels = mask_rows(ids, MaskingConfig(), seed=0)
    selected = labels != IGNORE_INDEX
    eligible = ~torch.isin(ids, torch.tensor(SPECIALS))
    assert not selected[~eligible].any()
    rate = selected.sum().item() / eligible.sum().item()
    assert abs(rate - 0.2) < 0.01  # ~25,000 eligible tokens: the standard error is 0.0025
    assert (masked[selected] == MASK).all()
    assert torch.equal(masked[~selected], ids[~selected])
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(ids, batch_of_text())  # the input is not modified


def test_bert_80_10_10():
    ids = batch_of_text(128)
    config = MaskingConfig(mlm_probability=0.15, mask_mode="bert")
    masked, labels = mask_rows(ids, config, seed=1, stream=2)
    selected = labels != IGNORE_INDEX
    assert not selected[torch.isin(ids, torch.tensor(SPECIALS))].any()
    n = selected.sum().item()
    to_mask = (masked[selected] == MASK).sum().item() / n
    kept = (masked[selected] == ids[selected]).sum().item() / n
    swapped = 1 - to_mask - kept
    assert abs(to_mask - 0.8) < 0.015 and abs(kept - 0.1) < 0.015 and abs(swapped - 0.1) < 0.015
    assert torch.equal(masked[~selected], ids[~selected])


def test_same_seed_same_masks_different_stream_different_masks():
    ids = batch_of_text(8)
    first = mask_rows(ids, MaskingConfig(), seed=0, stream=1)
    again = mask_rows(ids, MaskingConfig(), seed=0, stream=1)
    other_stream = mask_rows(ids, MaskingConfig(), seed=0, stream=2)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other_stream[1])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="mlm_probability"):
        MaskingConfig(mlm_probability=0.0)
    with pytest.raises(ValueError, match="mask_mode"):
        MaskingConfig(mask_mode="80_10_10")


@pytest.mark.parametrize("mode", ["all", "bert"])
def test_identity_scoring_adds_unchanged_scored_tokens_and_leaves_the_selection_as_it_was(mode):
    ids = batch_of_text()
    plain = mask_rows(ids, MaskingConfig(0.2, mode), seed=4, stream=1)
    widened = mask_rows(ids, MaskingConfig(0.2, mode, 0.1), seed=4, stream=1)
    # the inputs are exactly those of plain masking: identity positions stay as they are
    assert torch.equal(widened[0], plain[0])
    selected, scored = plain[1] != IGNORE_INDEX, widened[1] != IGNORE_INDEX
    assert torch.equal(widened[1][selected], plain[1][selected])
    identity = scored & ~selected
    assert torch.equal(widened[1][identity], ids[identity]) and torch.equal(widened[0][identity], ids[identity])
    eligible = ~torch.isin(ids, torch.tensor(SPECIALS))
    assert not scored[~eligible].any()
    assert abs(identity.sum().item() / eligible.sum().item() - 0.1) < 0.01


def test_identity_scoring_draws_follow_the_rule():
    ids = batch_of_text(4).reshape(-1)
    config = MaskingConfig(0.2, "bert", 0.1)
    draws = sequence_draws(3, 0, 7, ids.numel(), config, VOCAB)
    masked, labels = mask_with_draws(ids, config, SPECIALS, MASK, draws)
    eligible = ~torch.isin(ids, torch.tensor(SPECIALS))
    select = torch.from_numpy(draws[0])
    expected = eligible & (select < 0.3)
    assert torch.equal(labels != IGNORE_INDEX, expected)
    keep = eligible & (select >= 0.2) & (select < 0.3)
    assert torch.equal(masked[keep], ids[keep])
    assert np.isclose(keep.sum().item() / eligible.sum().item(), 0.1, atol=0.03)  # ~1,600 eligible tokens


def test_an_identity_rate_that_leaves_no_room_is_refused():
    with pytest.raises(
        ValueError, match=r"mlm_identity_probability must lie in \[0, 1 - mlm_probability\) = \[0, 0.8\)"
    ):
        MaskingConfig(mlm_probability=0.2, mlm_identity_probability=0.8)
    with pytest.raises(ValueError, match="mlm_identity_probability"):
        MaskingConfig(mlm_probability=0.2, mlm_identity_probability=-0.1)
