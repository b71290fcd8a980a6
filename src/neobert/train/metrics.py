"""Training metrics: MFU against the accelerator's peak, device-side accumulation, and the sinks that record
them. The model's FLOPs are counted in `neobert.model.flops`."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from neobert.files import write_bytes_atomically
from neobert.model.flops import non_embedding_parameters  # noqa: F401 (demo/ablate.py reads it from here)
from neobert.train.distributed import all_reduce_sum

# Dense bf16 peak of accelerators we know, in FLOP/s (no sparsity), matched against the CUDA device name.
KNOWN_PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def peak_flops(device: torch.device, configured: float | None = None) -> float | None:
    """The peak to compute MFU against: the configured one, a known GPU's bf16 peak, or None."""
    if configured is not None:
        return configured
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in KNOWN_PEAKS.items() if key in name), None)


def mfu(flops: float, seconds: float, peak: float | None) -> float | None:
    if peak is None or seconds <= 0:
        return None
    return flops / seconds / peak


def batch_shape_stats(batch: dict[str, Any]) -> dict[str, float]:
    """Real tokens, token slots (what the batch's tensors hold), sum of squared sequence lengths and masked
    tokens of one loader batch; computed on the CPU tensors the loader hands over (no device sync)."""
    ids = batch["input_ids"]
    masked = float((batch["labels"] != -100).sum()) if "labels" in batch else 0.0
    if batch.get("cu_seqlens") is not None:
        bounds = batch["cu_seqlens"].tolist()
        lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        slots = float(ids.numel())
        return {
            "tokens": float(sum(lengths)),
            "slots": slots,
            "sum_sq": float(sum(n * n for n in lengths)),
            "masked": masked,
        }
    if batch.get("attention_mask") is not None:
        lengths = batch["attention_mask"].reshape(ids.shape).sum(dim=1).tolist()
    else:
        lengths = [ids.shape[-1]] * (ids.shape[0] if ids.dim() == 2 else 1)
    return {
        "tokens": float(sum(lengths)),
        "slots": float(ids.numel()),
        "sum_sq": float(sum(n * n for n in lengths)),
        "masked": masked,
    }


# ---- accumulation without per-step host syncs --------------------------------------------------------------


class MetricAccumulator:
    """Sums of tensors kept on the device, read (and summed over ranks) only when `read` is called.

    `add` never reads a value back to the host, so on CUDA the training loop is not stalled every step.
    Names given in `shared` hold values that are already identical on every rank (the gradient norm under
    DDP) and are not summed over ranks.
    """

    def __init__(self, device: torch.device, shared: Iterable[str] = ()):
        self.device = device
        self.shared = set(shared)
        self._sums: dict[str, torch.Tensor] = {}

    def add(self, name: str, value: torch.Tensor | float) -> None:
        value = value.detach().to(self.device, torch.float64) if torch.is_tensor(value) else float(value)
        if name in self._sums:
            self._sums[name] += value
        else:
            self._sums[name] = torch.zeros((), dtype=torch.float64, device=self.device) + value

    def read(self, context=None) -> dict[str, float]:
        """The sums (over steps since the last read, and over ranks), then start afresh."""
        names = sorted(self._sums)
        if not names:
            return {}
        stacked = torch.stack([self._sums[name] for name in names])
        if context is not None and context.enabled:
            reduced = all_reduce_sum(stacked.clone(), context)
            stacked = torch.stack([stacked[i] if name in self.shared else reduced[i] for i, name in enumerate(names)])
        values = stacked.tolist()
        self._sums = {}
        return dict(zip(names, values, strict=True))


# ---- sinks -------------------------------------------------------------------------------------------------


