"""Held-out MLM evaluation: the sparse path (training mode, no dropout) equals the dense one (eval mode)."""

import pytest
import torch
import torch.nn.functional as F

from helpers.model import small_config
from neobert import NeoBERTForMaskedLM
from neobert.train.evaluate import evaluate_mlm, model_inputs


def batches():
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        ids = torch.randint(1000, 30000, (2, 12), generator=generator)
        labels = torch.where(torch.rand(ids.shape, generator=generator) < 0.3, ids, torch.full_like(ids, -100))
        yield {
            "input_ids": ids.masked_fill(labels != -100, 103),
            "labels": labels,
            "attention_mask": torch.ones_like(ids),
            "doc_ids": "bookkeeping the model never sees",
        }


def test_sparse_and_dense_evaluation_agree_and_match_cross_entropy():
    with_dropout = NeoBERTForMaskedLM(small_config(dropout=0.1))
    without = NeoBERTForMaskedLM(small_config(dropout=0.0))
    without.load_state_dict(with_dropout.state_dict())
    assert with_dropout.training and without.training  # as built
    dense = evaluate_mlm(with_dropout, list(batches()), torch.device("cpu"))  # eval mode: dropout off
    sparse = evaluate_mlm(without, list(batches()), torch.device("cpu"))  # training mode: sparse decoder
    assert with_dropout.training and without.training  # each model's mode is put back
    assert dense.masked_tokens == sparse.masked_tokens > 0 and dense.batches == 3
    assert dense.loss == pytest.approx(sparse.loss, rel=1e-6) and dense.accuracy == sparse.accuracy

    without.eval()
    losses, count = 0.0, 0
    with torch.no_grad():
        for batch in batches():
            logits = without(input_ids=batch["input_ids"]).logits
            selected = batch["labels"] != -100
            losses += F.cross_entropy(logits[selected], batch["labels"][selected], reduction="sum").item()
            count += int(selected.sum())
    assert sparse.loss == pytest.approx(losses / count, rel=1e-6)


def test_a_model_in_eval_mode_is_left_in_eval_mode():
    """The sparse path switches a dropout-free model to training mode for the evaluation; afterwards it
    must be back in eval mode, every submodule included, or a caller's later inference would differ."""
    for dropout in (0.0, 0.1):
        model = NeoBERTForMaskedLM(small_config(dropout=dropout)).eval()
        evaluate_mlm(model, list(batches()), torch.device("cpu"))
        assert not any(module.training for module in model.modules()), dropout
        model.train()
        evaluate_mlm(model, list(batches()), torch.device("cpu"))
        assert all(module.training for module in model.modules()), dropout


def test_max_batches_and_bad_batches():
    model = NeoBERTForMaskedLM(small_config())
    assert evaluate_mlm(model, batches(), torch.device("cpu"), max_batches=2).batches == 2
    with pytest.raises(ValueError, match="needs input_ids and labels"):
        model_inputs({"input_ids": torch.ones(1, 2, dtype=torch.long)}, torch.device("cpu"))
