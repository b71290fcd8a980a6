"""AdamW with optional decay exemptions, and the learning-rate schedules as pure functions of the step.

The paper's schedule (spec B.5): linear warmup to the peak, then cosine (or linear) decay to
`final_fraction` of the peak, reached at `decay_fraction` of the run, then constant. WSD (warmup-stable-
decay, "trapezoidal"): linear warmup, the peak held, then a decay to the floor over the last
`wsd_decay_fraction` of the run, linear or 1-sqrt; the decay may instead start at a given step (a decay
branch starts it at its branch point). Step numbers count optimiser updates already taken: the first update
uses step 0.

"Of the run" means of its steps for a step or token budget. For a wall-clock budget it means of the budget's
*progress*, max(step / estimated steps, elapsed / budget), which the loop feeds in: a machine that slows down
mid-run then moves the schedule on with the clock, so the run still ends at the floor, never cut short with
the learning rate near its peak. WSD's decay then starts when `wsd_decay_fraction` of the budget's progress is
left (or at the progress reached when the run passes its decay start step) and reaches the floor at 1.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

SCHEDULES = ("cosine", "linear", "constant", "wsd")
DECAY_SHAPES = ("linear", "1-sqrt")


@dataclass
class LRSchedule:
    """Multiplier of the peak learning rate at each step.

    A callable object rather than a closure so that `LambdaLR.state_dict()` stores its fields, and a resumed
    run sees the same values. `total_steps=None` means "not known yet": the schedule holds the peak after
    warmup. With `progress` set (a wall-clock budget), the decay follows it instead of the step count: it
    starts from the progress reached when warmup ended and reaches the floor at `decay_fraction`.
    """

    warmup_steps: int
    total_steps: int | None
    kind: str = "cosine"
    final_fraction: float = 0.1
    decay_fraction: float = 0.9
    progress: float | None = None
    warmup_end_progress: float | None = None
    # WSD only: the decay's share of the run, its shape, and the step it starts at when given (the config's
    # `decay_start_step`, else the step a decay branch started from, else from `wsd_decay_fraction`).
    wsd_decay_fraction: float = 0.2
    decay_shape: str = "linear"
    decay_start_step: int | None = None
    branch_step: int | None = None
    decay_start_progress: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.kind!r}")
        if self.decay_shape not in DECAY_SHAPES:
            raise ValueError(f"decay shape must be one of {DECAY_SHAPES}, got {self.decay_shape!r}")
        if not 0 <= self.wsd_decay_fraction <= 1:
            raise ValueError(f"the WSD decay fraction must lie in [0, 1], got {self.wsd_decay_fraction}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be non-negative, got {self.warmup_steps}")
        self.check_total(self.total_steps)

    def check_total(self, total_steps: int | None) -> None:
        if total_steps is None or self.kind == "constant":
            return
        if self.kind == "wsd":
            self._check_wsd_total(total_steps)
            return
        if self.decay_end(total_steps) <= self.warmup_steps:
            raise ValueError(
                f"the decay would end at step {self.decay_end(total_steps)} ({self.decay_fraction:.0%} of "
                f"{total_steps}), not after the {self.warmup_steps} warmup steps: lower train.warmup_steps or "
                "raise the budget"
            )

    def _check_wsd_total(self, total_steps: int) -> None:
        if total_steps <= self.warmup_steps:
            raise ValueError(
                f"the run of {total_steps} steps ends within its {self.warmup_steps} warmup steps: lower "
                "train.warmup_steps or raise the budget"
            )
        for name, start in (("train.decay_start_step", self.decay_start_step), ("the branch point", self.branch_step)):
            if start is not None and start >= total_steps:
                raise ValueError(
                    f"{name} (step {start}) is at or past the end of the run ({total_steps} steps): nothing is "
                    "left to decay; raise the budget"
                )

    def decay_end(self, total_steps: int) -> int:
        return round(self.decay_fraction * total_steps)

    def explicit_decay_start(self) -> int | None:
        return self.decay_start_step if self.decay_start_step is not None else self.branch_step

    def wsd_decay_start(self, total_steps: int) -> int:
        """The first update of WSD's decay: updates `start` to `total_steps - 1` step down to the floor."""
        start = self.explicit_decay_start()
        if start is None:
            start = total_steps - round(self.wsd_decay_fraction * total_steps)
        return max(start, self.warmup_steps)

    def advance(self, progress: float, step: int) -> None:
        """Move the clock-driven schedule to `progress` (never backwards) after `step` updates."""
        self.progress = min(1.0, max(progress, self.progress or 0.0))
        if step >= self.warmup_steps and self.warmup_end_progress is None:
            self.warmup_end_progress = self.progress
        start = self.explicit_decay_start()
        if start is not None and step >= start and self.decay_start_progress is None:
            self.decay_start_progress = self.progress

    def fraction_reached(self, step: int) -> float:
        """How much of the run's schedule `step` updates have covered (1.0: the run is complete)."""
        if self.progress is not None:
            return self.progress
        if self.total_steps:
            return min(1.0, step / self.total_steps)
        return 0.0

    def decay_position(self, step: int) -> float | None:
        """Where in the decay `step` stands, from 0 (the peak) to 1 (the floor); None before it is known."""
        if self.kind == "wsd":
            return self._wsd_position(step)
        if self.progress is not None:
            start = self.warmup_end_progress if self.warmup_end_progress is not None else self.progress
            if self.decay_fraction <= start:
                return 1.0
            return min(1.0, max(0.0, (self.progress - start) / (self.decay_fraction - start)))
        if self.total_steps is None:
            return None
        end = self.decay_end(self.total_steps)
        return min(1.0, (step - self.warmup_steps) / (end - self.warmup_steps))

    def _wsd_position(self, step: int) -> float | None:
        if self.progress is not None:
            if self.decay_start_progress is not None:
                start = self.decay_start_progress
            elif self.explicit_decay_start() is not None:
                return 0.0  # the start step is not reached yet
            else:
                start = max(1.0 - self.wsd_decay_fraction, self.warmup_end_progress or 0.0)
            if self.progress <= start or start >= 1.0:
                return 0.0
            return min(1.0, (self.progress - start) / (1.0 - start))
        if self.total_steps is None:
            return None
        # Like the warmup's (step + 1) / warmup_steps: the first decay update is already below the peak and the
        # run's last update uses the floor itself.
        start = self.wsd_decay_start(self.total_steps)
        if step < start or start >= self.total_steps:
            return 0.0
        return min(1.0, (step + 1 - start) / (self.total_steps - start))

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = None if self.kind == "constant" else self.decay_position(step)
        if progress is None:
            return 1.0
        if self.kind == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        elif self.kind == "wsd" and self.decay_shape == "1-sqrt":
            shape = 1.0 - math.sqrt(progress)
        else:
            shape = 1.0 - progress
        return self.final_fraction + (1.0 - self.final_fraction) * shape