class JsonlSink:
    """One JSON object per line, appended and flushed at once, so a killed run keeps every line it logged.

    A run resumed at step s redoes the steps its previous session logged after s: those lines move to
    `<name>.superseded.jsonl` (appended, so nothing logged is lost) and the file keeps one record per step."""

    def __init__(self, path: str | os.PathLike, resumed_at: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resumed_at is not None and self.path.is_file():
            self._set_aside_after(resumed_at)
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run

    def _set_aside_after(self, step: int) -> None:
        kept, redone = [], []
        for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True):
            try:
                later = int(json.loads(line).get("step", -1)) > step
            except (ValueError, AttributeError):
                later = False  # a line cut short by a kill stays where it was
            (redone if later else kept).append(line if line.endswith("\n") else line + "\n")
        if not redone:
            return
        superseded = self.path.with_name(self.path.stem + ".superseded.jsonl")
        with open(superseded, "a", encoding="utf-8") as handle:
            handle.writelines(redone)
            handle.flush()
            os.fsync(handle.fileno())
        write_bytes_atomically(self.path, "".join(kept).encode("utf-8"))

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, allow_nan=True) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class TensorBoardSink:
    def __init__(self, folder: str | os.PathLike):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise RuntimeError(f"the tensorboard sink needs the tensorboard package ({error})") from None
        self._writer = SummaryWriter(log_dir=str(folder))

    def write(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbSink:
    def __init__(self, project: str | None, folder: str | os.PathLike, config: dict[str, Any] | None):
        try:
            import wandb
        except ImportError:
            raise RuntimeError("system.log_sinks asks for wandb, which is not installed (pip install wandb)") from None
        self._run = wandb.init(project=project or "neobert", dir=str(folder), config=config)

    def write(self, record: dict[str, Any]) -> None:
        self._run.log({k: v for k, v in record.items() if k != "step"}, step=int(record["step"]))

    def close(self) -> None:
        self._run.finish()


class ConsoleProgress:
    """A tqdm progress bar over optimiser steps, showing the latest metrics. Without the bar, messages are
    printed as lines; `quiet` (the other ranks) silences both."""

    def __init__(self, total: int | None, initial: int = 0, enabled: bool = True, quiet: bool = False):
        self._bar = None
        self.quiet = quiet
        if enabled and not quiet:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def set_total(self, total: int) -> None:
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def update(self, steps: int = 1, metrics: dict[str, Any] | None = None) -> None:
        if self._bar is None:
            return
        if metrics:
            self._bar.set_postfix({k: _short(v) for k, v in metrics.items()}, refresh=False)
        self._bar.update(steps)

    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text)
        elif not self.quiet:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


class MetricsLogger:
    """The run's sinks behind one `log(record)`; only the main rank writes."""

    def __init__(
        self,
        folder: str | os.PathLike,
        sinks: Iterable[str],
        enabled: bool = True,
        wandb_project: str | None = None,
        config: dict[str, Any] | None = None,
        resumed_at: int | None = None,
    ):
        self.folder = Path(folder)
        self.sinks: list[Any] = []
        if not enabled:
            return
        for sink in sinks:
            if sink == "jsonl":
                self.sinks.append(JsonlSink(self.folder / "metrics.jsonl", resumed_at))
            elif sink == "tensorboard":
                self.sinks.append(TensorBoardSink(self.folder / "tensorboard"))
            elif sink == "wandb":
                self.sinks.append(WandbSink(wandb_project, self.folder, config))
            else:
                raise ValueError(f"unknown log sink {sink!r}")

    def log(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


# ---- the loss curve ----------------------------------------------------------------------------------------


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # the last line of a killed run may be cut short
    return records


def plot_loss_curve(jsonl: str | os.PathLike, png: str | os.PathLike, title: str = "MLM loss") -> Path:
    """Training loss (and held-out loss where logged) against the step, written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_jsonl(jsonl)
    series = {
        "train": [(r["step"], r["train/loss"]) for r in records if _finite(r.get("train/loss"))],
        "held-out": [(r["step"], r["eval/loss"]) for r in records if _finite(r.get("eval/loss"))],
    }
    if not series["train"] and not series["held-out"]:
        raise ValueError(f"{jsonl} holds no train/loss or eval/loss records to plot")
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=120)
    for label, points in series.items():
        if points:
            steps, losses = zip(*points, strict=True)
            axes.plot(steps, losses, label=label, marker="o" if label == "held-out" else None, linewidth=1.2)
    axes.set_xlabel("step")
    axes.set_ylabel("loss (cross-entropy over masked tokens)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png)
    plt.close(figure)
    return png


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
