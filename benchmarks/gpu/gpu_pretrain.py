"""Timed pre-training steps on one GPU, as `gpu_check.py` runs them for NeoBERT and its peers.

A step is forward with labels under bf16 autocast, backward, gradient clipping and a fused AdamW step, on
one fixed synthetic batch, so the loss must fall within a few steps (the model learns the batch's token
distribution). Nothing is read back from the device inside the timed loop: losses stay on the device
until the end. Compilation is counted through torch._dynamo's counters, so a graph compiled during the
timed steps (a recompilation per step) shows as a non-zero `recompiles`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

import neobert
from neobert.model.flops import non_embedding_parameters, training_flops
from neobert.train.metrics import batch_shape_stats

CLS_ID, SEP_ID, MASK_ID = 101, 102, 103
FIRST_ID = 1000  # ids below are special or unused in the bert-base-uncased vocabulary
MASK_RATE = 0.2


def synthetic_batch(batch: int, length: int, vocab: int, seed: int = 0) -> tuple[dict, dict]:
    """`batch` documents of `length` tokens, 20% of them masked: the (packed, padded) forms of the same
    tokens, on the CPU. Ids follow Zipf's law, as words do, so a model has a distribution to learn."""
    generator = torch.Generator().manual_seed(seed)
    weights = 1.0 / torch.arange(1, vocab - FIRST_ID + 1, dtype=torch.float64)
    ids = FIRST_ID + torch.multinomial(weights, batch * length, replacement=True, generator=generator)
    ids = ids.reshape(batch, length)
    ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
    masked = torch.rand(ids.shape, generator=generator) < MASK_RATE
    masked[:, 0] = masked[:, -1] = False
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    inputs = torch.where(masked, torch.full_like(ids, MASK_ID), ids)
    padded = {"input_ids": inputs, "labels": labels}  # every position is real: no attention mask
    packed = {
        "input_ids": inputs.reshape(1, -1),
        "labels": labels.reshape(1, -1),
        "cu_seqlens": torch.arange(0, (batch + 1) * length, length, dtype=torch.int32),
        "max_seqlen": length,
    }
    return packed, padded


def neobert_step_flops(config: neobert.NeoBERTConfig, batch: dict) -> float:
    """Model FLOPs of one training step (3 x forward), by the library's count."""
    stats = batch_shape_stats(batch)
    parameters = non_embedding_parameters(config)
    return training_flops(config, stats["tokens"], stats["sum_sq"], stats["masked"], parameters)


def compile_model(model: nn.Module, backend: str) -> nn.Module:
    """NeoBERT block by block (its packed layout is built outside the blocks, from host-side lengths);
    the peers as a whole, as their users would."""
    if isinstance(model, neobert.NeoBERTForMaskedLM):
        for block in model.model.transformer_encoder:
            block.compile(backend=backend)
        return model
    return torch.compile(model, backend=backend)


def dynamo_counts() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {f"{group}.{key}": int(value) for group, values in counters.items() for key, value in values.items()}


def counted_between(before: dict[str, int], after: dict[str, int], prefix: str) -> int:
    """What dynamo counted under `prefix` between two `dynamo_counts()` snapshots (the counters are global
    to the process). Under "frames.total", a frame served from the cache adds nothing."""
    return sum(value - before.get(key, 0) for key, value in after.items() if key.startswith(prefix))


def compile_report(before: dict[str, int], warm: dict[str, int], end: dict[str, int]) -> dict:
    """From dynamo's counts before a run, after its warm-up and at its end: frames compiled in the timed
    steps (`recompiles`), frames that failed to compile, graphs and graph breaks, and dynamo's reasons."""
    return {
        "recompiles": counted_between(warm, end, "frames.total"),
        # A frame past the recompile limit fails to compile and runs eager from then on, adding no frames.
        "uncompiled_frames": counted_between(before, end, "frames.total") - counted_between(before, end, "frames.ok"),
        "graphs": counted_between(before, end, "stats.unique_graphs"),
        "graph_breaks": counted_between(before, end, "graph_break."),
        "dynamo_unsupported": sorted(
            {
                key.split(".", 1)[1].splitlines()[0]
                for key, count in end.items()
                if key.startswith("unimplemented.") and count > before.get(key, 0)
            }
        ),
    }


def synchronizer(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def train_run(
    model: nn.Module,
    batch: dict,
    device: torch.device,
    steps: int,
    warmup: int,
    lr: float,
    compile_backend: str | None = None,
    deadline: float | None = None,
    profile_steps: int = 0,
) -> dict:
    """`warmup` untimed steps (compilation included), then up to `steps` timed ones (fewer if
    `deadline`, a `time.perf_counter()` value, passes), then `profile_steps` under the profiler."""
    model = model.to(device).train()
    if isinstance(model, neobert.NeoBERTForMaskedLM):
        model.model.check_inputs = False  # no device read-back in the step
    runner = compile_model(model, compile_backend) if compile_backend else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), fused=True)
    # cu_seqlens stays on the host, where the model reads the document lengths: on the device that read
    # would wait for the GPU every step.
    batch = {k: v.to(device) if torch.is_tensor(v) and k != "cu_seqlens" else v for k, v in batch.items()}
    synchronize = synchronizer(device)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = runner(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.detach()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses = []
    before = dynamo_counts()
    start = time.perf_counter()
    for _ in range(warmup):
        losses.append(step())
    synchronize()
    warm = dynamo_counts()
    started = time.perf_counter()
    warmup_s = started - start
    done = 0
    while done < steps and (deadline is None or done == 0 or time.perf_counter() < deadline):
        losses.append(step())
        done += 1
    synchronize()
    seconds = time.perf_counter() - started
    compilation = compile_report(before, warm, dynamo_counts()) if compile_backend else {}
    values = torch.stack(losses).float().tolist()
    result = {
        "compile_backend": compile_backend,
        "warmup_steps": warmup,
        "warmup_s": warmup_s,
        "steps": done,
        "seconds": seconds,
        "seconds_per_step": seconds / done,
        "losses": values,
        "finite": all(math.isfinite(v) for v in values),
        "loss_decreased": values[-1] < values[0],
        "recompiles": None,
        **compilation,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }
    if profile_steps:
        try:
            result["profile"] = top_kernels(step, device, profile_steps)
        except Exception as error:  # the profile explains a figure; its failure must not cost the figure
            result["profile"] = {"error": f"{type(error).__name__}: {error}"}
    return result


def top_kernels(step: Callable[[], object], device: torch.device, steps: int, top: int = 12) -> dict:
    """Where `steps` steps spend their time: CUDA kernels by total device time (on the CPU, operators by
    self CPU time), with each one's share of the total."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        synchronizer(device)()
    events = prof.key_averages()
    if cuda:
        rows = [(e.key, e.device_time_total, e.count) for e in events if e.device_type == DeviceType.CUDA]
    else:
        rows = [(e.key, e.self_cpu_time_total, e.count) for e in events]
    rows.sort(key=lambda row: -row[1])
    total = sum(row[1] for row in rows)
    return {
        "kind": "CUDA kernels, device time" if cuda else "CPU operators, self time",
        "steps": steps,
        "total_ms": total / 1e3,
        "top": [
            {"name": name[:120], "ms": us / 1e3, "share": us / total if total else 0.0, "calls": count}
            for name, us, count in rows[:top]
        ],
    }
