"""The pre-training loop: one explicit loop over optimiser steps, from one CPU to many GPUs.

It is written against a minimal loader protocol (`Loader` below), so it knows nothing of files: the caller
passes a factory that builds the loader for this process. Every optimiser step takes the global batch
(`data.batch_size`, split over processes and accumulation steps) and weights each micro-batch by its
share of masked tokens, so the gradient is that of the mean loss over the whole global batch whatever the
world size or accumulation.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from neobert.model.heads import NeoBERTForMaskedLM
from neobert.train import distributed as dist_utils
from neobert.train.checkpoint import (
    CheckpointError,
    RankState,
    apply_retention,
    find_latest_good,
    read_checkpoint,
    resolve_checkpoint,
    restore_rank_state,
    save_checkpoint,
    unwrap_model,
)
from neobert.train.config import PretrainConfig, batch_split
from neobert.train.distributed import DistributedContext
from neobert.train.evaluate import evaluate_mlm, masked_targets, model_inputs
from neobert.train.metrics import (
    ConsoleProgress,
    MetricAccumulator,
    MetricsLogger,
    batch_shape_stats,
    forward_flops,
    non_embedding_parameters,
    peak_flops,
    plot_loss_curve,
)
from neobert.train.optim import build_optimizer, build_scheduler, schedule_from


class Loader(Protocol):
    """Endless (or long) iterator of batches ready for `NeoBERTForMaskedLM(**batch)` (with `labels`), on
    the CPU, whose position can be saved and restored."""

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def __next__(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


# (config, sequences per forward pass on this process, this process's place) -> its loader.
LoaderFactory = Callable[[PretrainConfig, int, DistributedContext], Loader]
# The same for held-out batches: a fresh, identical iterable each time it is called.
EvalFactory = Callable[[PretrainConfig, int, DistributedContext], Iterable[dict[str, Any]]]


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became NaN or infinite."""


@dataclass
class PretrainResult:
    status: str  # "completed", "interrupted" (signal), "paused" (stop_at_step) or "data_exhausted"
    step: int
    output_dir: Path
    checkpoint: Path | None
    last_metrics: dict[str, float] = field(default_factory=dict)
    last_eval: dict[str, float] = field(default_factory=dict)


