"""Training-step throughput of NeoBERT against BertForMaskedLM and ModernBertForMaskedLM (CPU), in fp32 and
with bf16 autocast.

One batch of real-looking shape for every model: 8 documents, the longest 512 tokens, the mean about half
that, 20% of the real tokens masked (the same positions for every model). The peers take it padded
(8 x 512 with a mask), as they are used; NeoBERT takes it packed (one row, `cu_seqlens`) and, for
reference, padded. A step is forward with labels, backward and a fused AdamW step; in bf16 it is the
trainer's: fp32 master weights, the forward under bf16 autocast, backward and the update outside it.

Reported per model and precision: seconds a step, real tokens a second, cores used, and the FLOP/s of the
work each model actually does (3 x forward: encoder matrices and attention over the positions it
computes, plus the MLM head over the positions it decodes: all of them for the peers, the masked ones for
NeoBERT), as a share of that precision's matrix-product peak measured in the same run (`peak` is fp32,
`peak_bf16` bf16), and bf16's real tokens/s over fp32's. The targets are set for fp32.

    python benchmarks/peers/train_step.py            # several minutes
    python benchmarks/peers/train_step.py --quick    # tiny sizes, seconds
    python benchmarks/peers/train_step.py --precision fp32   # one precision (bf16 is ~10x slower on AVX2 CPUs)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM, ModernBertConfig, ModernBertForMaskedLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench_common, one folder up

import neobert
from bench_common import (
    ROOT,
    add_precision_option,
    add_speed_ratios,
    computing_in,
    cores_cell,
    measure_peaks,
    peak_key,
    peaks_line,
    precisions,
    ratio_cell,
    set_allocator,
    setup_info,
    table,
    target,
    time_calls,
    write_json,
)

PEAK_TARGET = 85.0
LENGTHS = [512, 383, 293, 309, 177, 39, 94, 258]  # the forward benchmark's varied batch (mean 258)
QUICK_LENGTHS = [64, 48, 30, 17, 9, 40, 22, 56]
MASK_RATE = 0.2


@dataclass
class Runner:
    name: str
    build: Callable[[], nn.Module]
    layout: str  # "padded" or "packed"
    head_on_all_positions: bool


def runners(quick: bool) -> list[Runner]:
    small = dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=4, intermediate_size=512)
    neo = neobert.NeoBERTConfig.from_preset("tiny" if quick else "neobert-250m")
    bert = BertConfig(**(small if quick else {}))
    modern = ModernBertConfig(**(small if quick else {}))
    return [
        Runner("neobert (packed)", lambda: neobert.NeoBERTForMaskedLM(neo), "packed", False),
        Runner("neobert (padded)", lambda: neobert.NeoBERTForMaskedLM(neo), "padded", False),
        Runner("bert", lambda: BertForMaskedLM(bert), "padded", True),
        Runner("modernbert", lambda: ModernBertForMaskedLM(modern), "padded", True),
    ]


def batches(lengths: list[int]) -> tuple[dict, dict]:
    """The same documents and masked positions, padded (B, L) and packed (1, T)."""
    generator = torch.Generator().manual_seed(0)
    longest = max(lengths)
    ids = torch.randint(1000, 30000, (len(lengths), longest), generator=generator)
    real = torch.arange(longest)[None] < torch.tensor(lengths)[:, None]
    masked = (torch.rand(ids.shape, generator=generator) < MASK_RATE) & real
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    inputs = torch.where(masked, torch.full_like(ids, 103), ids) * real  # [MASK] = 103, padding = 0
    padded = {"input_ids": inputs, "attention_mask": real.long(), "labels": labels}
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    packed = {"input_ids": inputs[real][None], "labels": labels[real][None], "cu_seqlens": cu, "max_seqlen": longest}
    return padded, packed


def head_parameters(model: nn.Module) -> int:
    """Parameters of the MLM head applied per decoded position; a decoder tied to the embedding counts too."""
    if isinstance(model, neobert.NeoBERTForMaskedLM):
        head = [model.decoder]
    elif isinstance(model, BertForMaskedLM):
        head = [model.cls]
    else:
        head = [model.head, model.decoder]
    return sum(p.numel() for module in head for p in module.parameters())


def encoder_parameters(model: nn.Module) -> int:
    base = model.model if hasattr(model, "model") else model.bert
    embedding = {id(p) for p in base.get_input_embeddings().parameters()}
    return sum(p.numel() for name, p in base.named_parameters() if id(p) not in embedding and "embeddings" not in name)


def step_flops(model: nn.Module, runner: Runner, batch: dict) -> float:
    config = model.config
    if runner.layout == "packed":
        cu = batch["cu_seqlens"].tolist()
        spans = [b - a for a, b in zip(cu[:-1], cu[1:], strict=True)]
    else:
        spans = [batch["input_ids"].shape[1]] * batch["input_ids"].shape[0]
    positions = sum(spans)
    attention = sum(4 * config.num_hidden_layers * n * n * config.hidden_size for n in spans)
    decoded = positions if runner.head_on_all_positions else int((batch["labels"] != -100).sum())
    forward = 2 * encoder_parameters(model) * positions + attention + 2 * head_parameters(model) * decoded
    return 3 * forward


def measure(runner: Runner, batch: dict, repeats: int, precision: str, peak: float, real_tokens: int) -> dict:
    torch.manual_seed(0)
    model = runner.build().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with computing_in(precision):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()

    timing = time_calls(step, repeats)
    flops = step_flops(model, runner, batch)
    gflops = flops / timing["median_s"] / 1e9
    return {
        "model": runner.name,
        "precision": precision,
        **timing,
        "real_tokens_per_s": real_tokens / timing["median_s"],
        "flops_per_step": flops,
        "gflops": gflops,
        "percent_of_peak": 100 * gflops / peak,
    }


def fp32_targets(steps: list[dict]) -> list[dict]:
    """The targets are set for fp32: none when only bf16 ran."""
    by_name = {r["model"]: r for r in steps if r["precision"] == "fp32"}
    if not by_name:
        return []
    best_peer = max(by_name["bert"]["real_tokens_per_s"], by_name["modernbert"]["real_tokens_per_s"])
    return [
        target("NeoBERT (packed) % of peak", by_name["neobert (packed)"]["percent_of_peak"], PEAK_TARGET),
        target(
            "NeoBERT real tokens/s over the faster peer",
            by_name["neobert (packed)"]["real_tokens_per_s"] / best_peer,
            1.0,
        ),
    ]


def render(report: dict) -> str:
    setup = report["setup"]
    lines = [
        f"CPU: {setup['cpu_model']}, {setup['threads']} threads; torch {setup['torch']}, "
        f"transformers {setup['transformers']}; allocator: {setup['allocator']}; commit {setup['git_commit']}",
        f"batch: {len(report['lengths'])} documents, lengths {report['lengths']} ({report['real_tokens']} real "
        f"tokens); median of {setup['repeats']} steps",
        peaks_line(report),
        "bf16: autocast over fp32 master weights, as the trainer runs; % of that precision's peak",
        "",
    ]
    rows = [
        [
            r["model"],
            r["precision"],
            f"{r['median_s']:.2f}",
            f"{r['real_tokens_per_s']:.0f}",
            f"{r['gflops']:.1f}",
            f"{r['percent_of_peak']:.1f}%",
            ratio_cell(r),
            cores_cell(r),
        ]
        for r in report["steps"]
    ]
    header = ("model", "precision", "s/step", "real tokens/s", "GFLOP/s", "% peak", "x fp32", "cores")
    lines += table(header, rows)
    if not report["targets"]:
        lines += ["", "no targets checked: they are set for fp32 (run with --precision fp32 or both)"]
    lines += [
        "",
        *(
            f"{'PASS' if t['passed'] else 'FAIL'} {t['name']}: {t['value']:.2f} (target >= {t['target']:g})"
            for t in report["targets"]
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models and batch: seconds, for the test")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per model (default 3)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "train_step.json")
    parser.add_argument("--no-tune-allocator", action="store_true", help="keep glibc's malloc defaults")
    add_precision_option(parser)
    args = parser.parse_args(argv)
    allocator = set_allocator(not args.no_tune_allocator)
    repeats = args.repeats or (1 if args.quick else 3)
    lengths = QUICK_LENGTHS if args.quick else LENGTHS
    padded, packed = batches(lengths)
    report: dict = {
        "setup": {**setup_info(allocator, args.quick), "repeats": repeats},
        "lengths": lengths,
        "real_tokens": sum(lengths),
        **measure_peaks((256, 512) if args.quick else (2048, 4096), repeats),
    }
    report["steps"] = [
        measure(
            runner,
            packed if runner.layout == "packed" else padded,
            repeats,
            precision,
            report[peak_key(precision)]["gflops"],
            sum(lengths),
        )
        for runner in runners(args.quick)
        for precision in precisions(args.precision)
    ]
    add_speed_ratios(report["steps"], "real_tokens_per_s", lambda r: r["model"])
    report["targets"] = fp32_targets(report["steps"])
    write_json(report, args.out)
    print(render(report))
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()