class ScheduleSettings(Protocol):
    """The schedule's fields of a configuration (`train.*` of a pre-training config); read by name, so this
    module needs no configuration class."""

    warmup_steps: int
    schedule: str
    floor_fraction: float
    decay_fraction: float
    wsd_decay_fraction: float
    decay_shape: str
    decay_start_step: int | None


def schedule_from(train: ScheduleSettings, total_steps: int | None) -> LRSchedule:
    return LRSchedule(
        warmup_steps=train.warmup_steps,
        total_steps=total_steps,
        kind=train.schedule,
        final_fraction=train.floor_fraction,
        decay_fraction=train.decay_fraction,
        wsd_decay_fraction=train.wsd_decay_fraction,
        decay_shape=train.decay_shape,
        decay_start_step=train.decay_start_step,
    )


def parameter_groups(model: nn.Module, weight_decay: float, exempt_norms_and_biases: bool) -> list[dict]:
    """One group, or two when norms and biases (the parameters with fewer than two dimensions) are exempt
    from weight decay. Embedding and decoder matrices are always decayed, as in the released code."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    if not exempt_norms_and_biases:
        return [{"params": [p for _, p in trainable], "weight_decay": weight_decay}]
    decayed = [p for _, p in trainable if p.dim() >= 2]
    exempt = [p for _, p in trainable if p.dim() < 2]
    return [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": exempt, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    exempt_norms_and_biases: bool,
) -> torch.optim.AdamW:
    groups = parameter_groups(model, weight_decay, exempt_norms_and_biases)
    # The fused kernel is the fastest on CUDA and on CPU too (about 8x the default per-tensor loop for `tiny`).
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=True)


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: LRSchedule) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=schedule)
