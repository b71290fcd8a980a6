"""One optimiser step and the state around it: model, optimiser, schedule, loader, checkpoints, evaluation.

Every step takes the global batch (`data.batch_size`, or a batch warm-up's smaller one: train/ramp.py, split
over processes and accumulation steps) and weights each micro-batch by its share of the masked tokens, so the
gradient is that of the mean loss over the whole global batch whatever the world size or accumulation. A
mask-rate schedule sets the loader's rate before each step from the schedule's progress. The loop that drives
it (and decides when to log, evaluate, save and stop) is in pretrain.py; restoring its state from a checkpoint
is in resume.py.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file

from neobert.errors import EXIT_DIVERGED, UserError
from neobert.model.flops import model_shapes, non_embedding_parameters, training_flops
from neobert.model.heads import NeoBERTForMaskedLM
from neobert.train import distributed as dist_utils
from neobert.train.checkpoint import (
    LATEST,
    MANIFEST,
    CheckpointError,
    RankState,
    apply_retention,
    list_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
    unwrap_model,
)
from neobert.train.config import PretrainConfig, batch_split
from neobert.train.distributed import DistributedContext
from neobert.train.evaluate import evaluate_mlm, masked_targets, model_inputs
from neobert.train.metrics import MetricAccumulator, batch_shape_stats, peak_flops
from neobert.train.optim import build_optimizer, build_scheduler, schedule_from
from neobert.train.precision import PrecisionChoice, resolve_precision
from neobert.train.ramp import mlm_probability_at


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


class TrainingDiverged(UserError, RuntimeError):
    """The loss or gradient norm became NaN or infinite."""

    exit_code = EXIT_DIVERGED


def build_model(config: PretrainConfig) -> NeoBERTForMaskedLM:
    """A freshly initialised model, or one holding the weights named by `model.init_from`."""
    model = NeoBERTForMaskedLM(config.model.neobert_config())
    if config.model.init_from:
        model.load_state_dict(_weights_from(config.model.init_from), strict=True)
    if config.model.activation_checkpointing:
        model.activation_checkpointing_enable()
    return model


def initial_model(config: PretrainConfig) -> NeoBERTForMaskedLM:
    """The weights a run starts from: `build_model` under the run's seed, the same on every rank."""
    torch.manual_seed(config.train.seed)
    return build_model(config)


