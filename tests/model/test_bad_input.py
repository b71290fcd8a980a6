"""Bad input raises a ValueError naming the problem before any heavy work."""

import pytest
import torch

from helpers.model import random_ids, small_config
from neobert import NeoBERTConfig, NeoBERTForMaskedLM, NeoBERTModel


@pytest.fixture
def model():
    return NeoBERTModel(small_config()).eval()


@pytest.mark.parametrize(
    "make_inputs, message",
    [
        (lambda: dict(input_ids=torch.tensor([[101, 30522]])), r"must lie in \[0, 30522\)"),
        (lambda: dict(input_ids=torch.tensor([[101, -1]])), r"must lie in \[0, 30522\)"),
        (lambda: dict(input_ids=random_ids(2, 5), attention_mask=torch.ones(2, 6)), "attention_mask has shape"),
        (lambda: dict(input_ids=random_ids(2, 5), attention_mask=torch.full((2, 5), 2)), "only 0 and 1"),
        (lambda: dict(input_ids=random_ids(1, 3), attention_mask=torch.tensor([[0.0, -1e9, 1.0]])), "mixes"),
        (lambda: dict(input_ids=torch.zeros(0, 5, dtype=torch.long)), "empty batch"),
        (lambda: dict(input_ids=torch.zeros(2, 0, dtype=torch.long)), "empty batch"),
        (lambda: dict(input_ids=random_ids(1, 10), cu_seqlens=torch.tensor([0, 4, 9])), "end at the number"),
        (lambda: dict(input_ids=random_ids(1, 10), cu_seqlens=torch.tensor([1, 4, 10])), "start at 0"),
        (lambda: dict(input_ids=random_ids(1, 10), cu_seqlens=torch.tensor([0, 6, 4, 10])), "strictly increasing"),
        (lambda: dict(input_ids=random_ids(2, 5), cu_seqlens=torch.tensor([0, 5])), "batch size 1"),
        (lambda: dict(input_ids=random_ids(1, 9), cu_seqlens=torch.tensor([0, 4, 9]), max_seqlen=3), "max_seqlen"),
        (lambda: dict(input_ids=random_ids(1, 4), position_ids=torch.tensor([[0, 1, -2, 3]])), "non-negative"),
        (lambda: dict(input_ids=random_ids(1, 4), inputs_embeds=torch.zeros(1, 4, 64)), "exactly one"),
        (lambda: dict(inputs_embeds=torch.zeros(1, 4, 63)), "inputs_embeds must be"),
        (lambda: dict(input_ids=torch.zeros(1, 4)), "must be integers"),
    ],
)
def test_bad_input_is_named(model, make_inputs, message, monkeypatch):
    # "Before any heavy work": the first block must never run.
    monkeypatch.setattr(model.transformer_encoder[0], "forward", lambda *a, **k: pytest.fail("ran a block"))
    with pytest.raises(ValueError, match=message):
        model(**make_inputs())


def test_mlm_labels_of_the_wrong_shape():
    model = NeoBERTForMaskedLM(small_config()).eval()
    with pytest.raises(ValueError, match="labels have shape"):
        model(input_ids=random_ids(2, 5), labels=torch.zeros(2, 4, dtype=torch.long))


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(hidden_size=100, num_attention_heads=12), "must be divisible by num_attention_heads"),
        (dict(hidden_act="relu"), "hidden_act must be one of"),
        (dict(num_hidden_layers=0), "num_hidden_layers must be a positive integer"),
        (dict(hidden_size=60, num_attention_heads=4, dim_head=16), "dim_head"),
        (dict(hidden_size=12, num_attention_heads=4), "even head dimension"),
        (dict(pad_token_id=40000), "outside the vocabulary"),
    ],
)
def test_bad_config_is_named(fields, message):
    with pytest.raises(ValueError, match=message):
        NeoBERTConfig(**fields)


def test_presets_and_unknown_preset():
    assert NeoBERTConfig.from_preset("neobert-120m").num_hidden_layers == 12
    assert NeoBERTConfig.from_preset("tiny", num_hidden_layers=2).num_hidden_layers == 2
    m0 = NeoBERTConfig.from_preset("bert-like-m0")
    assert (m0.rope, m0.rms_norm, m0.hidden_act) == (False, False, "gelu")
    with pytest.raises(ValueError, match="unknown NeoBERT preset 'huge'"):
        NeoBERTConfig.from_preset("huge")
