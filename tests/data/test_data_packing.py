"""Sequence formation: truncation as in the paper; packing that never crosses documents and loses no token."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from helpers.data import sample_texts
from neobert.data.loader import LoaderConfig, PretrainingLoader
from neobert.data.masking import IGNORE_INDEX
from neobert.data.sequences import (
    TokenCorpus,
    layout_packed,
    pack_best_fit,
    packing_efficiency,
    pad_rows,
    sequence_units,
    with_specials,
)

CLS, SEP, PAD = 101, 102, 0


@pytest.fixture(scope="module")
def corpus_dir(prepared_corpus):
    return prepared_corpus(
        sample_texts(150, seed=11, long_words=700), max_length=128, heldout_fraction=0.0, shard_tokens=5000
    )


def test_units_truncate_keeps_heads_and_pack_keeps_everything():
    lengths = np.array([5, 126, 127, 300, 0, 1])
    truncate = sequence_units(lengths, "truncate", 128)
    assert truncate.doc.tolist() == [0, 1, 2, 3, 5]
    assert truncate.length.tolist() == [5, 126, 126, 126, 1]
    pack = sequence_units(lengths, "pack", 128)
    assert pack.doc.tolist() == [0, 1, 2, 2, 3, 3, 3, 5]
    assert pack.start.tolist() == [0, 0, 0, 126, 0, 126, 252, 0]
    assert pack.length.tolist() == [5, 126, 126, 1, 126, 126, 48, 1]
    assert (pack.length <= 126).all()
    for doc in range(len(lengths)):
        assert pack.length[pack.doc == doc].sum() == lengths[doc]
    long_only = sequence_units(lengths, "pack", 128, min_document_tokens=128)
    assert sorted(set(long_only.doc.tolist())) == [1, 2, 3]


def test_best_fit_packs_every_item_once_within_capacity():
    rng = np.random.default_rng(0)
    sizes = rng.integers(3, 129, size=1000)
    packs = pack_best_fit(sizes, 128)
    assert sorted(i for pack in packs for i in pack) == list(range(1000))
    assert max(sizes[pack].sum() for pack in packs) <= 128
    # Near the lower bound: items over half a pack each need their own; all need sum / capacity packs.
    lower_bound = max(-(-sizes.sum() // 128), int((sizes > 64).sum()))
    assert len(packs) <= 1.02 * lower_bound


def test_the_loader_layouts_follow_the_model_contract():
    # What `PretrainingLoader.finish` does with a batch's spans: [CLS] span [SEP], then packed or padded.
    ids, cu = with_specials(np.arange(1000, 1010), np.array([3, 7]), CLS, SEP)
    batch = layout_packed(torch.from_numpy(ids), cu)
    assert batch["input_ids"].tolist() == [[CLS, 1000, 1001, 1002, SEP, CLS, *range(1003, 1010), SEP]]
    assert batch["cu_seqlens"].dtype == torch.int32 and batch["cu_seqlens"].tolist() == [0, 5, 14]
    assert batch["max_seqlen"] == 9
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6, 7, 8]]
    padded, attention_mask = pad_rows(torch.from_numpy(ids), cu, PAD, multiple_of=8)
    assert padded.shape == (2, 16)
    assert padded[0, :6].tolist() == [CLS, 1000, 1001, 1002, SEP, PAD]
    assert attention_mask.sum(1).tolist() == [5, 9]


def sequences_of(batch) -> list[list[int]]:
    """The unmasked sequences of a batch (labels restore the masked ids), packed or padded."""
    ids = torch.where(batch["labels"] != IGNORE_INDEX, batch["labels"], batch["input_ids"])
    if "cu_seqlens" in batch:
        bounds = batch["cu_seqlens"].tolist()
        return [ids[0, a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return [row[mask.bool()].tolist() for row, mask in zip(ids, batch["attention_mask"], strict=True)]


def test_one_epoch_of_packs_holds_every_document_token_exactly_once(corpus_dir):
    corpus = TokenCorpus(corpus_dir)
    config = LoaderConfig(str(corpus_dir), sequence="pack", batch_size=4, epochs=1, block_documents=16, window_blocks=4)
    loader = PretrainingLoader(config)
    pieces = []
    for batch in loader:
        assert batch["input_ids"].shape[1] <= 4 * 128
        assert batch["max_seqlen"] <= 128
        for sequence in sequences_of(batch):
            assert sequence[0] == CLS and sequence[-1] == SEP
            assert CLS not in sequence[1:-1] and SEP not in sequence[1:-1]
            pieces.append(tuple(sequence[1:-1]))
    expected = Counter()
    for doc in range(len(corpus)):
        tokens = corpus.document(doc).tolist()
        for start in range(0, len(tokens), 126):
            expected[tuple(tokens[start : start + 126])] += 1
    assert Counter(pieces) == expected
    assert loader.packing_efficiency > 0.9


def test_truncate_scheme_yields_each_documents_head_once(corpus_dir):
    corpus = TokenCorpus(corpus_dir)
    loader = PretrainingLoader(LoaderConfig(str(corpus_dir), batch_size=16, epochs=1))
    heads = Counter(tuple(s[1:-1]) for batch in loader for s in sequences_of(batch))
    assert heads == Counter(tuple(corpus.document(d)[:126].tolist()) for d in range(len(corpus)))
    truncation = packing_efficiency(corpus.document_lengths(), 128)
    assert truncation["truncation_kept_fraction"] < 1.0
    assert truncation["packing_efficiency"] > truncation["truncate_pad_to_max_efficiency"]


def test_packed_batches_keep_documents_apart_in_the_model(corpus_dir):
    """The tiny model on a packed row gives each document the logits it gets alone: no attention across."""
    import neobert

    torch.manual_seed(0)
    model = neobert.NeoBERTForMaskedLM(neobert.NeoBERTConfig.from_preset("tiny")).eval()
    config = LoaderConfig(str(corpus_dir), sequence="pack", batch_size=2, max_length=64)
    batch = next(PretrainingLoader(config))
    with torch.no_grad():
        packed = model(
            input_ids=batch["input_ids"],
            cu_seqlens=batch["cu_seqlens"],
            max_seqlen=batch["max_seqlen"],
            position_ids=batch["position_ids"],
        ).logits
        bounds = batch["cu_seqlens"].tolist()
        assert len(bounds) > 2
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            alone = model(input_ids=batch["input_ids"][:, a:b]).logits
            torch.testing.assert_close(packed[:, a:b], alone, atol=1e-4, rtol=1e-4)
