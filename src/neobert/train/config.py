"""The pre-training configuration: six typed sections (model, data, train, system, budget, phase).

A run is described by one or more YAML files merged in order, then dotted overrides from the command line
(`train.lr=6e-4 budget.hours=2`). A YAML file may name a parent with `inherit: other.yaml` (relative to its
own folder), which is how the cumulative ablations M0-M9 are written. Every key is checked against the
dataclass annotations before training starts; the resolved configuration is saved with each checkpoint.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from neobert.config import PRESETS, NeoBERTConfig
from neobert.data.loader import LengthBucket
from neobert.model.attention import BACKENDS as ATTENTION_BACKENDS
from neobert.train.held_out import HeldOutSection, current_override_keys, in_current_keys
from neobert.train.optim import schedule_from
from neobert.train.ramp import BatchRamp, check_mlm_schedule, ramp_from
from neobert.train.ramp import BatchSplitError as BatchSplitError  # at home in ramp.py; importers of config keep it
from neobert.train.ramp import batch_split as batch_split
from neobert.train.typed import build_dataclass, coerce, field_types, to_plain

LOG_SINKS = ("jsonl", "tensorboard", "wandb")
_BUDGET_DRIVERS = ("steps", "tokens", "hours")


@dataclass
class ModelSection:
    preset: str = "tiny"
    # NeoBERTConfig fields applied on top of the preset, e.g. {"max_length": 4096}.
    overrides: dict[str, Any] = field(default_factory=dict)
    attention: str = "sdpa"
    activation_checkpointing: bool = False
    # A checkpoint folder (or a `checkpoints` folder, whose latest good one is used) whose model weights
    # start this run: stage 2 starts from stage 1. Optimiser, schedule and data position start afresh.
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"model.preset {self.preset!r} is not a preset; choose one of {sorted(PRESETS)}")
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(f"model.attention must be one of {list(ATTENTION_BACKENDS)}, got {self.attention!r}")
        hints = field_types(NeoBERTConfig)
        for name, value in list(self.overrides.items()):
            if name not in hints:
                raise ValueError(
                    f"unknown config key model.overrides.{name}; NeoBERTConfig fields are: {', '.join(sorted(hints))}"
                )
            self.overrides[name] = coerce(value, hints[name], f"model.overrides.{name}")

    def neobert_config(self) -> NeoBERTConfig:
        config = NeoBERTConfig.from_preset(self.preset, **self.overrides)
        config._attn_implementation = self.attention
        return config


@dataclass
class DataSection:
    # A folder written by `neobert prepare`; None only for configs that are completed at run time (the demo).
    path: str | None = None
    # The splits `neobert prepare` writes; no eval split turns held-out evaluation off.
    train_split: Literal["train", "heldout"] = "train"
    eval_split: Literal["train", "heldout"] | None = "heldout"
    max_length: int = 1024
    # "truncate": one document per sequence, its tail dropped (the paper). "pack": documents end to end,
    # each attending only to itself. "pack_naive": packed rows where documents attend to each other (the
    # paper's first packing, M6; for ablations).
    sequence: Literal["truncate", "pack", "pack_naive"] = "truncate"
    mlm_probability: float = 0.2
    # The mask rate by training progress, [[progress, probability], ...] from progress 0.0, piecewise constant
    # (train/ramp.py); empty: mlm_probability throughout. The held-out rule (data.eval) is not affected.
    mlm_schedule: list[tuple[float, float]] = field(default_factory=list)
    # "all": every selected token becomes [MASK] (the paper); "bert": 80% [MASK], 10% random, 10% kept.
    mask_mode: Literal["all", "bert"] = "all"
    # Also score this share of the unselected tokens as themselves, unchanged in the input (0: the paper).
    mlm_identity_probability: float = 0.0
    # The global batch (over all ranks and accumulation steps), in sequences or in tokens (tokens are
    # counted as sequences of max_length, so they must divide evenly).
    batch_size: int = 32
    batch_unit: Literal["sequences", "tokens"] = "sequences"
    # Sequences per rank in one forward pass; None: the whole per-rank share in one pass.
    micro_batch_size: int | None = None
    # Batch-size warm-up: the global batch grows from batch_warmup_start (in batch_unit) to batch_size over the
    # first batch_warmup_tokens token slots (0: off), in multiples of the start (train/ramp.py).
    batch_warmup_tokens: int = 0
    batch_warmup_start: int | None = None
    length_mixture: list[LengthBucket] = field(default_factory=list)
    eval_batches: int = 20
    # The held-out rule; unset, the held-out batches follow the training settings (HeldOutSection).
    eval: HeldOutSection = field(default_factory=HeldOutSection)
    seed: int = 0
    # The order's granularity (data/order.py): runs of `block_documents` consecutive documents, taken
    # `window_blocks` at a time into one shuffled window, so a window of 2,048 documents comes from 256
    # places in the corpus (docs/data.md: how that mixes, learns and reads against other choices).
    block_documents: int = 8
    window_blocks: int = 256
    # The tokenizer the corpus must have been prepared with (name or folder); None: bert-base-uncased.
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        if self.max_length <= 0:
            raise ValueError(f"data.max_length must be positive, got {self.max_length}")
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"data.mlm_probability must lie in (0, 1), got {self.mlm_probability}")
        if self.batch_size <= 0:
            raise ValueError(f"data.batch_size must be positive, got {self.batch_size}")
        if self.micro_batch_size is not None and self.micro_batch_size <= 0:
            raise ValueError(f"data.micro_batch_size must be positive, got {self.micro_batch_size}")
        if self.eval_batches < 0:
            raise ValueError(f"data.eval_batches must be non-negative, got {self.eval_batches}")
        for prefix, rule in (("", self), ("eval.", self.eval.over(self))):
            if not 0 <= rule.mlm_identity_probability < 1 - rule.mlm_probability:
                raise ValueError(
                    f"data.{prefix}mlm_identity_probability must lie in [0, 1 - mlm_probability) = "
                    f"[0, {1 - rule.mlm_probability:g}), got {rule.mlm_identity_probability}"
                )
        if self.batch_unit == "tokens" and self.batch_size % self.max_length:
            raise ValueError(
                f"data.batch_size of {self.batch_size} tokens is not a whole number of "
                f"{self.max_length}-token sequences"
            )
        check_mlm_schedule(self.mlm_schedule, self.mlm_identity_probability)
        self.batch_ramp()  # a warm-up that cannot be formed is named here
        if self.length_mixture:
            total = sum(bucket.probability for bucket in self.length_mixture)
            if any(bucket.probability < 0 for bucket in self.length_mixture) or not math.isclose(total, 1.0):
                raise ValueError(f"data.length_mixture probabilities must be non-negative and sum to 1, got {total}")
            for bucket in self.length_mixture:
                if not 0 <= bucket.min_document_tokens < self.max_length:
                    raise ValueError(
                        f"data.length_mixture min_document_tokens {bucket.min_document_tokens} must lie in "
                        f"[0, {self.max_length})"
                    )

    @property
    def global_batch_sequences(self) -> int:
        if self.batch_unit == "tokens":
            return self.batch_size // self.max_length
        return self.batch_size

    def batch_ramp(self) -> BatchRamp:
        """The global batch of each step (the warm-up's plan; constant without one)."""
        return ramp_from(self)


@dataclass
class TrainSection:
    lr: float = 6e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    # The released code decays every parameter; True exempts norm weights and biases (common practice).
    no_decay_norms_and_biases: bool = False
    warmup_steps: int = 2000
    # "cosine": to final_lr_fraction of the peak over decay_fraction of the steps, then constant (paper).
    # "linear": the same shape with a straight line. "constant": the peak after warmup (stage 2 sets lr
    # itself to 10% of stage 1's peak). "wsd": warmup, the peak held, then a decay to the floor over the last
    # wsd_decay_fraction of the run (of its progress, for an hours budget) in decay_shape.
    schedule: Literal["cosine", "linear", "constant", "wsd"] = "cosine"
    final_lr_fraction: float = 0.1
    # The floor as a rate; None: final_lr_fraction of lr.
    final_lr: float | None = None
    decay_fraction: float = 0.9
    wsd_decay_fraction: float = 0.2
    decay_shape: Literal["linear", "1-sqrt"] = "linear"
    # WSD: the step its decay starts at instead (None: from wsd_decay_fraction, or a decay branch's step).
    decay_start_step: int | None = None
    # None: derived from data.batch_size, data.micro_batch_size and the world size.
    grad_accumulation: int | None = None
    clip_grad_norm: float | None = 1.0
    compile: bool = False
    seed: int = 0
    log_every: int = 10
    eval_every: int = 1000
    checkpoint_every: int = 1000
    keep_last: int = 3
    # Also keep every checkpoint whose step is a multiple of this (None: keep only the last ones).
    keep_every: int | None = None

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"train.lr must be positive, got {self.lr}")
        if not all(0 <= beta < 1 for beta in self.betas):
            raise ValueError(f"train.betas must lie in [0, 1), got {self.betas}")
        if self.eps <= 0 or self.weight_decay < 0:
            raise ValueError("train.eps must be positive and train.weight_decay non-negative")
        if self.warmup_steps < 0:
            raise ValueError(f"train.warmup_steps must be non-negative, got {self.warmup_steps}")
        if not 0 <= self.final_lr_fraction <= 1:
            raise ValueError(
                f"train.final_lr_fraction must lie in [0, 1] (a floor above the peak is not a decay), got "
                f"{self.final_lr_fraction}"
            )
        if self.final_lr is not None and not 0 <= self.final_lr <= self.lr:
            raise ValueError(
                f"train.final_lr ({self.final_lr:g}) must lie in [0, train.lr = {self.lr:g}]: the floor cannot be "
                "above the peak"
            )
        if not 0 < self.decay_fraction <= 1:
            raise ValueError(f"train.decay_fraction must lie in (0, 1], got {self.decay_fraction}")
        if not 0 <= self.wsd_decay_fraction <= 1:
            raise ValueError(f"train.wsd_decay_fraction must lie in [0, 1], got {self.wsd_decay_fraction}")
        if self.decay_start_step is not None:
            if self.schedule != "wsd":
                raise ValueError(f"train.decay_start_step needs train.schedule=wsd (it is {self.schedule!r})")
            if self.decay_start_step < self.warmup_steps:
                raise ValueError(
                    f"train.decay_start_step ({self.decay_start_step}) falls inside the "
                    f"{self.warmup_steps} warmup steps"
                )
        if self.grad_accumulation is not None and self.grad_accumulation <= 0:
            raise ValueError(f"train.grad_accumulation must be positive, got {self.grad_accumulation}")
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            raise ValueError(f"train.clip_grad_norm must be positive or null, got {self.clip_grad_norm}")
        for name in ("log_every", "eval_every", "checkpoint_every", "keep_last"):
            if getattr(self, name) <= 0:
                raise ValueError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.keep_every is not None and self.keep_every <= 0:
            raise ValueError(f"train.keep_every must be positive or null, got {self.keep_every}")

    @property
    def floor_fraction(self) -> float:
        """The schedule's floor as a share of the peak."""
        return self.final_lr / self.lr if self.final_lr is not None else self.final_lr_fraction

    def adamw_settings(self) -> dict[str, Any]:
        """`build_optimizer`'s arguments."""
        return {
            "lr": self.lr,
            "betas": tuple(self.betas),
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "exempt_norms_and_biases": self.no_decay_norms_and_biases,
        }


