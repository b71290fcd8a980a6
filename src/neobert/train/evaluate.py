"""Held-out masked-LM loss and accuracy over a fixed set of batches, without building dense logits."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from neobert.train.distributed import all_reduce_sum

IGNORE_INDEX = -100
MODEL_INPUTS = ("input_ids", "attention_mask", "labels", "cu_seqlens", "max_seqlen", "position_ids")


def model_inputs(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch entries the model takes, on `device`; bookkeeping entries of the loader are left out."""
    if "input_ids" not in batch or "labels" not in batch:
        raise ValueError(f"a pre-training batch needs input_ids and labels; got keys {sorted(batch)}")
    moved = {}
    for name in MODEL_INPUTS:
        value = batch.get(name)
        if value is None:
            continue
        moved[name] = value.to(device, non_blocking=True) if torch.is_tensor(value) else value
    return moved


def masked_targets(batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    """The labels of the masked positions, in the order the sparse decoder emits its rows; selected on the
    CPU where the loader left them, so no device sync is needed."""
    labels = batch["labels"]
    return labels[labels != IGNORE_INDEX].to(device, non_blocking=True)


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    masked_tokens: int
    batches: int

    def as_record(self, prefix: str = "eval") -> dict[str, float]:
        return {
            f"{prefix}/loss": self.loss,
            f"{prefix}/accuracy": self.accuracy,
            f"{prefix}/masked_tokens": float(self.masked_tokens),
        }


@torch.no_grad()
def evaluate_mlm(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    device: torch.device,
    max_batches: int | None = None,
    autocast: contextlib.AbstractContextManager | None = None,
    context=None,
) -> EvalResult:
    """Mean cross-entropy and top-1 accuracy over every masked token of `batches` (over all ranks).

    The model runs in training mode when its dropout is zero: that mode is what makes the decoder run
    only on masked positions, and without dropout it computes the same function as eval mode. With
    dropout, eval mode is used and the dense logits are indexed instead.
    """
    config = getattr(model, "config", None) or getattr(getattr(model, "module", None), "config", None)
    sparse = config is not None and float(getattr(config, "dropout", 0.0)) == 0.0
    was_training = model.training
    model.train(sparse)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    count, seen = 0, 0
    try:
        for batch in batches:
            if max_batches is not None and seen >= max_batches:
                break
            targets = masked_targets(batch, device)
            inputs = model_inputs(batch, device)
            with autocast or contextlib.nullcontext():
                logits = model(**inputs).logits
            if not sparse:
                selected = inputs["labels"].reshape(logits.shape[:-1]) != IGNORE_INDEX
                logits = logits[selected]
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, targets, reduction="sum").double()
            correct += (logits.argmax(dim=-1) == targets).sum().double()
            count += int(targets.numel())
            seen += 1
    finally:
        model.train(was_training)
    totals = torch.stack([loss_sum, correct, torch.tensor(float(count), dtype=torch.float64, device=device)])
    if context is not None and context.enabled:
        all_reduce_sum(totals, context)
    loss_total, correct_total, masked = totals.tolist()
    if masked == 0:
        return EvalResult(loss=float("nan"), accuracy=float("nan"), masked_tokens=0, batches=seen)
    return EvalResult(
        loss=loss_total / masked, accuracy=correct_total / masked, masked_tokens=int(masked), batches=seen
    )
