"""`neobert.embed.encode`: pooling, invariances, packing, prompts, truncation, precision, bad input."""

import numpy as np
import pytest
import torch

from helpers.model import small_config
from neobert import NeoBERTModel
from neobert.embed import Embedder, encode
from neobert.pooling import pool_packed, pool_padded

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a",
    "",
    "embeddings of sentences of rather different lengths, some of them long enough to matter here",
    "short one",
    "another sentence about the weather in paris today",
    "x y z",
]


@pytest.fixture(scope="module")
def embedder(tokenizer):
    torch.manual_seed(0)
    return Embedder(NeoBERTModel(small_config()).eval(), tokenizer, {"query": "query: "}, 256)


def reference_vectors(embedder, texts, pooling):
    """One text at a time, no padding, pooled by hand."""
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = embedder.tokenizer(text, return_tensors="pt")["input_ids"]
            hidden = embedder.model(input_ids=ids).last_hidden_state[0]
            rows.append({"mean": hidden.mean(0), "cls": hidden[0], "max": hidden.max(0).values}[pooling])
    return torch.nn.functional.normalize(torch.stack(rows), dim=-1).numpy()


def test_pooling_hand_computed():
    hidden = torch.tensor([[1.0, 2.0], [3.0, -4.0], [5.0, 6.0], [-1.0, 0.0], [7.0, 8.0]])
    lengths = torch.tensor([2, 3])
    means = torch.tensor([[2.0, -1.0], [11 / 3, 14 / 3]])
    torch.testing.assert_close(pool_packed(hidden, lengths, "mean"), means)
    assert pool_packed(hidden, lengths, "cls").tolist() == [[1.0, 2.0], [5.0, 6.0]]
    assert pool_packed(hidden, lengths, "max").tolist() == [[3.0, 2.0], [7.0, 8.0]]
    padded = torch.tensor([[[1.0, 2.0], [3.0, -4.0], [99.0, 99.0]], [[5.0, 6.0], [-1.0, 0.0], [7.0, 8.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(pool_padded(padded, mask, "mean"), means)
    assert pool_padded(padded, mask, "cls").tolist() == [[1.0, 2.0], [5.0, 6.0]]
    assert pool_padded(padded, mask, "max").tolist() == [[3.0, 2.0], [7.0, 8.0]]


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
@pytest.mark.parametrize("packed", [True, False])
def test_matches_one_text_at_a_time(embedder, pooling, packed):
    got = encode(embedder, TEXTS, pooling=pooling, packed=packed, batch_size=3, show_progress=False)
    np.testing.assert_allclose(got, reference_vectors(embedder, TEXTS, pooling), atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_batch_size_and_order_invariance(embedder):
    base = encode(embedder, TEXTS, batch_size=64, show_progress=False)
    for batch_size in (1, 2, 5):
        np.testing.assert_allclose(encode(embedder, TEXTS, batch_size=batch_size, show_progress=False), base, atol=1e-5)
    permutation = [3, 0, 6, 2, 5, 1, 4]
    shuffled = encode(embedder, [TEXTS[i] for i in permutation], batch_size=2, show_progress=False)
    np.testing.assert_allclose(shuffled, base[permutation], atol=1e-5)


def test_unnormalised_and_output_dim(embedder):
    raw = encode(embedder, TEXTS, normalize=False, show_progress=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    short = encode(embedder, TEXTS, output_dim=16, show_progress=False)
    assert short.shape == (len(TEXTS), 16)
    expected = raw[:, :16] / np.linalg.norm(raw[:, :16], axis=1, keepdims=True)
    np.testing.assert_allclose(short, expected, atol=1e-5)
    with pytest.raises(ValueError, match="output_dim"):
        encode(embedder, TEXTS, output_dim=65, show_progress=False)


def test_prompts(embedder):
    with_prompt = encode(embedder, TEXTS[:3], prompt="query: ", show_progress=False)
    by_hand = encode(embedder, ["query: " + t for t in TEXTS[:3]], show_progress=False)
    np.testing.assert_allclose(with_prompt, by_hand, atol=1e-6)
    np.testing.assert_allclose(encode(embedder, TEXTS[:3], prompt_name="query", show_progress=False), by_hand)
    with pytest.raises(ValueError, match="document"):
        encode(embedder, TEXTS, prompt_name="document", show_progress=False)


def test_precisions(embedder):
    floats = encode(embedder, TEXTS, show_progress=False)
    int8 = encode(embedder, TEXTS, precision="int8", show_progress=False)
    assert int8.dtype == np.int8 and int8.shape == floats.shape and np.abs(int8).max() == 127
    cosine = (int8 / np.linalg.norm(int8, axis=1, keepdims=True) * floats).sum(1)
    assert cosine.min() > 0.999
    bits = encode(embedder, TEXTS, precision="binary", show_progress=False)
    assert bits.dtype == np.uint8 and bits.shape == (len(TEXTS), 64 // 8)
    np.testing.assert_array_equal(np.unpackbits(bits, axis=1).astype(bool), floats > 0)


def test_truncation_warns_and_keeps_the_start(embedder):
    long_text = " ".join(["word"] * 300)
    with pytest.warns(UserWarning, match="truncated"):
        cut = encode(embedder, [long_text], max_length=32, show_progress=False)
    ids = embedder.tokenizer(long_text)["input_ids"]
    with torch.no_grad():
        hidden = embedder.model(input_ids=torch.tensor([ids[:31] + ids[-1:]])).last_hidden_state[0]
    expected = torch.nn.functional.normalize(hidden.mean(0), dim=0).numpy()
    np.testing.assert_allclose(cut[0], expected, atol=1e-5)


def test_documented_edge_cases(embedder):
    assert encode(embedder, [], show_progress=False).shape == (0, 64)
    single = encode(embedder, "one text", show_progress=False)
    assert single.shape == (64,)
    np.testing.assert_allclose(single, encode(embedder, ["one text"], show_progress=False)[0])
    empty = encode(embedder, [""], show_progress=False)
    assert np.isfinite(empty).all() and abs(np.linalg.norm(empty) - 1) < 1e-5


@pytest.mark.parametrize(
    ("texts", "kwargs", "error", "match"),
    [
        (None, {}, TypeError, "None"),
        (["ok", 3], {}, TypeError, r"texts\[1\] is int"),
        (["ok", None], {}, TypeError, r"texts\[1\] is NoneType"),
        (["ok"], {"pooling": "median"}, ValueError, "median"),
        (["ok"], {"precision": "float16"}, ValueError, "float16"),
        (["ok"], {"batch_size": 0}, ValueError, "batch_size"),
        (["ok"], {"prompt": 5}, TypeError, "prompt"),
    ],
)
def test_bad_input(embedder, texts, kwargs, error, match):
    with pytest.raises(error, match=match):
        encode(embedder, texts, show_progress=False, **kwargs)


def test_rejects_a_model_that_is_not_neobert():
    with pytest.raises(TypeError, match="NeoBERT"):
        encode(torch.nn.Linear(2, 2), ["x"], show_progress=False)
