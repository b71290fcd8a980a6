"""Data workers (data/workers.py): DataLoader processes hand out exactly the batches of one process, masks and
mask-rate changes included; the state is exact, resuming restarts them, and they stop with the loader. A
worker's error reaches the caller as the same named error, and Ctrl-C does not stop them."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
from dataclasses import replace

import pytest
import torch

from helpers.data import sample_texts
from neobert.data.loader import LengthBucket, LoaderConfig, PretrainingLoader, build_loader
from neobert.data.shards import DataError
from neobert.data.workers import MultiWorkerLoader
from test_data_loader import same_batches, take

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes"),  # more than the cores
]

# Packed like the demo (BERT's 80/10/10 with identity scoring, whose draws are three arrays), and padded.
CONFIGS = {
    "pack": dict(
        sequence="pack",
        batch_size=3,
        block_documents=8,
        window_blocks=4,
        mlm_probability=0.2,
        mask_mode="bert",
        mlm_identity_probability=0.1,
    ),
    "truncate-padded": dict(sequence="truncate", batch_size=8, block_documents=8, window_blocks=2),
}
RATES = [0.3] * 5 + [0.15] * 7 + [0.25] * 6


@pytest.fixture(scope="module")
def corpus_dir(prepared_corpus):
    return prepared_corpus(
        sample_texts(200, seed=3, long_every=5, long_words=400),
        max_length=128,
        heldout_fraction=0.05,
        shard_tokens=6000,
    )


@pytest.fixture(autouse=True)
def no_worker_left():
    yield
    assert multiprocessing.active_children() == []  # every test's workers were stopped and joined


def rated(loader, rates: list[float]) -> list[dict]:
    batches = []
    for rate in rates:
        loader.set_mlm_probability(rate)
        batches.append(next(loader))
    return batches


@pytest.mark.parametrize("name", CONFIGS)
def test_workers_give_one_process_batches_through_rate_changes_and_resume(corpus_dir, name):
    config = LoaderConfig(str(corpus_dir), seed=4, **CONFIGS[name])
    single, multi = PretrainingLoader(config), MultiWorkerLoader(PretrainingLoader(config), num_workers=3)
    global_rng = torch.get_rng_state()
    expected = rated(single, RATES[:8])
    assert same_batches(rated(multi, RATES[:8]), expected)
    state = multi.state_dict()
    assert state == single.state_dict()
    expected += rated(single, RATES[8:])
    assert same_batches(rated(multi, RATES[8:]), expected[8:])
    assert multi.state_dict() == single.state_dict()
    assert multi.loader.stats == single.stats and multi.packing_efficiency == single.packing_efficiency
    assert torch.equal(torch.get_rng_state(), global_rng)  # the global RNG, part of a checkpoint, is untouched

    # Back to the saved position on the running loader (its workers had read far past it), and a fresh one.
    multi.load_state_dict(state)
    assert same_batches(rated(multi, RATES[8:]), expected[8:])
    fresh = MultiWorkerLoader(PretrainingLoader(config), num_workers=2)
    fresh.load_state_dict(state)
    assert same_batches(rated(fresh, RATES[8:12]), expected[8:12])
    multi.close()
    fresh.close()
    assert same_batches(rated(fresh, RATES[12:]), expected[12:])  # asked again after close: starts again
    fresh.close()


def test_a_length_mixture_through_workers(corpus_dir):
    mixture = (LengthBucket(0.5, 0), LengthBucket(0.5, 100))
    config = LoaderConfig(str(corpus_dir), batch_size=4, block_documents=8, window_blocks=2, length_mixture=mixture)
    single, multi = build_loader(config, 0, 1), MultiWorkerLoader(build_loader(config, 0, 1), num_workers=2)
    components = []
    for rate in RATES:
        assert same_batches(rated(multi, [rate]), rated(single, [rate]))
        assert multi.loader.last_component == single.last_component
        components.append(single.last_component)
    assert len(set(components)) == 2
    assert multi.state_dict() == single.state_dict()
    multi.close()


def test_finite_epochs_end_where_one_process_ends(corpus_dir):
    config = LoaderConfig(str(corpus_dir), batch_size=8, epochs=1, drop_last=True, block_documents=8)
    single, multi = PretrainingLoader(config), MultiWorkerLoader(PretrainingLoader(config), num_workers=3)
    expected = list(single)
    assert len(expected) > 10 and same_batches(list(multi), expected)
    assert multi.state_dict() == single.state_dict()
    with pytest.raises(StopIteration):
        next(multi)


def test_ctrl_c_leaves_the_workers_to_the_main_process(corpus_dir):
    """The trainer takes SIGINT as "save at the next step boundary", so the workers must keep serving."""
    config = LoaderConfig(str(corpus_dir), **CONFIGS["pack"])
    single, multi = PretrainingLoader(config), MultiWorkerLoader(PretrainingLoader(config), num_workers=2)
    assert same_batches(take(multi, 1), take(single, 1))
    workers = multiprocessing.active_children()
    assert len(workers) == 2
    for worker in workers:
        os.kill(worker.pid, signal.SIGINT)
    assert same_batches(take(multi, 20), take(single, 20))  # well past what they had read ahead
    assert all(worker.is_alive() for worker in workers)
    multi.close()


def test_a_workers_error_is_the_named_error_of_one_process(corpus_dir, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    config = LoaderConfig(str(corpus), batch_size=8, block_documents=8, window_blocks=2)
    single, multi = PretrainingLoader(config), MultiWorkerLoader(PretrainingLoader(config), num_workers=2)
    for path in (corpus / "train").iterdir():  # every shard now differs from what the loaders opened
        os.utime(path, ns=(0, 0))
    with pytest.raises(DataError) as one:
        take(single, 100)
    with pytest.raises(DataError) as two:
        take(multi, 100)
    assert str(two.value) == str(one.value) and "the shard changed" in str(one.value)
    assert "in DataLoader worker" in "".join(two.value.__notes__)  # the worker's traceback, for a bug report
    assert multi._batches is None  # stopped on the error


@pytest.mark.slow  # spawning imports torch in each worker: about 25 s on 2 cores
def test_spawned_workers_rebuild_the_loader(corpus_dir):
    config = replace(LoaderConfig(str(corpus_dir), seed=2, **CONFIGS["pack"]), verify="size")
    single = PretrainingLoader(config)
    take(single, 2)
    multi = MultiWorkerLoader(PretrainingLoader(config), num_workers=2, multiprocessing_context="spawn")
    multi.load_state_dict(single.state_dict())
    assert same_batches(rated(multi, RATES[:6]), rated(single, RATES[:6]))
    multi.close()