class StopSignals:
    """SIGINT / SIGTERM ask the loop to save and stop at the next step boundary; a second one aborts."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(f"second signal {number}: stopping without a checkpoint")
        self.received = number

    def __exit__(self, *exc: Any) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


def build_model(config: PretrainConfig) -> NeoBERTForMaskedLM:
    """A freshly initialised model, or one holding the weights named by `model.init_from`."""
    model = NeoBERTForMaskedLM(config.model.neobert_config())
    if config.model.init_from:
        model.load_state_dict(_weights_from(config.model.init_from), strict=True)
    if config.model.activation_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def _weights_from(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        folder = resolve_checkpoint(path)
    except CheckpointError:
        folder = Path(path)  # an exported model folder has weights but no manifest
        if not (folder / "model.safetensors").is_file():
            raise CheckpointError(f"model.init_from: {path} is neither a checkpoint nor a model folder") from None
    return load_file(folder / "model.safetensors")


def config_changes(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> list[str]:
    """`key: old -> new` for every dotted key whose value differs between two resolved configurations."""
    changes = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += config_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes


def resolve_precision(choice: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    if choice == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return torch.bfloat16 if choice == "bf16" else None


class Trainer:
    def __init__(
        self,
        config: PretrainConfig,
        make_loader: LoaderFactory,
        make_eval_batches: EvalFactory | None,
        context: DistributedContext,
        model: NeoBERTForMaskedLM | None = None,
    ):
        self.config, self.context = config, context
        self.make_eval_batches = make_eval_batches
        train, system = config.train, config.system
        self.micro_batch, self.accumulation = batch_split(config.data, train, context.world_size)
        self.output_dir = Path(system.output_dir)
        self.checkpoint_root = self.output_dir / "checkpoints"

        # Same seed on every rank for the weights (FSDP shards what each rank built), then per rank.
        torch.manual_seed(train.seed)
        model = model if model is not None else build_model(config)
        self.model_config = model.config
        self.parameters_for_flops = non_embedding_parameters(self.model_config)
        torch.manual_seed(train.seed + 1000 * context.rank)
        model.to(context.device)
        # `wrapped` is the DDP / FSDP2 module (no_sync, state dicts and clipping need it); `model` is what
        # runs forward, compiled on top when asked.
        self.wrapped = dist_utils.wrap_model(model, context, system.distributed)
        self.model = torch.compile(self.wrapped) if train.compile else self.wrapped
        self.strategy = dist_utils.resolve_strategy(system.distributed, context)
        self.optimizer = build_optimizer(self.wrapped, train)
        self.schedule = schedule_from(train, config.budget.total_steps(config.tokens_per_step))
        self.scheduler = build_scheduler(self.optimizer, self.schedule)
        self.loader = make_loader(config, self.micro_batch, context)
        dtype = resolve_precision(system.precision, context.device)
        self.autocast = (lambda: torch.autocast(context.device.type, dtype=dtype)) if dtype else contextlib.nullcontext
        self.peak = peak_flops(context.device, system.peak_flops)

        self.step = 0
        self.elapsed_before = 0.0  # wall-clock seconds of earlier sessions (hours budget)
        self.tokens_seen = 0.0
        self.metrics = MetricAccumulator(context.device, shared=("grad_norm", "steps"))
        self.lr = self.optimizer.param_groups[0]["lr"]
        self.nonfinite = torch.zeros((), device=context.device)
        self.last_good_step: int | None = None
        self.changed_on_resume: list[str] = []
        self.wrapped.train()  # the sparse MLM decoder (masked rows only) runs in training mode

    # ---- resume -----------------------------------------------------------------------------------------

    def resume(self, source: str | bool) -> Path | None:
        """Restore everything from `source` (a path) or, with True, the latest good checkpoint of this run."""
        folder = find_latest_good(self.checkpoint_root) if source is True else resolve_checkpoint(source)
        if folder is None:
            return None
        saved = read_checkpoint(folder, rank=self.context.rank)
        if saved.world_size != self.context.world_size:
            raise CheckpointError(
                f"{folder} was written by {saved.world_size} process(es); resume with the same number "
                f"(this run has {self.context.world_size}), since each one's data position is its own"
            )
        dist_utils.load_full_state_dicts(
            self.wrapped, self.optimizer, saved.model_state, saved.trainer_state["optimizer"]
        )
        self.scheduler.load_state_dict(saved.trainer_state["scheduler"])
        restore_rank_state(saved.rank_state, self.loader)
        self.step = saved.step
        self.elapsed_before = float(saved.trainer_state.get("elapsed_seconds", 0.0))
        self.tokens_seen = float(saved.trainer_state.get("tokens_seen", 0.0))
        self.last_good_step = saved.step
        self.changed_on_resume = config_changes(saved.config or {}, self.config.resolved())
        self._apply_current_recipe(saved.config or {})
        return folder

    def _apply_current_recipe(self, saved_config: dict[str, Any]) -> None:
        """Optimiser and scheduler state dicts carry their own hyperparameters; the run's configuration wins,
        so a run resumed with another lr, weight decay or budget uses the new values (and an unchanged one
        continues exactly)."""
        train, budget = self.config.train, self.config.budget
        reference = build_optimizer(self.wrapped, train)
        for group, wanted in zip(self.optimizer.param_groups, reference.param_groups, strict=True):
            group.update({k: v for k, v in wanted.items() if k not in ("params", "lr", "initial_lr")})
        fresh = schedule_from(train, budget.total_steps(self.config.tokens_per_step))
        if budget.hours is not None and saved_config.get("budget", {}).get("hours") == budget.hours:
            fresh.total_steps = self.schedule.total_steps  # keep the step count calibrated earlier
        fresh.check_total(fresh.total_steps)
        vars(self.schedule).update(vars(fresh))
        self.scheduler.base_lrs = [train.lr] * len(self.optimizer.param_groups)
        for group in self.optimizer.param_groups:
            group["lr"] = train.lr * self.schedule(self.scheduler.last_epoch)
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        self.lr = self.optimizer.param_groups[0]["lr"]

    # ---- one optimiser step -----------------------------------------------------------------------------

    def train_step(self) -> None:
        batches = [next(self.loader) for _ in range(self.accumulation)]
        stats = [batch_shape_stats(batch) for batch in batches]
        # The global number of masked tokens, so every micro-batch's mean loss gets its exact weight; the
        # tensor stays on the device (no host sync), and DDP's averaging over ranks is undone by `world`.
        total_masked = torch.tensor(sum(s["masked"] for s in stats), device=self.context.device)
        dist_utils.all_reduce_sum(total_masked, self.context)
        scale = self.context.world_size / total_masked.clamp(min=1)
        loss_x_masked = torch.zeros((), device=self.context.device)  # this rank's sum of token losses
        correct = torch.zeros((), device=self.context.device)
        for index, (batch, stat) in enumerate(zip(batches, stats, strict=True)):
            last = index == len(batches) - 1
            inputs = model_inputs(batch, self.context.device)
            targets = masked_targets(batch, self.context.device)
            with dist_utils.no_sync(self.wrapped, skip=not last):
                with self.autocast():
                    output = self.model(**inputs)
                (output.loss * (stat["masked"] * scale)).backward()
            loss_x_masked += output.loss.detach().float() * stat["masked"]
            correct += (output.logits.detach().argmax(dim=-1) == targets).sum()
        clip = self.config.train.clip_grad_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(self.wrapped.parameters(), clip if clip else math.inf)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2 returns a DTensor
            grad_norm = grad_norm.full_tensor()
        self.lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

        self.nonfinite += (~torch.isfinite(loss_x_masked) | ~torch.isfinite(grad_norm)).float()
        self.metrics.add("loss_x_masked", loss_x_masked)
        self.metrics.add("correct", correct)
        self.metrics.add("grad_norm", grad_norm)
        self.metrics.add("steps", 1)
        for key in ("tokens", "slots", "masked"):
            self.metrics.add(key, sum(s[key] for s in stats))
        flops = sum(
            forward_flops(self.model_config, s["tokens"], s["sum_sq"], s["masked"], self.parameters_for_flops)
            for s in stats
        )
        self.metrics.add("flops", 3.0 * flops)

    def check_finite(self) -> None:
        """Raise if any step since the last check had a non-finite loss or gradient norm (reads one scalar)."""
        bad = dist_utils.all_reduce_max(self.nonfinite.clone(), self.context)
        if bool(bad.item()):
            where = (
                f"the last good checkpoint is step {self.last_good_step} in {self.checkpoint_root}"
                if self.last_good_step is not None
                else "no checkpoint was written"
            )
            raise TrainingDiverged(
                f"the loss or gradient norm became NaN or infinite by step {self.step}; training stopped "
                f"without saving, and {where}. Lower train.lr, raise train.warmup_steps or check the data."
            )

    # ---- saving and evaluating --------------------------------------------------------------------------

    def save(self, elapsed: float) -> Path | None:
        self.check_finite()
        model_state, optimizer_state = dist_utils.full_state_dicts(self.wrapped, self.optimizer)
        rank_states = dist_utils.gather_objects(RankState.capture(self.loader), self.context)
        folder = None
        if self.context.is_main:
            trainer_state = {
                "optimizer": optimizer_state,
                "scheduler": self.scheduler.state_dict(),
                "elapsed_seconds": elapsed,
                "tokens_seen": self.tokens_seen,
            }
            folder = save_checkpoint(
                self.checkpoint_root,
                self.step,
                self.wrapped,
                trainer_state,
                rank_states,
                self.config.resolved(),
                model_state=model_state,
            )
            apply_retention(self.checkpoint_root, self.config.train.keep_last, self.config.train.keep_every)
        dist_utils.barrier(self.context)
        self.last_good_step = self.step
        return folder

    def evaluate(self) -> dict[str, float]:
        if self.make_eval_batches is None or self.config.data.eval_batches == 0:
            return {}
        batches = self.make_eval_batches(self.config, self.micro_batch, self.context)
        # DDP's forward would broadcast buffers; the inner module computes the same without collectives.
        model = self.wrapped if self.strategy == "fsdp" else unwrap_model(self.wrapped)
        result = evaluate_mlm(
            model, batches, self.context.device, self.config.data.eval_batches, self.autocast(), self.context
        )
        return {"step": self.step, **result.as_record()}


def pretrain(
    config: PretrainConfig,
    make_loader: LoaderFactory,
    make_eval_batches: EvalFactory | None = None,
    resume: bool | str = False,
    stop_at_step: int | None = None,
    model: NeoBERTForMaskedLM | None = None,
) -> PretrainResult:
    """Train until the budget is spent. `resume=True` continues from the run's latest good checkpoint
    (starting afresh when there is none); a path resumes from that checkpoint. `stop_at_step` checkpoints
    and returns at that step without changing the schedule (a job that must end before the run does)."""
    context = dist_utils.init_distributed(config.system.device, config.system.backend)
    try:
        return _run(Trainer(config, make_loader, make_eval_batches, context, model), resume, stop_at_step)
    finally:
        dist_utils.teardown(context)


def _run(trainer: Trainer, resume: bool | str, stop_at_step: int | None) -> PretrainResult:
    config, context, system = trainer.config, trainer.context, trainer.config.system
    resumed_from = trainer.resume(resume) if resume else None
    if resumed_from is None and find_latest_good(trainer.checkpoint_root) is not None:
        raise CheckpointError(
            f"{trainer.checkpoint_root} already holds checkpoints of another run: resume it or choose another "
            "system.output_dir"
        )
    if context.is_main:
        trainer.output_dir.mkdir(parents=True, exist_ok=True)
        (trainer.output_dir / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    logger = MetricsLogger(
        trainer.output_dir, system.log_sinks, context.is_main, system.wandb_project, config.resolved()
    )
    progress = ConsoleProgress(trainer.schedule.total_steps, trainer.step, system.progress_bar, not context.is_main)
    loop = _Loop(trainer, logger, progress, stop_at_step)
    if resumed_from is not None:
        progress.message(f"resumed from {resumed_from} at step {trainer.step}")
        for change in trainer.changed_on_resume:
            progress.message(f"  changed since the checkpoint: {change}")
    try:
        with StopSignals() as signals:
            status = loop.run(signals)
        checkpoint = None
        if trainer.step != loop.last_saved_step:
            checkpoint = trainer.save(loop.elapsed())
        elif trainer.last_good_step is not None:
            checkpoint = find_latest_good(trainer.checkpoint_root)
        if status == "completed" and loop.last_eval.get("step") != trainer.step:
            loop.log_eval()
        if loop.pending_window:
            loop.log_window()
        if status == "interrupted":
            progress.message(f"stopped by a signal at step {trainer.step}; checkpoint saved")
    finally:
        logger.close()
        progress.close()
    if context.is_main and "jsonl" in system.log_sinks and (loop.last_metrics or loop.last_eval):
        plot_loss_curve(trainer.output_dir / "metrics.jsonl", trainer.output_dir / "loss_curve.png")
    return PretrainResult(status, trainer.step, trainer.output_dir, checkpoint, loop.last_metrics, loop.last_eval)


class _Loop:
    """The step loop's bookkeeping: when to stop, log, evaluate and save."""

    def __init__(self, trainer: Trainer, logger: MetricsLogger, progress: ConsoleProgress, stop_at_step: int | None):
        self.trainer, self.logger, self.progress, self.stop_at_step = trainer, logger, progress, stop_at_step
        self.session_start = time.perf_counter()
        self.window_start = self.session_start
        self.calibration: tuple[int, float] | None = None
        self.last_saved_step = trainer.step if trainer.last_good_step is not None else None
        self.last_metrics: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}
        self.pending_window = False

    def elapsed(self) -> float:
        return self.trainer.elapsed_before + time.perf_counter() - self.session_start

    def run(self, signals: StopSignals) -> str:
        trainer, train = self.trainer, self.trainer.config.train
        while True:
            total = trainer.schedule.total_steps
            if total is not None and trainer.step >= total:
                return "completed"
            if self.stop_at_step is not None and trainer.step >= self.stop_at_step:
                return "paused"
            reason = self._agreed_stop(signals)
            if reason is not None:
                return reason
            try:
                trainer.train_step()
            except StopIteration:
                self.progress.message(f"the training data ran out at step {trainer.step}")
                return "data_exhausted"
            self.pending_window = True
            self.progress.update(1, self.last_metrics and {"loss": self.last_metrics["train/loss"]})
            self._calibrate()
            step = trainer.step
            if step % train.log_every == 0:
                self.log_window()
            if step % train.eval_every == 0:
                self.log_eval()
            if step % train.checkpoint_every == 0:
                trainer.save(self.elapsed())
                self.last_saved_step = step

    def _agreed_stop(self, signals: StopSignals) -> str | None:
        """Stop for a signal or a spent hours budget. Ranks must agree, so with several processes this is
        decided (one small collective) only every log_every steps."""
        trainer = self.trainer
        if trainer.context.enabled and trainer.step % trainer.config.train.log_every:
            return None
        hours = trainer.config.budget.hours
        flags = torch.tensor(
            [float(signals.received is not None), float(hours is not None and self.elapsed() >= hours * 3600)],
            device=trainer.context.device,
        )
        interrupted, out_of_time = dist_utils.all_reduce_max(flags, trainer.context).tolist()
        if interrupted:
            return "interrupted"
        return "completed" if out_of_time else None

    def _calibrate(self) -> None:
        """With an hours budget, fix the step count (and so the schedule) from the speed of the first steps;
        the first step of a session is left out of the timing (allocation, compilation)."""
        trainer, budget = self.trainer, self.trainer.config.budget
        if budget.hours is None or trainer.schedule.total_steps is not None:
            return
        now = time.perf_counter()
        if self.calibration is None:
            self.calibration = (trainer.step, now)
            return
        first_step, started = self.calibration
        if trainer.step - first_step < budget.calibration_steps:
            return
        per_step = (now - started) / (trainer.step - first_step)
        remaining = max(0.0, budget.hours * 3600 - self.elapsed())
        estimate = dist_utils.broadcast_object(trainer.step + max(1, int(remaining / per_step)), trainer.context)
        try:
            trainer.schedule.set_total_steps(estimate)
        except ValueError as error:
            raise ValueError(f"budget.hours={budget.hours} allows about {estimate} steps here: {error}") from None
        self.progress.set_total(estimate)
        self.progress.message(f"hours budget: {per_step:.3f} s a step, so {estimate} steps in all")

    def log_window(self) -> None:
        trainer = self.trainer
        sums = trainer.metrics.read(trainer.context)
        trainer.check_finite()
        seconds = max(time.perf_counter() - self.window_start, 1e-9)
        self.window_start = time.perf_counter()
        self.pending_window = False
        if not sums:
            return
        trainer.tokens_seen += sums["tokens"]
        masked = max(sums["masked"], 1.0)
        efficiency = getattr(trainer.loader, "packing_efficiency", None)
        record = {
            "step": trainer.step,
            "train/loss": sums["loss_x_masked"] / masked,
            "train/accuracy": sums["correct"] / masked,
            "train/lr": trainer.lr,
            "train/grad_norm": sums["grad_norm"] / sums["steps"],
            "train/tokens_per_s": sums["tokens"] / seconds,
            "train/tokens": trainer.tokens_seen,
            "train/packing_efficiency": efficiency if efficiency is not None else sums["tokens"] / sums["slots"],
            "train/flops_per_s": sums["flops"] / seconds,
            "time/elapsed_s": self.elapsed(),
        }
        utilisation = sums["flops"] / seconds / trainer.peak if trainer.peak else None
        if utilisation is not None:
            record["train/mfu"] = utilisation
        self.last_metrics = record
        self.logger.log(record)

    def log_eval(self) -> None:
        record = self.trainer.evaluate()
        if record:
            self.last_eval = record
            self.logger.log(record)
            self.progress.message(
                f"step {record['step']}: held-out loss {record['eval/loss']:.4f}, "
                f"accuracy {record['eval/accuracy']:.4f}"
            )