def _weights_from(path: str) -> dict[str, torch.Tensor]:
    folder = Path(path)
    if not (folder / MANIFEST).exists() and (folder / "model.safetensors").is_file():
        return load_file(folder / "model.safetensors")  # an exported model folder: weights, no manifest
    looks_like_checkpoint = (folder / MANIFEST).exists() or folder.name == LATEST or bool(list_checkpoints(folder))
    if not looks_like_checkpoint:
        raise CheckpointError(f"model.init_from: {path} is neither a checkpoint nor a model folder")
    try:
        folder = resolve_checkpoint(path)  # verified in full: a damaged checkpoint is refused, naming the file
    except CheckpointError as error:
        raise CheckpointError(f"model.init_from: {error}") from None
    return load_file(folder / "model.safetensors")


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
        # Held-out batches keep their own rule: a batch warm-up's smaller micro-batch does not change them.
        self.eval_micro_batch = batch_split(config.data, train, context.world_size, warmup=False)[0]
        self.ramp = config.data.batch_ramp()
        self.output_dir = Path(system.output_dir)
        self.checkpoint_root = self.output_dir / "checkpoints"

        # Same seed on every rank for the weights (FSDP shards what each rank built), then per rank.
        if model is None:
            model = initial_model(config)
        self.model_config = model.config
        self.parameters_for_flops = non_embedding_parameters(self.model_config)
        torch.manual_seed(train.seed + 1000 * context.rank)
        model.to(context.device)
        # The loader's batches are well-formed by construction; on a GPU the input checks would read values
        # back from the device every step.
        model.model.check_inputs = context.device.type == "cpu"
        # `wrapped` is the DDP / FSDP2 module (no_sync, state dicts and clipping need it); `model` is what
        # runs forward, compiled on top when asked.
        self.wrapped = dist_utils.wrap_model(model, context, system.distributed)
        self.model = torch.compile(self.wrapped) if train.compile else self.wrapped
        self.strategy = dist_utils.resolve_strategy(system.distributed, context)
        self.optimizer = build_optimizer(self.wrapped, **train.adamw_settings())
        self.schedule = schedule_from(train, config.total_steps())
        self.scheduler = build_scheduler(self.optimizer, self.schedule)
        self.loader = make_loader(config, self.micro_batch, context)
        if config.data.mlm_schedule and not hasattr(self.loader, "set_mlm_probability"):
            raise ValueError(
                f"data.mlm_schedule needs a loader that can change its mask rate; {type(self.loader).__name__} "
                "has no set_mlm_probability"
            )
        tokens = self.micro_batch * config.data.max_length
        shapes = model_shapes(self.model_config, tokens, round(tokens * config.data.mlm_probability))
        # Ranks must compute alike: rank 0's probe decides for all.
        self.precision = dist_utils.broadcast_object(
            resolve_precision(system.precision, context.device, shapes), context
        )
        self.use_precision(self.precision)
        self.peak = peak_flops(context.device, system.peak_flops)

        self.step = 0
        # Restored from a checkpoint by resume.py: the step above, the seconds of earlier sessions (budget.py
        # counts on from them), and what the start from a checkpoint has to say.
        self.elapsed_before = 0.0
        self.tokens_seen = 0.0
        self.metrics = MetricAccumulator(context.device, shared=("grad_norm", "steps"))
        self.lr = self.optimizer.param_groups[0]["lr"]
        self.batch_sequences, self.mlm_probability = self.ramp.full, config.data.mlm_probability  # the last step's
        self.nonfinite = torch.zeros((), device=context.device)
        self.last_good_step: int | None = None
        self.changed_on_resume: list[str] = []  # settings that differ from the checkpoint's
        self.skipped_on_resume: list[str] = []  # damaged newer checkpoints passed over
        self.phases: list[dict[str, Any]] = []  # the branch points this run descends from (phase.py)
        self.wrapped.train()  # the sparse MLM decoder (masked rows only) runs in training mode

    def use_precision(self, choice: PrecisionChoice) -> None:
        self.precision, dtype, device = choice, choice.dtype, self.context.device
        self.autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext

    def refresh_lr(self) -> None:
        """Set the next step's learning rate from the schedule as it stands now (a wall-clock budget moves it
        between steps)."""
        factor = self.schedule(self.scheduler.last_epoch)
        for base, group in zip(self.scheduler.base_lrs, self.optimizer.param_groups, strict=True):
            group["lr"] = base * factor
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    # ---- one optimiser step -----------------------------------------------------------------------------

    def step_data(self) -> tuple[int, float]:
        """The next step's global batch in sequences and its mask rate, functions of the step and of the
        schedule's progress, both of which a checkpoint restores."""
        data = self.config.data
        rate = mlm_probability_at(data.mlm_schedule, data.mlm_probability, self.schedule.fraction_reached(self.step))
        return self.ramp.size(self.step), rate

    def train_step(self) -> None:
        self.batch_sequences, self.mlm_probability = self.step_data()
        if self.config.data.mlm_schedule:
            self.loader.set_mlm_probability(self.mlm_probability)
        accumulation = self.batch_sequences // (self.context.world_size * self.micro_batch)
        batches = [next(self.loader) for _ in range(accumulation)]
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
            # The fused loss hands back each scored row's top-1 token; the logits path, the logits themselves.
            top1 = output.predictions if output.predictions is not None else output.logits.detach().argmax(dim=-1)
            correct += (top1 == targets).sum()
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
            training_flops(self.model_config, s["tokens"], s["sum_sq"], s["masked"], self.parameters_for_flops)
            for s in stats
        )
        self.metrics.add("flops", flops)

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
                "precision": self.precision.name,
                "tokens_seen": self.tokens_seen,
                "phases": self.phases,
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
        batches = self.make_eval_batches(self.config, self.eval_micro_batch, self.context)
        # DDP's forward would broadcast buffers; the inner module computes the same without collectives.
        model = self.wrapped if self.strategy == "fsdp" else unwrap_model(self.wrapped)
        result = evaluate_mlm(
            model, batches, self.context.device, self.config.data.eval_batches, self.autocast(), self.context
        )
        return {"step": self.step, **result.as_record()}
