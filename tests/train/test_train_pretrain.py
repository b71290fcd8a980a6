"""The pre-training loop on a synthetic in-memory loader: exact resume, accumulation, signals, NaN, budgets."""

import math
import os
import signal

import pytest
import torch
from transformers import AutoModelForMaskedLM

from neobert.train import budget as budget_module
from neobert.train.checkpoint import CheckpointError, find_latest_good, read_checkpoint
from neobert.train.config import PRESET_ROOT, PretrainConfig, load_config
from neobert.train.metrics import read_jsonl
from neobert.train.pretrain import PretrainResult, TrainingDiverged, build_model, pretrain

LENGTH = 16
CONFIGS = PRESET_ROOT
VOCAB = 2000  # a small vocabulary keeps the embedding and decoder (most of a tiny model) cheap
CLS, SEP, MASK = 101, 102, 103


pytestmark = pytest.mark.usefixtures("one_thread")


class SyntheticLoader:
    """Random token rows with 20% all-[MASK] masking, a pure function of (seed, step): the global batch of
    step s is the same whatever the world size and micro-batch, each process taking its own rows."""

    def __init__(self, config: PretrainConfig, micro_batch: int, rank: int = 0, world_size: int = 1, on_batch=None):
        self.seed, self.micro, self.rank = config.data.seed, micro_batch, rank
        self.length = config.data.max_length
        self.global_rows = config.data.global_batch_sequences
        self.accumulation = self.global_rows // world_size // micro_batch
        self.served = 0
        self.on_batch = on_batch

    def global_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        ids = torch.randint(1000, VOCAB, (self.global_rows, self.length), generator=generator)
        ids[:, 0], ids[:, -1] = CLS, SEP
        selected = torch.rand(ids.shape, generator=generator) < 0.2
        selected[:, 0] = selected[:, -1] = False
        labels = torch.where(selected, ids, torch.full_like(ids, -100))
        return ids.masked_fill(selected, MASK), labels

    def __iter__(self):
        return self

    def __next__(self):
        if self.on_batch is not None:
            self.on_batch(self.served)
        step, micro_index = divmod(self.served, self.accumulation)
        ids, labels = self.global_batch(step)
        start = self.rank * self.accumulation * self.micro + micro_index * self.micro
        rows = slice(start, start + self.micro)
        self.served += 1
        return {"input_ids": ids[rows], "attention_mask": torch.ones_like(ids[rows]), "labels": labels[rows]}

    def state_dict(self):
        return {"served": self.served}

    def load_state_dict(self, state):
        self.served = state["served"]


def make_loader(config, micro_batch, context):
    return SyntheticLoader(config, micro_batch, context.rank, context.world_size)


def make_eval_batches(config, micro_batch, context):
    held_out = SyntheticLoader(config, micro_batch, context.rank, context.world_size)
    held_out.seed += 999
    return iter(held_out)