@dataclass
class SystemSection:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # "auto": bf16 autocast on CUDA, fp32 on CPU (bf16 matrix products are ~15x slower on AVX2 CPUs).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # "auto": DDP when launched by torchrun with more than one process, otherwise a single process.
    distributed: Literal["auto", "none", "ddp", "fsdp"] = "auto"
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    num_workers: int = 0
    output_dir: str = "runs/pretrain"
    log_sinks: list[str] = field(default_factory=lambda: ["jsonl", "tensorboard"])
    wandb_project: str | None = None
    progress_bar: bool = True
    # The accelerator's dense peak in FLOP/s for MFU; None: looked up for known GPUs, else MFU not reported.
    peak_flops: float | None = None

    def __post_init__(self) -> None:
        unknown = [sink for sink in self.log_sinks if sink not in LOG_SINKS]
        if unknown:
            raise ValueError(f"system.log_sinks: unknown sink {unknown[0]!r}; choose from {list(LOG_SINKS)}")
        if self.num_workers < 0:
            raise ValueError(f"system.num_workers must be non-negative, got {self.num_workers}")


@dataclass
class BudgetSection:
    """Exactly one of these sets the length of the run, and with it the learning-rate schedule."""

    steps: int | None = None
    tokens: int | None = None
    hours: float | None = None
    # With an hours budget, the number of steps is estimated from the speed of these first steps.
    calibration_steps: int = 20

    def __post_init__(self) -> None:
        given = [name for name in ("steps", "tokens", "hours") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "the budget needs exactly one of budget.steps, budget.tokens or budget.hours; "
                + (f"got {', '.join('budget.' + name for name in given)}" if given else "none is set")
            )
        value = getattr(self, given[0])
        if value <= 0:
            raise ValueError(f"budget.{given[0]} must be positive, got {value}")
        if self.calibration_steps <= 0:
            raise ValueError(f"budget.calibration_steps must be positive, got {self.calibration_steps}")

    @property
    def kind(self) -> str:
        return next(name for name in ("steps", "tokens", "hours") if getattr(self, name) is not None)

    def total_steps(self, tokens_per_step: int) -> int | None:
        """Steps the budget allows; None for an hours budget (estimated while running)."""
        if self.steps is not None:
            return self.steps
        if self.tokens is not None:
            return max(1, math.ceil(self.tokens / tokens_per_step))
        return None


