"""Pre-training with data workers (`system.num_workers`): bit for bit the run of one process (weights, losses,
held-out loss, packing efficiency), with and without a mask-rate schedule and a batch warm-up; stopped and
resumed with workers it is still that run; and the workers stop with the run, on success or error."""

from __future__ import annotations

import multiprocessing

import pytest
import torch

from neobert.data.workers import MultiWorkerLoader
from neobert.train.data import make_eval_batches
from neobert.train.data import make_loader as real_loader
from neobert.train.pretrain import pretrain
from test_train_pretrain import weights
from test_train_recipe_data import recipe_config, step_records

pytestmark = pytest.mark.usefixtures("one_thread")
PLAIN = ["data.mlm_schedule=[]", "data.batch_warmup_tokens=0", "budget.steps=6", "data.sequence=pack"]
COMPARED = (
    "train/loss",
    "train/accuracy",
    "train/batch_sequences",
    "train/mlm_probability",
    "train/lr",
    "train/tokens",
    "train/packing_efficiency",
)


@pytest.fixture(scope="module")
def corpus(mixed_corpus):
    return mixed_corpus


class Watched:
    """The real loader factory, keeping each loader made and how many worker processes ran during the run."""

    def __init__(self):
        self.loaders, self.most_workers = [], 0

    def __call__(self, config, micro_batch, context):
        loader = real_loader(config, micro_batch, context)
        self.loaders.append(loader)
        if isinstance(loader, MultiWorkerLoader):
            finish = loader.loader.finish  # the main process masks each batch the workers hand over

            def counting_finish(unmasked):
                self.most_workers = max(self.most_workers, len(multiprocessing.active_children()))
                return finish(unmasked)

            loader.loader.finish = counting_finish
        return loader


def run(corpus, out, *extra, **options):
    config = recipe_config(corpus, out, "train.eval_every=3", *extra)
    return pretrain(config, options.pop("make_loader", real_loader), make_eval_batches, **options)


def assert_same_run(got, expected, compared=COMPARED):
    for name, tensor in weights(expected).items():
        assert torch.equal(weights(got)[name], tensor), name
    records, reference = step_records(got.output_dir), step_records(expected.output_dir)
    assert sorted(records) == sorted(reference) and len(reference) >= 6
    for step, record in reference.items():
        for key in compared:
            assert records[step][key] == record[key], (step, key)
    assert got.last_eval == expected.last_eval and "eval/loss" in got.last_eval


@pytest.mark.parametrize("recipe", [[], PLAIN], ids=["schedule-and-warm-up", "plain-packed"])
def test_two_workers_train_exactly_as_one_process(corpus, tmp_path, recipe):
    one = run(corpus, tmp_path / "one", *recipe)
    watched = Watched()
    two = run(corpus, tmp_path / "two", *recipe, "system.num_workers=2", make_loader=watched)
    assert one.status == two.status == "completed"
    assert isinstance(watched.loaders[0], MultiWorkerLoader) and watched.most_workers == 2
    assert multiprocessing.active_children() == []  # stopped when the run ended
    assert_same_run(two, one)


def test_stopped_and_resumed_with_workers_is_the_straight_run(corpus, tmp_path):
    straight = run(corpus, tmp_path / "straight")
    workers = "system.num_workers=2"
    paused = run(corpus, tmp_path / "resumed", workers, stop_at_step=3)  # inside the warm-up, after a rate change
    assert paused.status == "paused" and paused.step == 3
    assert multiprocessing.active_children() == []
    torch.manual_seed(777)
    resumed = run(corpus, tmp_path / "resumed", workers, resume=True)
    assert resumed.status == "completed" and multiprocessing.active_children() == []
    # The loader's packing efficiency counts from the start of the process, with or without workers.
    assert_same_run(resumed, straight, [key for key in COMPARED if key != "train/packing_efficiency"])


def test_workers_stop_when_the_run_fails(corpus, tmp_path):
    def failing_evaluation(config, micro_batch, context):
        assert len(multiprocessing.active_children()) == 2  # the workers are serving the training loader
        raise RuntimeError("evaluation failed")

    config = recipe_config(corpus, tmp_path / "run", "train.eval_every=2", "system.num_workers=2")
    with pytest.raises(RuntimeError, match="evaluation failed"):
        pretrain(config, real_loader, failing_evaluation)
    assert multiprocessing.active_children() == []
