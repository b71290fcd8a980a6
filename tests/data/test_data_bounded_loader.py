"""The loader's order in bounded memory (blocks, windows, a keyed permutation), elastic loader positions, and
shard checksums checked once per corpus."""

from __future__ import annotations

import json
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from helpers.data import prepare_files, sample_texts, write_jsonl
from neobert.data import verified
from neobert.data.loader import LengthBucket, LoaderConfig, PretrainingLoader, build_loader
from neobert.data.order import BlockOrder, KeyedPermutation
from neobert.data.sequences import TokenCorpus
from neobert.data.shards import DataError
from test_data_packing import sequences_of

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "studies"))
from loader_scale import write_corpus  # noqa: E402


@pytest.fixture(scope="module")
def corpus_dir(prepared_corpus):
    return prepared_corpus(
        sample_texts(240, seed=8, long_every=6, long_words=300),
        max_length=128,
        heldout_fraction=0.05,
        shard_tokens=4000,
    )


PACK = dict(sequence="pack", batch_size=3, block_documents=6, window_blocks=4, seed=5)


@pytest.mark.parametrize("size", [1, 2, 7, 64, 1000, 4099])
def test_the_keyed_permutation_is_a_bijection_that_depends_on_its_key(size):
    positions = np.arange(size)
    first = KeyedPermutation(size, (1, 2))(positions)
    assert sorted(first.tolist()) == positions.tolist()
    if size >= 64:
        assert not np.array_equal(first, KeyedPermutation(size, (1, 3))(positions))
        assert not np.array_equal(first, positions)


def test_each_epoch_visits_every_block_once_in_windows_over_several_shards():
    order = BlockOrder([50, 7, 0, 33], block_documents=10, window_blocks=3, key=(4, 0))
    assert order.blocks == 5 + 1 + 0 + 4 and order.windows == 4
    epochs = []
    for epoch in range(2):
        blocks = [block for window in range(order.windows) for block in order.window(epoch, window)]
        documents = Counter((b.shard, d) for b in blocks for d in range(b.first, b.first + b.count))
        assert documents == Counter({(s, d): 1 for s, n in enumerate([50, 7, 0, 33]) for d in range(n)})
        epochs.append([(b.shard, b.first) for b in blocks])
    assert epochs[0] != epochs[1]
    assert any(len({b.shard for b in order.window(0, w)}) > 1 for w in range(order.windows))


def test_the_loader_holds_no_array_over_the_corpus(tmp_path):
    """Python-side allocations (numpy reports its arrays to tracemalloc) while building a loader and its first
    batches: 20 times the documents may not cost more."""
    peaks = []
    for documents in (10_000, 200_000):
        root = tmp_path / str(documents)
        write_corpus(root, documents, shard_tokens=1 << 24)
        config = LoaderConfig(str(root), sequence="pack", batch_size=4, max_length=256, verify="size")
        tracemalloc.start()
        loader = PretrainingLoader(config, rank=3, world_size=4)
        for _ in range(3):
            next(loader)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < peaks[0] + (1 << 20), peaks  # 200,000 documents' int64 starts alone would be 1.6 MB


def global_samples(corpus_dir, world: int, micro: int, rounds: int, state: dict | None = None) -> list:
    """The next `rounds` rounds of the global order as seen by `world` ranks, each `micro` samples a chunk."""
    loaders = [
        PretrainingLoader(LoaderConfig(str(corpus_dir), **{**PACK, "batch_size": micro}), r, world)
        for r in range(world)
    ]
    if state is not None:
        for loader in loaders:
            loader.load_state_dict(json.loads(json.dumps(state)))
    seen = []
    for _ in range(rounds):
        for loader in loaders:
            seen += [tuple(s) for s in sequences_of(next(loader))]
    return seen, loaders


@pytest.mark.parametrize(("before", "after"), [((2, 3), (1, 6)), ((1, 6), (2, 3)), ((2, 3), (3, 2)), ((4, 3), (1, 3))])
def test_a_position_saved_on_one_world_size_continues_the_global_order_on_another(corpus_dir, before, after):
    (world, micro), (new_world, new_micro) = before, after
    straight, _ = global_samples(corpus_dir, world, micro, rounds=40)
    head, loaders = global_samples(corpus_dir, world, micro, rounds=12)
    assert straight[: len(head)] == head
    # Any rank's state, taken at a step boundary, carries the same position for the new setup.
    states = [loader.state_dict() for loader in loaders]
    assert len({json.dumps(s["boundary"]) for s in states}) == 1
    rounds = 28 * world * micro // (new_world * new_micro)  # the samples of the straight run's last 28 rounds
    rest, _ = global_samples(corpus_dir, new_world, new_micro, rounds, states[0])
    assert rest == straight[len(head) :]


