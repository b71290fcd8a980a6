"""Forward-pass throughput of NeoBERT, BERT and ModernBERT on this machine's CPU (fp32, inference).

Measures, in one process: the fp32 matrix-product peak, each model's forward throughput as a share of
that peak, and NeoBERT's real-token throughput on a batch of varied lengths, padded versus packed.
Prints a table and writes every figure, with the setup, to a JSON file.

    python benchmarks/model_forward.py            # the full run: several minutes
    python benchmarks/model_forward.py --quick    # tiny sizes, seconds; what the test runs
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig, BertModel, ModernBertConfig, ModernBertModel

import neobert
from bench_common import (
    MIN_CORES,
    ROOT,
    cores_cell,
    measure_peak,
    set_allocator,
    setup_info,
    table,
    target,
    time_calls,
    write_json,
)

PEAK_TARGET = 0.90
PACKED_TARGET = 1.5
TOKEN_RANGE = (1000, 30000)
LENGTHS_SEED = 18  # with uniform [16, 512] and one forced to 512, gives a mean of about 256
MODERNBERT_NOTE = (
    "ModernBERT's sliding-window layers attend to 128 keys, not L; the formula counts full attention, "
    "so its GFLOP/s and % of peak are upper bounds."
)


@dataclass
class Plan:
    matrix_sizes: tuple[int, ...]
    neobert_preset: str
    shapes: tuple[tuple[int, int], ...]  # (batch, length); the first one carries the peak target
    varied_max_len: int
    repeats: int
    baseline: dict = field(default_factory=dict)  # overrides for the BERT and ModernBERT configs
    bert_max_positions: int = 512


FULL = Plan((2048, 4096), "neobert-250m", ((8, 512), (1, 2048)), 512, 5)
# Mirrors the full run at tiny sizes, BERT's position limit included (so its long shape is skipped too).
QUICK = Plan(
    (256, 512),
    "tiny",
    ((2, 64), (1, 128)),
    64,
    1,
    bert_max_positions=64,
    baseline=dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=4, intermediate_size=512),
)


@dataclass
class Candidate:
    name: str
    build: Callable[[], nn.Module]
    is_embedding: Callable[[str], bool]  # parameter names left out of the FLOP count
    max_length: int | None = None


def neobert_embedding(name: str) -> bool:
    return name.startswith(("encoder.", "positional_embedding."))


def hf_embedding(name: str) -> bool:
    return "embeddings" in name  # token, position and token-type embeddings (and their norm)


def candidates(plan: Plan) -> list[Candidate]:
    """Built lazily, one model in memory at a time."""
    neo_config = neobert.NeoBERTConfig.from_preset(plan.neobert_preset)
    bert_config = BertConfig(**plan.baseline, max_position_embeddings=plan.bert_max_positions)
    modern_config = ModernBertConfig(**plan.baseline)
    return [
        Candidate("neobert", lambda: neobert.NeoBERTModel(neo_config), neobert_embedding),
        Candidate(
            "bert",
            lambda: BertModel(bert_config, add_pooling_layer=False),
            hf_embedding,
            bert_config.max_position_embeddings,
        ),
        Candidate("modernbert", lambda: ModernBertModel(modern_config), hf_embedding),
    ]


def non_embedding_params(model: nn.Module, is_embedding: Callable[[str], bool]) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if not is_embedding(name))


def forward_flops(params: int, config, batch: int, length: int) -> float:
    """2 x parameters x tokens for the matrices, plus 4 x layers x L^2 x hidden x batch for attention."""
    attention = 4 * config.num_hidden_layers * length**2 * config.hidden_size * batch
    return 2 * params * batch * length + attention


def random_ids(batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(*TOKEN_RANGE, (batch, length), generator=generator)


def measure_forward(model: nn.Module, params: int, shape: tuple[int, int], repeats: int, peak: float) -> dict:
    batch, length = shape
    ids = random_ids(batch, length, torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    timing = time_calls(lambda: model(input_ids=ids, attention_mask=mask), repeats)
    flops = forward_flops(params, model.config, batch, length)
    gflops = flops / timing["median_s"] / 1e9
    tokens_per_s = batch * length / timing["median_s"]
    return {
        **timing,
        "tokens_per_s": tokens_per_s,
        "flops": flops,
        "gflops": gflops,
        "percent_of_peak": 100 * gflops / peak,
    }


def benchmark_models(plan: Plan, repeats: int, peak: float) -> list[dict]:
    rows = []
    for candidate in candidates(plan):
        model = candidate.build().eval()
        params = non_embedding_params(model, candidate.is_embedding)
        for batch, length in plan.shapes:
            row = {"model": candidate.name, "batch": batch, "length": length, "non_embedding_params": params}
            if candidate.max_length is not None and length > candidate.max_length:
                row["skipped"] = f"{batch}x{length}: max_position_embeddings is {candidate.max_length}"
            else:
                row.update(measure_forward(model, params, (batch, length), repeats, peak))
            rows.append(row)
        del model
    return rows


def varied_lengths(max_len: int, count: int = 8) -> list[int]:
    generator = torch.Generator().manual_seed(LENGTHS_SEED)
    lengths = torch.randint(max(1, max_len // 32), max_len + 1, (count,), generator=generator).tolist()
    lengths[0] = max_len
    return lengths


def padded_and_packed(lengths: list[int]) -> tuple[dict, dict]:
    """The same tokens twice: right-padded (len(lengths), max) with a 1/0 mask, and packed in one row."""
    longest = max(lengths)
    ids = random_ids(len(lengths), longest, torch.Generator().manual_seed(1))
    mask = (torch.arange(longest)[None] < torch.tensor(lengths)[:, None]).long()
    padded = {"input_ids": ids * mask, "attention_mask": mask}
    bounds = torch.tensor([0, *lengths]).cumsum(0).to(torch.int32)
    real = torch.cat([row[:n] for row, n in zip(ids, lengths, strict=True)])[None]
    packed = {"input_ids": real, "cu_seqlens": bounds, "max_seqlen": longest}
    return padded, packed


def max_difference(padded_out: torch.Tensor, packed_out: torch.Tensor, lengths: list[int]) -> float:
    """Largest |packed - padded| over real positions."""
    real = torch.cat([padded_out[i, :n] for i, n in enumerate(lengths)])
    return float((real - packed_out[0]).abs().max())


def benchmark_packing(plan: Plan, repeats: int) -> dict:
    model = neobert.NeoBERTModel(neobert.NeoBERTConfig.from_preset(plan.neobert_preset)).eval()
    lengths = varied_lengths(plan.varied_max_len)
    padded, packed = padded_and_packed(lengths)
    real_tokens = sum(lengths)
    result = {"preset": plan.neobert_preset, "lengths": lengths, "mean_length": real_tokens / len(lengths)}
    for name, inputs in (("padded", padded), ("packed", packed)):
        timing = time_calls(lambda inputs=inputs: model(**inputs), repeats)
        result[name] = {**timing, "real_tokens_per_s": real_tokens / timing["median_s"]}
    result["ratio"] = result["packed"]["real_tokens_per_s"] / result["padded"]["real_tokens_per_s"]
    padded_out = model(**padded).last_hidden_state
    result["max_abs_diff"] = max_difference(padded_out, model(**packed).last_hidden_state, lengths)
    return result


def check_targets(forward: list[dict], packing: dict, plan: Plan) -> list[dict]:
    batch, length = plan.shapes[0]
    neo = next(r for r in forward if r["model"] == "neobert" and (r["batch"], r["length"]) == (batch, length))
    return [
        target(f"NeoBERT {batch}x{length} % of peak", neo["percent_of_peak"], 100 * PEAK_TARGET),
        target("packed/padded real tokens/s", packing["ratio"], PACKED_TARGET),
    ]


def forward_cells(r: dict) -> list[str]:
    cells = [r["model"], f"{r['batch']}x{r['length']}"]
    if "skipped" in r:
        return cells + ["n/a"] * 5
    return cells + [
        f"{r['median_s']:.3f}",
        f"{r['tokens_per_s']:.0f}",
        f"{r['gflops']:.1f}",
        f"{r['percent_of_peak']:.1f}%",
        cores_cell(r),
    ]


def render(report: dict) -> str:
    setup, peak, packing = report["setup"], report["peak"], report["packed_vs_padded"]
    sizes = peak["sizes"]
    dirty = " (with uncommitted edits)" if setup["git_dirty"] else ""
    lines = [
        f"CPU: {setup['cpu_model']}, {setup['threads']} threads; torch {setup['torch']}, "
        f"transformers {setup['transformers']}; allocator: {setup['allocator']}",
        f"commit {setup['git_commit']}{dirty}; {setup['date']}; median of {setup['repeats']} timed runs",
        "",
        "fp32 matrix-product peak (a @ b, square matrices)",
    ]
    rows = [[str(r["size"]), f"{r['median_s']:.4f}", f"{r['gflops']:.1f}", cores_cell(r)] for r in sizes]
    lines += table(("size", "median s", "GFLOP/s", "cores"), rows)
    lines += [f"peak: {peak['gflops']:.1f} GFLOP/s", "", "Forward throughput (fp32, eval, inference_mode)"]
    header = ("model", "shape", "median s", "tokens/s", "GFLOP/s", "% peak", "cores")
    lines += table(header, [forward_cells(r) for r in report["forward"]])
    lines += [f"n/a: {r['model']} {r['skipped']}" for r in report["forward"] if "skipped" in r]
    lines += [f"note: {MODERNBERT_NOTE}", f"* below {MIN_CORES} cores: the machine was busy; unreliable.", ""]
    lines.append(
        f"Padded vs packed, NeoBERT {packing['preset']}: lengths {packing['lengths']} "
        f"(mean {packing['mean_length']:.1f}, {sum(packing['lengths'])} real tokens)"
    )
    rows = [
        [name, f"{r['median_s']:.3f}", f"{r['real_tokens_per_s']:.0f}", cores_cell(r)]
        for name, r in ((name, packing[name]) for name in ("padded", "packed"))
    ]
    lines += table(("layout", "median s", "real tokens/s", "cores"), rows)
    lines += [
        f"packed/padded: {packing['ratio']:.2f}x; max |packed - padded| at real positions: "
        f"{packing['max_abs_diff']:.2e}",
        "",
    ]
    lines += [
        f"{'PASS' if t['passed'] else 'FAIL'} {t['name']}: {t['value']:.2f} (target >= {t['target']:g})"
        for t in report["targets"]
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: seconds, for the test")
    parser.add_argument("--repeats", type=int, default=None, help="timed forwards per figure (default 5)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "model_forward.json")
    parser.add_argument("--no-tune-allocator", action="store_true", help="keep glibc's malloc defaults")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    allocator = set_allocator(not args.no_tune_allocator)
    plan = QUICK if args.quick else FULL
    repeats = args.repeats or plan.repeats
    report: dict = {"setup": {**setup_info(allocator, args.quick), "repeats": repeats}}
    with torch.inference_mode():
        report["peak"] = measure_peak(plan.matrix_sizes, repeats)
        report["forward"] = benchmark_models(plan, repeats, report["peak"]["gflops"])
        report["packed_vs_padded"] = benchmark_packing(plan, repeats)
    report["targets"] = check_targets(report["forward"], report["packed_vs_padded"], plan)
    report["notes"] = [MODERNBERT_NOTE]
    write_json(report, args.out)  # before printing, so a closed stdout cannot lose the figures
    print(render(report))
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()