@dataclass
class PhaseSection:
    """A run that starts from a checkpoint of another run, which it only reads: it writes its own run folder
    (system.output_dir) and records the branch point (source, step, manifest SHA-256) there."""

    from_checkpoint: str | None = None
    # "state": the step, optimiser, schedule position, data position and RNG states go on from the checkpoint
    # (a decay branch: with train.schedule=wsd the decay starts at the checkpoint's step unless
    # train.decay_start_step says otherwise). "weights": the model weights only, and the phase starts at step
    # 0 with its own data, optimiser and schedule (stage 2's longer context).
    carry: Literal["state", "weights"] = "state"
    name: str | None = None  # a label for the record, e.g. "decay" or "stage2"


@dataclass
class PretrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    system: SystemSection = field(default_factory=SystemSection)
    budget: BudgetSection = field(default_factory=lambda: BudgetSection(steps=1_000_000))
    phase: PhaseSection = field(default_factory=PhaseSection)

    def __post_init__(self) -> None:
        if self.phase.from_checkpoint is not None and self.model.init_from is not None:
            raise ValueError(
                "model.init_from and phase.from_checkpoint both name starting weights; keep one "
                "(phase.carry=weights does what model.init_from does, and records the branch point)"
            )
        model_max = self.model.neobert_config().max_length
        if self.data.max_length > model_max:
            raise ValueError(
                f"data.max_length ({self.data.max_length}) exceeds the model's max_length ({model_max}); "
                "raise model.overrides.max_length"
            )
        # The schedule must fit the budget: the decay has to end after the warmup.
        schedule_from(self.train, self.total_steps())

    @property
    def tokens_per_step(self) -> int:
        """Token slots per optimiser step at the full batch (sequences x max_length): the paper's 'theoretical'
        count."""
        return self.data.global_batch_sequences * self.data.max_length

    def total_steps(self) -> int | None:
        """Steps the budget allows; a token budget counts the smaller steps of a batch warm-up exactly."""
        ramp = self.data.batch_ramp()
        if self.budget.tokens is not None and ramp.active:
            return ramp.steps_for_tokens(self.budget.tokens)
        return self.budget.total_steps(self.tokens_per_step)

    def resolved(self) -> dict[str, Any]:
        return to_plain(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.resolved(), sort_keys=False)