def test_elastic_loader_refuses_a_world_size_whose_rounds_do_not_fit(corpus_dir):
    _, loaders = global_samples(corpus_dir, 2, 3, rounds=1)
    state = loaders[0].state_dict()  # 6 samples gone by
    with pytest.raises(DataError, match="sample 6 of the global order.*4 rank"):
        PretrainingLoader(LoaderConfig(str(corpus_dir), **PACK), 0, 4).load_state_dict(state)


def test_checksums_are_recorded_once_and_a_shard_changed_since_is_refused(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "in.jsonl", sample_texts(80, seed=2, long_every=0))
    out = tmp_path / "out"
    prepare_files([tmp_path / "in.jsonl"], out, heldout_fraction=0.0, shard_tokens=1500)
    hashed = []
    real = verified.check_checksum

    def counting(path, expected):
        hashed.append(Path(path).name)
        real(path, expected)

    monkeypatch.setattr(verified, "check_checksum", counting)
    monkeypatch.setattr("neobert.data.shards._checked", {})  # this process has checked nothing yet
    config = LoaderConfig(str(out), batch_size=100, epochs=1)
    next(PretrainingLoader(config))
    shards = len(TokenCorpus(out).entries)
    assert shards > 1 and len(hashed) == 2 * shards  # offsets at opening, tokens on first use
    record = json.loads((out / verified.RECORD).read_text())["files"]
    assert len(record) == 2 * shards

    hashed.clear()
    monkeypatch.setattr("neobert.data.shards._checked", {})  # a new process: only the record vouches
    next(PretrainingLoader(config))
    assert hashed == []

    shard = out / "train" / "shard_00001.tokens.npy"
    array = np.load(shard)
    array[:10] = array[10:20]
    np.save(shard, array)  # same size and header, another content, a new mtime
    with pytest.raises(DataError, match=f"{shard}: checksum mismatch"):
        next(PretrainingLoader(config))
    assert hashed == ["shard_00001.tokens.npy"]


def test_a_shard_changed_under_a_running_loader_is_named(tmp_path):
    out = tmp_path / "copy"
    write_jsonl(tmp_path / "in.jsonl", sample_texts(60, seed=1, long_every=0))
    prepare_files([tmp_path / "in.jsonl"], out, heldout_fraction=0.0, shard_tokens=1500)
    loader = PretrainingLoader(LoaderConfig(str(out), batch_size=2, block_documents=2, window_blocks=1))
    next(loader)
    offsets = out / "train" / "shard_00000.offsets.npy"
    offsets.write_bytes(offsets.read_bytes())  # rewritten in place: same bytes, a new mtime
    with pytest.raises(DataError, match="shard_00000.offsets.npy: the shard changed.*while training"):
        for _ in range(200):
            next(loader)


def test_the_scale_benchmark_writes_the_real_format_and_measures_it(tmp_path):
    from loader_scale import SHARD_TOKENS, measure

    tokens = write_corpus(tmp_path / "corpus", 3000, shard_tokens=SHARD_TOKENS // 256)
    corpus = TokenCorpus(tmp_path / "corpus", verify="size")
    assert len(corpus) == 3000 and len(corpus.entries) > 1
    lengths = corpus.document_lengths()
    assert int(lengths.sum()) == tokens and lengths.min() >= 1 and 500 < lengths.mean() < 850
    record = measure(tmp_path / "corpus", ranks=2)
    assert record["peak_rss_mb"] > 0 and record["startup_s"] > 0 and record["batches_per_s"] > 0


def test_a_length_mixture_continues_on_another_world_size_with_the_same_micro_batch(corpus_dir):
    mixture = dict(PACK, batch_size=2, length_mixture=(LengthBucket(0.5, 0), LengthBucket(0.5, 200)))

    def loaders(world, micro=2):
        return [
            build_loader(LoaderConfig(str(corpus_dir), **{**mixture, "batch_size": micro}), r, world)
            for r in range(world)
        ]

    def rounds(group, count):
        return [tuple(s) for _ in range(count) for loader in group for s in sequences_of(next(loader))]

    straight = rounds(loaders(2), 20)
    two = loaders(2)
    head = rounds(two, 8)
    state = json.loads(json.dumps(two[0].state_dict()))
    one = loaders(1)[0]
    one.load_state_dict(state)
    assert head + rounds([one], 24) == straight
    with pytest.raises(DataError, match="draws its bucket per micro-batch"):
        loaders(1, micro=4)[0].load_state_dict(state)