class FakeClock:
    """The run's clock (train/budget.py), moved by the test (a batch "takes" what the test says), so that a wall-clock
    budget behaves the same on a busy machine as on an idle one."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def fake_clock(monkeypatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(budget_module, "time", clock)
    return clock


def tiny_config(out, *overrides) -> PretrainConfig:
    base = [
        "model.preset=tiny",
        "model.overrides={hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2,"
        f" intermediate_size: 64, max_length: 64, vocab_size: {VOCAB}}}",
        f"data.max_length={LENGTH}",
        "data.batch_size=4",
        "data.eval_batches=2",
        "train.lr=3e-3",
        "train.warmup_steps=2",
        "train.log_every=1",
        "train.eval_every=1000",
        "train.checkpoint_every=1000",
        "train.keep_last=2",
        "system.device=cpu",
        "system.precision=fp32",  # pinned: `auto` measures the host
        f"system.output_dir={out}",
        "system.log_sinks=[jsonl]",
        "system.progress_bar=false",
        "budget.steps=6",
    ]
    return load_config([], base + list(overrides))


def weights(result: PretrainResult) -> dict[str, torch.Tensor]:
    return read_checkpoint(result.checkpoint).model_state


def losses(out) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in read_jsonl(out / "metrics.jsonl") if "train/loss" in r}


def test_resume_is_bit_for_bit_on_cpu(tmp_path):
    straight = pretrain(tiny_config(tmp_path / "a"), make_loader)
    assert straight.status == "completed" and straight.step == 6

    first = pretrain(tiny_config(tmp_path / "b"), make_loader, stop_at_step=3)
    assert first.status == "paused" and first.step == 3 and read_checkpoint(first.checkpoint).step == 3
    torch.manual_seed(12345)  # whatever happens in between must not matter: RNG states come from the checkpoint
    second = pretrain(tiny_config(tmp_path / "b"), make_loader, resume=True)
    assert second.status == "completed" and second.step == 6

    for name, tensor in weights(straight).items():
        assert torch.equal(tensor, weights(second)[name]), name
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    trainer_state = read_checkpoint(second.checkpoint).trainer_state
    assert trainer_state["scheduler"]["last_epoch"] == 6


def test_accumulation_equals_the_large_batch(tmp_path):
    whole = pretrain(tiny_config(tmp_path / "whole", "budget.steps=3"), make_loader)
    split = pretrain(tiny_config(tmp_path / "split", "budget.steps=3", "data.micro_batch_size=2"), make_loader)
    for step, loss in losses(tmp_path / "whole").items():
        assert losses(tmp_path / "split")[step] == pytest.approx(loss, rel=1e-5)
    for name, tensor in weights(whole).items():
        torch.testing.assert_close(weights(split)[name], tensor, atol=2e-6, rtol=1e-5)
    # The two runs did differ in how they were fed: one vs two forward passes a step.
    assert read_checkpoint(split.checkpoint).rank_state["loader"]["served"] == 6
    assert read_checkpoint(whole.checkpoint).rank_state["loader"]["served"] == 3


def test_metrics_eval_and_loss_curve_are_written(tmp_path):
    result = pretrain(tiny_config(tmp_path, "train.eval_every=3"), make_loader, make_eval_batches)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    train = [r for r in records if "train/loss" in r]
    evals = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6] and [r["step"] for r in evals] == [3, 6]
    assert train[0]["train/lr"] == pytest.approx(1.5e-3)  # warmup: half the peak on the first of two steps
    assert all(r["train/tokens_per_s"] > 0 and 0 <= r["train/accuracy"] <= 1 for r in train)
    assert train[-1]["train/tokens"] == 6 * 4 * LENGTH and train[0]["train/packing_efficiency"] == 1.0
    assert result.last_eval["eval/masked_tokens"] > 0 and result.last_eval["step"] == 6
    assert (tmp_path / "loss_curve.png").stat().st_size > 0 and (tmp_path / "config.yaml").exists()


def test_sigterm_saves_a_checkpoint_and_stops_cleanly(tmp_path):
    def send_sigterm(served):
        if served == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    def loader_with_signal(config, micro_batch, context):
        return SyntheticLoader(config, micro_batch, on_batch=send_sigterm)

    previous = signal.getsignal(signal.SIGTERM)
    result = pretrain(tiny_config(tmp_path), loader_with_signal)
    assert result.status == "interrupted" and result.step == 3  # the step in flight finishes first
    assert read_checkpoint(find_latest_good(tmp_path / "checkpoints")).step == 3
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers are put back
    resumed = pretrain(tiny_config(tmp_path), make_loader, resume=True)
    assert resumed.status == "completed" and resumed.step == 6


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config(tmp_path, "train.checkpoint_every=2")
    model = build_model(config)
    calls = {"n": 0}

    def poison_from_the_fourth_step(module, inputs, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] >= 4 else output

    # The final norm's output feeds the loss (the training decoder is fused with it and has no forward of its own).
    model.model.layer_norm.register_forward_hook(poison_from_the_fourth_step)
    with pytest.raises(TrainingDiverged, match="NaN or infinite by step 4.*last good checkpoint is step 2"):
        pretrain(config, make_loader, model=model)
    good = find_latest_good(tmp_path / "checkpoints")
    assert read_checkpoint(good).step == 2
    assert all(torch.isfinite(t).all() for t in read_checkpoint(good).model_state.values())


def test_hours_budget_fixes_the_step_count_from_measured_speed(tmp_path, fake_clock):
    config = tiny_config(
        tmp_path, "budget.hours=0.0006", "budget.calibration_steps=3", "train.warmup_steps=0", "train.log_every=1000"
    )

    def make_loader(config, micro_batch, context):  # a step takes 0.1 s on the loop's clock
        return SyntheticLoader(
            config, micro_batch, on_batch=lambda served: setattr(fake_clock, "now", fake_clock.now + 0.1)
        )

    result = pretrain(config, make_loader)
    assert result.status == "completed" and result.schedule_fraction == 1.0
    scheduler = read_checkpoint(result.checkpoint).trainer_state["scheduler"]
    total = scheduler["lr_lambdas"][0]["total_steps"]
    # 0.0006 h is 2.16 s: 21 steps of 0.1 s. The run ends at the estimated step count or when the time is up,
    # whichever comes first: here both, within a step.
    assert total is not None and abs(total - 21) <= 1 and result.step <= total
    elapsed = read_checkpoint(result.checkpoint).trainer_state["elapsed_seconds"]
    assert elapsed == pytest.approx(0.1 * result.step, abs=1e-9) and 2.16 - 0.2 <= elapsed <= 2.16 + 0.1


def test_a_fresh_run_refuses_a_folder_with_checkpoints(tmp_path):
    pretrain(tiny_config(tmp_path, "budget.steps=3", "train.warmup_steps=1"), make_loader)
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        pretrain(tiny_config(tmp_path), make_loader)
    with pytest.raises(ValueError, match="does not divide"):
        pretrain(tiny_config(tmp_path / "other", "data.micro_batch_size=3"), make_loader)


def ddp_worker(rank: int, port: int, out: str, strategy: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    pretrain(tiny_config(out, "budget.steps=4", f"system.distributed={strategy}"), make_loader, make_eval_batches)


@pytest.mark.parametrize("strategy", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path, strategy):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(ddp_worker, args=(port, str(tmp_path / "two"), strategy), nprocs=2, join=True)
    one = pretrain(tiny_config(tmp_path / "one", "budget.steps=4"), make_loader, make_eval_batches)
    two_losses, one_losses = losses(tmp_path / "two"), losses(tmp_path / "one")
    assert sorted(two_losses) == [1, 2, 3, 4]
    for step, loss in one_losses.items():
        assert two_losses[step] == pytest.approx(loss, rel=1e-5)
    two = read_checkpoint(tmp_path / "two" / "checkpoints", rank=1)
    assert two.world_size == 2 and two.rank_state["loader"]["served"] == 4
    for name, tensor in weights(one).items():
        # Adam divides by the root of tiny second moments, which magnifies float-order differences a little.
        torch.testing.assert_close(two.model_state[name], tensor, atol=1e-5, rtol=1e-4)
    evals = [r for r in read_jsonl(tmp_path / "two" / "metrics.jsonl") if "eval/loss" in r]
    assert evals[-1]["eval/loss"] == pytest.approx(one.last_eval["eval/loss"], rel=1e-5)
    assert evals[-1]["eval/masked_tokens"] == one.last_eval["eval/masked_tokens"]


def test_resume_honours_a_changed_learning_rate_and_budget(tmp_path, capsys):
    pretrain(tiny_config(tmp_path), make_loader, stop_at_step=3)
    capsys.readouterr()
    result = pretrain(tiny_config(tmp_path, "budget.steps=10", "train.lr=1e-3"), make_loader, resume=True)
    assert result.step == 10
    assert "budget.steps: 6 -> 10" in capsys.readouterr().out
    lr_at = {r["step"]: r["train/lr"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "train/lr" in r}
    # Step 4 is the first after resuming: 1e-3 x cosine at (3 - 2 warmup) / (9 - 2) of the decay.
    assert lr_at[4] == pytest.approx(1e-3 * (0.1 + 0.45 * (1 + math.cos(math.pi / 7))))
    assert read_checkpoint(result.checkpoint).trainer_state["scheduler"]["lr_lambdas"][0]["total_steps"] == 10


def test_the_demo_preset_runs_a_few_steps(tmp_path):
    config = load_config(
        CONFIGS / "demo.yaml",
        [
            f"system.output_dir={tmp_path}",
            "budget.steps=3",
            "train.warmup_steps=1",
            "system.progress_bar=false",
            "system.device=cpu",
            "data.eval_batches=1",
        ],
    )
    result = pretrain(config, make_loader, make_eval_batches)
    assert result.status == "completed" and result.step == 3
    assert result.last_metrics["train/tokens"] == 3 * 32 * 128 and math.isfinite(result.last_eval["eval/loss"])
    assert AutoModelForMaskedLM.from_pretrained(tmp_path / "checkpoints" / "latest").config.hidden_size == 128


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    """About 30 s of inductor compilation on two CPU cores."""
    compiled = pretrain(tiny_config(tmp_path / "c", "train.compile=true", "budget.steps=4"), make_loader)
    eager = pretrain(tiny_config(tmp_path / "e", "budget.steps=4"), make_loader)
    assert compiled.last_metrics["train/loss"] == pytest.approx(eager.last_metrics["train/loss"], rel=1e-5)
    for name, tensor in weights(eager).items():
        torch.testing.assert_close(weights(compiled)[name], tensor, atol=1e-5, rtol=1e-4)
