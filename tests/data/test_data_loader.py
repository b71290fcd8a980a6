"""The loader: seeded shuffling, rank split, exact resume mid-epoch, the phase-2 length mixture."""

from __future__ import annotations

import copy
import json
from collections import Counter

import pytest
import torch

from helpers.data import sample_texts
from neobert.data.loader import (
    PHASE2_LENGTH_MIXTURE,
    LengthBucket,
    LoaderConfig,
    MixtureLoader,
    PretrainingLoader,
    build_loader,
)
from neobert.data.sequences import TokenCorpus, sequence_units
from neobert.data.shards import DataError
from neobert.data.workers import MultiWorkerLoader
from test_data_packing import sequences_of


@pytest.fixture(scope="module")
def corpus_dir(prepared_corpus):
    return prepared_corpus(
        sample_texts(200, seed=3, long_every=5, long_words=400),
        max_length=128,
        heldout_fraction=0.05,
        shard_tokens=6000,
    )


def same_batches(first: list[dict], second: list[dict]) -> bool:
    if len(first) != len(second):
        return False
    for a, b in zip(first, second, strict=True):
        if a.keys() != b.keys():
            return False
        for key in a:
            same = torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key]
            if not same:
                return False
    return True


def take(loader, count: int) -> list[dict]:
    return [next(loader) for _ in range(count)]


CONFIGS = {
    "truncate-padded": dict(sequence="truncate", batch_size=8),
    "pack": dict(sequence="pack", batch_size=3, block_documents=8, window_blocks=4),
}


# Naive packing's rows are the packs of `pack` laid out otherwise: the same order and state.
WITH_NAIVE_PACKING = {**CONFIGS, "pack_naive": {**CONFIGS["pack"], "sequence": "pack_naive"}}


@pytest.mark.parametrize("name", WITH_NAIVE_PACKING)
def test_state_round_trip_gives_the_same_next_batches_across_epochs(corpus_dir, name):
    config = LoaderConfig(str(corpus_dir), seed=4, **WITH_NAIVE_PACKING[name])
    loader = PretrainingLoader(config, rank=1, world_size=2)
    take(loader, 23)  # past the first epoch boundary for every scheme here
    state = json.loads(json.dumps(loader.state_dict()))  # survives a checkpoint file
    expected = take(loader, 25)
    assert loader.epoch >= 1
    resumed = PretrainingLoader(config, rank=1, world_size=2)
    resumed.load_state_dict(state)
    assert same_batches(take(resumed, 25), expected)


def test_a_fresh_loader_replays_nothing_and_seeds_change_the_order(corpus_dir):
    config = LoaderConfig(str(corpus_dir), batch_size=8)
    first, again = take(PretrainingLoader(config), 5), take(PretrainingLoader(config), 5)
    assert same_batches(first, again)
    other = take(PretrainingLoader(LoaderConfig(str(corpus_dir), batch_size=8, seed=1)), 5)
    assert not same_batches(first, other)
    loader = PretrainingLoader(config)
    take(loader, 5)
    assert not same_batches(take(loader, 5), first)


@pytest.mark.parametrize("name", CONFIGS)
def test_rank_split_covers_every_sequence_once_per_epoch(corpus_dir, name):
    world = 3
    seen = Counter()
    for rank in range(world):
        config = LoaderConfig(str(corpus_dir), epochs=1, seed=2, **CONFIGS[name])
        for batch in PretrainingLoader(config, rank=rank, world_size=world):
            seen.update(tuple(s) for s in sequences_of(batch))
    reference = Counter()
    for batch in PretrainingLoader(LoaderConfig(str(corpus_dir), epochs=1, **CONFIGS[name])):
        reference.update(tuple(s) for s in sequences_of(batch))
    assert seen == reference
    lengths = TokenCorpus(corpus_dir).document_lengths()
    assert sum(reference.values()) == len(sequence_units(lengths, CONFIGS[name]["sequence"], 128))


def test_drop_last_and_heldout_split(corpus_dir):
    heldout = TokenCorpus(corpus_dir, "heldout")
    config = LoaderConfig(str(corpus_dir), split="heldout", batch_size=4, epochs=1, drop_last=True)
    batches = list(PretrainingLoader(config))
    assert len(batches) == len(heldout) // 4
    assert all(b["input_ids"].shape[0] == 4 for b in batches)