# ---- loading ---------------------------------------------------------------------------------------------


def _deep_merge(base: dict, update: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_yaml(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config with its `inherit:` chain resolved (parents first, this file on top)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ValueError(f"config inheritance loops back to {path.name}")
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    with open(path, encoding="utf-8") as handle:
        try:
            content = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ValueError(f"config file {path}: YAML syntax error{where}: {problem}") from None
    if not isinstance(content, dict):
        raise ValueError(f"config file {path.name} must hold a mapping at the top level")
    content = in_current_keys(content, f"config file {path.name}")
    parent = content.pop("inherit", None)
    if parent is None:
        return content
    return _deep_merge(read_yaml(path.parent / parent, (*_seen, path)), content)


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one `section.key=value` (the value read as YAML, so `[0.9, 0.95]` and `null` work)."""
    if "=" not in assignment:
        raise ValueError(f"override {assignment!r} must look like section.key=value")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    keys = current_override_keys(keys, assignment)
    if len(keys) < 2 or not all(keys):
        raise ValueError(f"override {assignment!r} must name a section and a key, e.g. train.lr=6e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ValueError(f"override {assignment!r}: {key} is a value, not a section")
        node = child
    node[keys[-1]] = value


def load_config(paths: list[str | os.PathLike] | str | os.PathLike = (), overrides: list[str] = ()) -> PretrainConfig:
    """YAML files merged in order, then `section.key=value` overrides, checked against the dataclasses."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    tree: dict[str, Any] = {}
    for path in paths:
        tree = _deep_merge(tree, read_yaml(path))
    for assignment in overrides:
        apply_override(tree, assignment)
        # A budget given later replaces the one before it: `budget.hours=2` on the command line overrides
        # the preset's `budget.steps` instead of clashing with it.
        dotted = assignment.split("=", 1)[0].strip().split(".")
        if len(dotted) == 2 and dotted[0] == "budget" and dotted[1] in _BUDGET_DRIVERS:
            for other in _BUDGET_DRIVERS:
                if other != dotted[1] and other in tree["budget"]:
                    tree["budget"][other] = None
    return build_dataclass(PretrainConfig, tree)


# Presets ship inside the package (package data), so a wheel install has them as a checkout does.
PRESET_ROOT = Path(__file__).resolve().parents[1] / "configs" / "pretrain"


def preset_names() -> list[str]:
    return sorted(str(p.relative_to(PRESET_ROOT).with_suffix("")) for p in PRESET_ROOT.rglob("*.yaml"))


def preset_path(name: str) -> Path:
    """`neobert/configs/pretrain/<name>.yaml`, e.g. "demo", "neobert-250m-stage1" or "ablations/m0"."""
    path = PRESET_ROOT / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no pre-training preset {name!r} in {PRESET_ROOT}; known: {preset_names()}")
    return path
