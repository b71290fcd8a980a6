"""Naive packing (`sequence="pack_naive"`, the paper's M6 first try): the same packs as packing proper, each laid in one
row where documents attend to each other."""

import pytest
import torch

from helpers.data import sample_texts
from neobert import NeoBERTConfig, NeoBERTModel
from neobert.data.loader import LoaderConfig, PretrainingLoader


@pytest.fixture(scope="module")
def corpus_dir(prepared_corpus):
    return prepared_corpus(
        sample_texts(120, seed=9, long_every=6, long_words=150), max_length=64, heldout_fraction=0.05, shard_tokens=6000
    )


def originals(batch) -> torch.Tensor:
    """The tokens before masking."""
    return torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])


def loader(corpus_dir, sequence):
    config = LoaderConfig(
        str(corpus_dir), sequence=sequence, max_length=64, batch_size=4, seed=2, mlm_probability=0.2, mask_mode="all"
    )
    return PretrainingLoader(config)


def test_rows_hold_the_packs_of_packing_proper(corpus_dir):
    packed, rows = loader(corpus_dir, "pack"), loader(corpus_dir, "pack_naive")
    for _ in range(5):
        flat, laid = next(packed), next(rows)
        assert laid["input_ids"].shape[0] == 4 and laid["input_ids"].shape[1] <= 64
        real = laid["attention_mask"].bool()
        # the same tokens in the same order, once the row padding is dropped
        assert torch.equal(originals(laid)[real], originals(flat).reshape(-1))
        # each row holds several documents ([CLS] at each start), and nothing marks their borders
        starts = (originals(laid) == 101).sum(dim=1)
        assert (starts >= 1).all() and starts.sum() == len(flat["cu_seqlens"]) - 1
        assert "cu_seqlens" not in laid and "position_ids" not in laid
        assert real.sum() == flat["input_ids"].numel()


def test_documents_in_a_row_see_each_other(corpus_dir):
    rows = loader(corpus_dir, "pack_naive")
    shared = [(b, i) for b in (next(rows) for _ in range(10)) for i in range(4) if (originals(b)[i] == 101).sum() >= 2]
    batch, row = shared[0]
    ids = originals(batch)[row : row + 1]
    mask = batch["attention_mask"][row : row + 1]
    second = int((ids[0] == 101).nonzero()[1])
    torch.manual_seed(0)
    config = NeoBERTConfig.from_preset(
        "tiny", hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    model = NeoBERTModel(config).eval()
    together = model(input_ids=ids, attention_mask=mask).last_hidden_state
    changed = ids.clone()
    changed[0, 1 : second - 1] = 2000  # rewrite the first document only
    after = model(input_ids=changed, attention_mask=mask).last_hidden_state
    assert (after[0, second:] - together[0, second:]).abs().max() > 1e-3  # the second document noticed


def test_an_unknown_sequence_is_named():
    with pytest.raises(ValueError, match=r"sequence must be one of \('truncate', 'pack', 'pack_naive'\), not 'rows'"):
        LoaderConfig("x", sequence="rows")