def test_mixture_draws_buckets_with_their_probabilities_and_filters_lengths(corpus_dir):
    config = LoaderConfig(
        str(corpus_dir),
        sequence="pack",
        batch_size=2,
        max_length=128,
        length_mixture=(LengthBucket(0.2, 0), LengthBucket(0.8, 300)),
    )
    loader = build_loader(config, rank=0, world_size=1)
    assert isinstance(loader, MixtureLoader)
    corpus = loader.corpus
    long_chunks = set()
    for doc in range(len(corpus)):
        if len(corpus.document(doc)) + 2 >= 300:
            tokens = corpus.document(doc).tolist()
            long_chunks.update(tuple(tokens[s : s + 126]) for s in range(0, len(tokens), 126))
    assert long_chunks
    draws = Counter()
    for _ in range(300):
        batch = next(loader)
        draws[loader.last_component] += 1
        if loader.last_component == 1:
            assert all(tuple(s[1:-1]) in long_chunks for s in sequences_of(batch))
    assert 0.72 < draws[1] / 300 < 0.88
    state = copy.deepcopy(loader.state_dict())
    expected = take(loader, 6)
    resumed = build_loader(config)
    resumed.load_state_dict(state)
    assert same_batches(take(resumed, 6), expected)


def test_phase2_mixture_is_plain_configuration():
    config = LoaderConfig.from_dict(
        {
            "path": "data/demo",
            "sequence": "pack",
            "max_length": 4096,
            "batch_size": 8,
            "length_mixture": [
                {"probability": 0.2},
                {"probability": 0.4, "min_document_tokens": 1024},
                {"probability": 0.4, "min_document_tokens": 2048},
            ],
            "mlm_probability": 0.2,
            "mask_mode": "all",
        }
    )
    assert config.length_mixture == PHASE2_LENGTH_MIXTURE


def test_state_from_another_setup_is_refused(corpus_dir):
    loader = PretrainingLoader(LoaderConfig(str(corpus_dir), batch_size=8), rank=0, world_size=2)
    take(loader, 3)
    state = loader.state_dict()
    with pytest.raises(DataError, match="differs in: config"):
        PretrainingLoader(LoaderConfig(str(corpus_dir), batch_size=8, seed=1), rank=0, world_size=2).load_state_dict(
            state
        )
    with pytest.raises(DataError, match="differs in: .*max_length"):
        PretrainingLoader(LoaderConfig(str(corpus_dir), batch_size=8, max_length=64), 0, 2).load_state_dict(state)
    # 3 batches of 8 on 2 ranks end at sample 48: 5 ranks x 8 samples do not divide it, so no step boundary is there.
    with pytest.raises(DataError, match="sample 48 of the global order.*5 rank"):
        PretrainingLoader(LoaderConfig(str(corpus_dir), batch_size=8), rank=0, world_size=5).load_state_dict(state)


def test_too_few_long_documents_for_a_bucket_is_named(corpus_dir):
    config = LoaderConfig(str(corpus_dir), sequence="pack", min_document_tokens=10**6)
    with pytest.raises(DataError, match="at least 1000000 tokens"):
        PretrainingLoader(config)


def test_dataloader_workers_give_the_same_batches_and_resume_state(corpus_dir):
    config = LoaderConfig(str(corpus_dir), sequence="pack", batch_size=3, block_documents=8, window_blocks=4, seed=9)
    reference = PretrainingLoader(config)
    expected = take(reference, 10)
    multi = MultiWorkerLoader(PretrainingLoader(config), num_workers=2)
    got = []
    for batch in multi:
        got.append(batch)
        if len(got) == 7:
            break
    state = multi.state_dict()
    for batch in multi:  # a second pass continues where the first stopped
        got.append(batch)
        if len(got) == 10:
            break
    assert same_batches(got, expected)
    assert multi.state_dict() == reference.state_dict()
    resumed = PretrainingLoader(config)
    resumed.load_state_dict(state)
    assert same_batches(take(resumed, 3), expected[7:])
