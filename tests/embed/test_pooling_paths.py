"""Every path that pools token states (encode, contrastive training, the offline suite, the embedding
diagnostics benchmark) uses `neobert.pooling` and gives the vectors each computed with its own code before."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.model import small_config
from neobert import NeoBERTModel
from neobert.demo.offline_suite import mean_pooled
from neobert.embed import encode
from neobert.embed_train.train import packed_embedder
from neobert.export.folder import export_model
from neobert.pooling import POOLINGS

TEXTS = ["a short one", "a somewhat longer sentence about the weather in spring", "x", "two words"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return NeoBERTModel(small_config()).eval()


def masked_mean_by_hand(model, tokenizer, texts):
    """Each text alone, no padding: the mean of its final states."""
    with torch.no_grad():
        return np.stack(
            [
                model(input_ids=tokenizer([t], return_tensors="pt")["input_ids"]).last_hidden_state[0].mean(0).numpy()
                for t in texts
            ]
        )


def test_the_offline_suite_mean_pooling_is_the_padded_masked_mean(model, tokenizer):
    rows = tokenizer(TEXTS, truncation=True, max_length=64, return_attention_mask=False)["input_ids"]
    width = max(map(len, rows))
    ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    before = ((hidden * weights).sum(1) / weights.sum(1)).numpy()  # the suite's own code before it shared pooling
    np.testing.assert_array_equal(mean_pooled(model, tokenizer, TEXTS, 64), before)
    np.testing.assert_allclose(
        mean_pooled(model, tokenizer, TEXTS, 64), masked_mean_by_hand(model, tokenizer, TEXTS), atol=1e-5
    )


@pytest.mark.parametrize("pooling", POOLINGS)
def test_contrastive_training_pools_as_encode_does(model, tokenizer, pooling):
    with torch.no_grad():
        trained = packed_embedder(model, tokenizer, 64, pooling, torch.device("cpu"))(TEXTS).numpy()
    for packed in (True, False):
        vectors = encode(model, TEXTS, pooling=pooling, normalize=False, packed=packed, tokenizer=tokenizer)
        np.testing.assert_allclose(trained, vectors, atol=1e-5)


def test_the_diagnostics_benchmark_pools_the_mean_of_each_layer(model, tokenizer):
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "studies" / "embedding_diagnostics.py"
    spec = importlib.util.spec_from_file_location("embedding_diagnostics", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    final = benchmark.pooled_by_layer(model, tokenizer, TEXTS)["final"]
    np.testing.assert_allclose(final, masked_mean_by_hand(model, tokenizer, TEXTS), atol=1e-5)


def test_export_takes_the_pooling_names_from_one_place(tmp_path):
    with pytest.raises(ValueError, match=r"pooling must be one of \('mean', 'cls', 'max'\), got 'weightedmean'"):
        export_model(tmp_path / "absent", tmp_path / "out", pooling="weightedmean")
