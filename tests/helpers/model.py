"""A small NeoBERT config and random token ids, for tests that build models."""

import torch

from neobert import NeoBERTConfig


def small_config(**overrides) -> NeoBERTConfig:
    """Big enough to exercise every code path (several heads, two layers), small enough to be instant."""
    fields = dict(
        vocab_size=30522,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_length=256,
        classifier_dropout=0.0,
    )
    fields.update(overrides)
    return NeoBERTConfig(**fields)


def random_ids(batch: int, length: int, low: int = 1000, high: int = 30000) -> torch.Tensor:
    return torch.randint(low, high, (batch, length))
