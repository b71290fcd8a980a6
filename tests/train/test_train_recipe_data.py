"""The mask-rate schedule and the batch-size warm-up (train/ramp.py) on the real loader and a prepared corpus:
each step masks at its scheduled rate and takes its planned number of sequences, the global order does not
depend on the world size, a run resumed in the middle of both is bit for bit the uninterrupted one, and bad
settings get named errors before training."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
import torch

from neobert.cli import main
from neobert.data.loader import PretrainingLoader
from neobert.data.masking import IGNORE_INDEX
from neobert.train.config import BatchSplitError, batch_split, load_config
from neobert.train.data import loader_config, make_eval_batches
from neobert.train.data import make_loader as real_loader
from neobert.train.distributed import DistributedContext
from neobert.train.metrics import read_jsonl
from neobert.train.phase import plan_phase
from neobert.train.pretrain import pretrain
from neobert.train.ramp import BatchRamp, mlm_probability_at
from test_commands import TINY
from test_train_pretrain import weights

pytestmark = pytest.mark.usefixtures("one_thread")
CONTEXT = DistributedContext()

# Global batches of 2, 2, 4, 6, then 8 sequences of 32 tokens: B0 = 2 grows to B = 8 over 384 token slots (a
# share of 128 tokens, 4 sequences, a stage). The token budget ends with step 8 (46 sequences).
SIZES = [2, 2, 4, 6, 8, 8, 8, 8]
SCHEDULE = [[0.0, 0.3], [0.25, 0.2], [0.625, 0.15]]
RATES = [0.3, 0.3, 0.2, 0.2, 0.2, 0.15, 0.15, 0.15]  # progress step / 8 at the start of each step
RECIPE = [
    "data.batch_size=8",
    "data.batch_warmup_start=2",
    "data.batch_warmup_tokens=384",
    f"data.mlm_schedule={SCHEDULE}",
    f"budget.tokens={46 * 32 - 10}",
    "data.eval_batches=1",
    "train.eval_every=1000",
    "train.checkpoint_every=1000",
    "system.device=cpu",
]


@pytest.fixture(scope="module")
def corpus(mixed_corpus):
    return mixed_corpus


def recipe_config(corpus, out, *extra):
    return load_config([], [*TINY, *RECIPE, f"data.path={corpus}", f"system.output_dir={out}", *extra])


class Recording:
    """The real loader, keeping every batch it hands out and the rate it was told before each."""

    def __init__(self, loader):
        self.loader, self.batches, self.rates = loader, [], []
        self.rate = None

    def __next__(self):
        batch = next(self.loader)
        self.batches.append(batch)
        self.rates.append(self.rate)
        return batch

    def __iter__(self):
        return self

    def set_mlm_probability(self, rate):
        self.rate = rate
        self.loader.set_mlm_probability(rate)

    def state_dict(self):
        return self.loader.state_dict()

    def load_state_dict(self, state):
        self.loader.load_state_dict(state)


def step_records(out):
    return {r["step"]: r for r in read_jsonl(out / "metrics.jsonl") if "train/loss" in r}


def test_the_batch_plan_matches_a_step_by_step_count():
    for start, stages, tokens, length in [(2, 4, 384, 32), (1, 6, 1000, 7), (3, 2, 50, 100), (4, 1, 999, 8)]:
        ramp = BatchRamp(start, start * stages, tokens, length)
        taken = 0
        for step in range(60):
            size = ramp.size_after(taken * length)
            assert (ramp.size(step), ramp.sequences_before(step)) == (size, taken), (start, stages, step)
            assert size == start * stages or taken * length < tokens  # full from T tokens on
            taken += size
        for budget in (1, tokens, tokens + 1, 5 * tokens + 3):
            steps, taken = 0, 0
            while taken * length < budget:
                taken, steps = taken + ramp.size_after(taken * length), steps + 1
            assert ramp.steps_for_tokens(budget) == steps
    assert [BatchRamp(2, 8, 384, 32).size(step) for step in range(8)] == SIZES
    assert [mlm_probability_at(SCHEDULE, 0.5, step / 8) for step in range(8)] == RATES
    assert mlm_probability_at([], 0.2, 0.7) == 0.2


def test_each_step_takes_its_planned_batch_at_its_scheduled_mask_rate(corpus, tmp_path):
    config = recipe_config(corpus, tmp_path / "run", "train.warmup_steps=2")
    assert config.total_steps() == 8 and batch_split(config.data, config.train, 1) == (2, 4)
    loaders = []

    def make_loader(config, micro_batch, context):
        loaders.append(Recording(real_loader(config, micro_batch, context)))
        return loaders[0]

    result = pretrain(config, make_loader)
    assert result.status == "completed" and result.step == 8
    records = step_records(tmp_path / "run")
    assert [records[s]["train/batch_sequences"] for s in range(1, 9)] == SIZES
    assert [records[s]["train/mlm_probability"] for s in range(1, 9)] == RATES

    # Each step's micro-batches are those of a loader masking at the scheduled rate throughout, at the same
    # place in the global order; and the share of maskable tokens masked follows the rate.
    recorded, plain = loaders[0], loader_config(config, "train", 2)
    assert len(recorded.batches) == sum(SIZES) // 2
    first = 0
    for step, (size, rate) in enumerate(zip(SIZES, RATES, strict=True)):
        mine = recorded.batches[first : first + size // 2]
        assert recorded.rates[first : first + size // 2] == [rate] * (size // 2)
        reference = PretrainingLoader(replace(plain, mlm_probability=rate))
        reference.skip(first)
        for batch in mine:
            expected = next(reference)
            assert all(torch.equal(batch[key], expected[key]) for key in expected), step
        masked = sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in mine)
        maskable = sum(int(b["attention_mask"].sum()) - 2 * len(b["input_ids"]) for b in mine)
        assert abs(masked / maskable - rate) < 4 * (rate * (1 - rate) / maskable) ** 0.5, (step, masked, maskable)
        first += size // 2

    # The held-out rule is not the training recipe's: the same batches with or without the schedules.
    context = CONTEXT
    plain_config = recipe_config(corpus, tmp_path / "x", "data.mlm_schedule=[]", "data.batch_warmup_tokens=0")
    held_out, reference = make_eval_batches(config, 8, context), make_eval_batches(plain_config, 8, context)
    assert len(held_out) == len(reference) == 1
    assert all(torch.equal(a[k], b[k]) for a, b in zip(held_out, reference, strict=True) for k in a)


def test_a_run_resumed_inside_the_warm_up_and_between_mask_rates_is_bit_for_bit(corpus, tmp_path):
    straight = pretrain(recipe_config(corpus, tmp_path / "straight"), real_loader)
    config = recipe_config(corpus, tmp_path / "resumed")
    paused = pretrain(config, real_loader, stop_at_step=3)  # next: a batch of 6, after one rate change
    assert paused.status == "paused" and paused.step == 3
    # A decay branch from there: a token budget counts the warm-up's small steps (2 + 2 + 4 + 6 sequences make
    # 4 steps, where the full batch of 8 would make 2), so the branch has a step left, and none at 3 steps.
    branch = [f"phase.from_checkpoint={paused.checkpoint}", "train.schedule=wsd", "train.warmup_steps=1"]
    start = plan_phase(recipe_config(corpus, tmp_path / "branch", *branch, f"budget.tokens={14 * 32 - 10}"), CONTEXT)
    assert start.step == 3
    with pytest.raises(ValueError, match="at step 3, at or past the end of this run \\(3 steps by budget.tokens"):
        plan_phase(recipe_config(corpus, tmp_path / "late", *branch, f"budget.tokens={8 * 32 - 10}"), CONTEXT)
    torch.manual_seed(777)
    resumed = pretrain(config, real_loader, resume=True)
    assert resumed.status == "completed" and resumed.step == 8
    for name, tensor in weights(straight).items():
        assert torch.equal(weights(resumed)[name], tensor), name
    expected, got = step_records(tmp_path / "straight"), step_records(tmp_path / "resumed")
    assert sorted(got) == list(range(1, 9))
    for step, record in expected.items():
        for key in ("train/loss", "train/batch_sequences", "train/mlm_probability", "train/lr"):
            assert got[step][key] == record[key], (step, key)


def global_steps(corpus, world: int, micro: int) -> list[Counter]:
    """Per step of the warm-up plan, the (sequence, labels) pairs the ranks take together."""
    config = recipe_config(corpus, "unused")
    ramp, plain = config.data.batch_ramp(), loader_config(config, "train", micro)
    loaders = [PretrainingLoader(plain, rank, world) for rank in range(world)]
    steps = []
    for step, rate in enumerate(RATES):
        seen = Counter()
        for loader in loaders:
            loader.set_mlm_probability(rate)
            for _ in range(ramp.size(step) // (world * micro)):
                batch = next(loader)
                for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
                    real = mask.bool()
                    seen[(tuple(ids[real].tolist()), tuple(labels[real].tolist()))] += 1
        steps.append(seen)
    return steps


def test_the_warm_up_takes_the_same_sequences_whatever_the_world_size(corpus):
    reference = global_steps(corpus, world=1, micro=2)
    assert [sum(step.values()) for step in reference] == SIZES
    assert global_steps(corpus, world=1, micro=1) == reference
    assert global_steps(corpus, world=2, micro=1) == reference
    assert len(set().union(*reference)) == sum(SIZES)  # no sequence twice


def test_bad_schedules_and_warm_ups_are_named_before_training(corpus, tmp_path, capsys):
    cases = {
        "data.mlm_schedule=[[0.0, 0.3], [0.5, 1.0]]": "data.mlm_schedule\\[1\\]: the mask probability must lie in",
        "data.mlm_schedule=[[0.0, 0.0]]": "mask probability must lie in \\(0, 1\\), got 0.0",
        "data.mlm_schedule=[[0.0, 0.3], [0.5, 0.2], [0.5, 0.1]]": "progress must strictly increase: 0.5 then 0.5",
        "data.mlm_schedule=[[0.0, 0.3], [0.6, 0.2], [0.4, 0.1]]": "progress must strictly increase: 0.6 then 0.4",
        "data.mlm_schedule=[[0.1, 0.3]]": "must start at progress 0.0",
        "data.mlm_schedule=[[0.0, 0.3], [1.0, 0.2]]": "progress must lie in \\[0, 1\\)",
        "data.batch_warmup_start=3": "data.batch_warmup_start \\(3 sequences\\) does not divide data.batch_size \\(8",
        "data.batch_warmup_tokens=-1": "data.batch_warmup_tokens must be non-negative, got -1",
        "data.batch_warmup_start=null": "needs data.batch_warmup_start",
    }
    for override, message in cases.items():
        with pytest.raises(ValueError, match=message):
            recipe_config(corpus, tmp_path / "bad", override)
    config = recipe_config(corpus, tmp_path / "bad", "data.micro_batch_size=2")
    with pytest.raises(BatchSplitError, match="first batch of 2 sequences .* over 2 processes x micro-batches of 2"):
        batch_split(config.data, config.train, 2)
    assert batch_split(config.data, config.train, 1) == (2, 4)
    assert not (tmp_path / "bad").exists()

    common = ["pretrain", "demo", *TINY, *RECIPE, f"data.path={corpus}", f"system.output_dir={tmp_path / 'cli'}"]
    assert main([*common, "data.mlm_schedule=[[0.0, 1.5]]"]) == 2
    assert "data.mlm_schedule[0]: the mask probability must lie in (0, 1)" in capsys.readouterr().err
    assert main([*common, "data.batch_warmup_start=5"]) == 2
    assert "does not divide data.batch_size" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()


@pytest.mark.slow
def test_two_processes_inside_the_warm_up_resumed_on_one_end_as_one_process(corpus, tmp_path):
    """torchrun (gloo): two processes take the first three steps of the warm-up, one process the rest; the
    losses, batch sizes, mask rates and weights are those of one process throughout."""
    from test_train_elastic import TORCHRUN
    from test_train_real_loader import final_weights, neobert

    arguments = [*TINY, *RECIPE, f"data.path={corpus}"]
    single = neobert(*arguments, f"system.output_dir={tmp_path / 'one'}")
    assert single.returncode == 0, single.stderr
    paused = neobert(*arguments, f"system.output_dir={tmp_path / 'two'}", "--stop-at-step", "3", launcher=TORCHRUN)
    assert paused.returncode == 0, paused.stderr
    resumed = neobert(*arguments, f"system.output_dir={tmp_path / 'two'}", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "processes: 2 -> 1" in resumed.stdout

    expected, got = step_records(tmp_path / "one"), step_records(tmp_path / "two")
    assert sorted(got) == sorted(expected) == list(range(1, 9))
    for step, record in expected.items():
        assert got[step]["train/loss"] == pytest.approx(record["train/loss"], rel=1e-5), step
        for key in ("train/batch_sequences", "train/mlm_probability", "train/tokens"):
            assert got[step][key] == record[key], (step, key)
    reference = final_weights(tmp_path / "one")
    for name, tensor in final_weights(tmp_path / "two").items():
        torch.testing.assert_close(tensor, reference[name], atol=1e-5, rtol=1e-5)
