"""Forward-pass throughput of NeoBERT, BERT and ModernBERT on this machine's CPU (inference), in fp32 and
under bf16 autocast.

Measures, in one process: the fp32 and bf16 matrix-product peaks, each model's forward throughput in each
precision as a share of that precision's peak (and bf16's speed over fp32's), and NeoBERT's real-token
throughput on a batch of varied lengths, padded versus packed. Prints a table and writes every figure,
with the setup, to a JSON file: `peak` and `packed_vs_padded` are fp32, `peak_bf16` and
`packed_vs_padded_bf16` bf16; each forward row names its precision. The targets are set for fp32.

    python benchmarks/peers/model_forward.py            # the full run: several minutes
    python benchmarks/peers/model_forward.py --quick    # tiny sizes, seconds; what the test runs
    python benchmarks/peers/model_forward.py --precision fp32   # one precision (bf16 is ~10x slower on AVX2 CPUs)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig, BertModel, ModernBertConfig, ModernBertModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench_common, one folder up

import neobert
from bench_common import (
    MIN_CORES,
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


def measure_forward(
    model: nn.Module, params: int, shape: tuple[int, int], repeats: int, precision: str, peak: float
) -> dict:
    batch, length = shape
    ids = random_ids(batch, length, torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)

    def forward():
        with computing_in(precision):
            model(input_ids=ids, attention_mask=mask)

    timing = time_calls(forward, repeats)
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


def benchmark_models(plan: Plan, repeats: int, peaks: dict[str, float]) -> list[dict]:
    """One row per model, shape and precision (in `peaks`), the model built once for all of them."""
    rows = []
    for candidate in candidates(plan):
        model = candidate.build().eval()
        params = non_embedding_params(model, candidate.is_embedding)
        for batch, length in plan.shapes:
            for precision, peak in peaks.items():
                row = {"model": candidate.name, "batch": batch, "length": length, "precision": precision}
                row["non_embedding_params"] = params
                if candidate.max_length is not None and length > candidate.max_length:
                    row["skipped"] = f"{batch}x{length}: max_position_embeddings is {candidate.max_length}"
                else:
                    row.update(measure_forward(model, params, (batch, length), repeats, precision, peak))
                rows.append(row)
        del model
    add_speed_ratios(rows, "tokens_per_s", lambda r: (r["model"], r["batch"], r["length"]))
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


def benchmark_packing(plan: Plan, repeats: int, precision: str) -> dict:
    model = neobert.NeoBERTModel(neobert.NeoBERTConfig.from_preset(plan.neobert_preset)).eval()
    lengths = varied_lengths(plan.varied_max_len)
    padded, packed = padded_and_packed(lengths)
    real_tokens = sum(lengths)
    result = {
        "preset": plan.neobert_preset,
        "precision": precision,
        "lengths": lengths,
        "mean_length": real_tokens / len(lengths),
    }

    def forward(inputs: dict) -> torch.Tensor:
        with computing_in(precision):
            return model(**inputs).last_hidden_state.float()

    for name, inputs in (("padded", padded), ("packed", packed)):
        timing = time_calls(lambda inputs=inputs: forward(inputs), repeats)
        result[name] = {**timing, "real_tokens_per_s": real_tokens / timing["median_s"]}
    result["ratio"] = result["packed"]["real_tokens_per_s"] / result["padded"]["real_tokens_per_s"]
    result["max_abs_diff"] = max_difference(forward(padded), forward(packed), lengths)
    return result


def check_targets(forward: list[dict], packing: dict | None, plan: Plan) -> list[dict]:
    """The targets are set for fp32: none when only bf16 ran."""
    if packing is None:
        return []
    batch, length = plan.shapes[0]
    neo = next(
        r
        for r in forward
        if r["model"] == "neobert" and (r["batch"], r["length"], r["precision"]) == (batch, length, "fp32")
    )
    return [
        target(f"NeoBERT {batch}x{length} % of peak", neo["percent_of_peak"], 100 * PEAK_TARGET),
        target("packed/padded real tokens/s", packing["ratio"], PACKED_TARGET),
    ]


def forward_cells(r: dict) -> list[str]:
    cells = [r["model"], f"{r['batch']}x{r['length']}", r["precision"]]
    if "skipped" in r:
        return cells + ["n/a"] * 6
    return cells + [
        f"{r['median_s']:.3f}",
        f"{r['tokens_per_s']:.0f}",
        f"{r['gflops']:.1f}",
        f"{r['percent_of_peak']:.1f}%",
        ratio_cell(r),
        cores_cell(r),
    ]


def packing_lines(packing: dict) -> list[str]:
    lines = [
        f"Padded vs packed, NeoBERT {packing['preset']}, {packing['precision']}: lengths {packing['lengths']} "
        f"(mean {packing['mean_length']:.1f}, {sum(packing['lengths'])} real tokens)"
    ]
    rows = [
        [name, f"{r['median_s']:.3f}", f"{r['real_tokens_per_s']:.0f}", cores_cell(r)]
        for name, r in ((name, packing[name]) for name in ("padded", "packed"))
    ]
    lines += table(("layout", "median s", "real tokens/s", "cores"), rows)
    return lines + [
        f"packed/padded: {packing['ratio']:.2f}x; max |packed - padded| at real positions: "
        f"{packing['max_abs_diff']:.2e}",
        "",
    ]


def render(report: dict) -> str:
    setup = report["setup"]
    dirty = " (with uncommitted edits)" if setup["git_dirty"] else ""
    lines = [
        f"CPU: {setup['cpu_model']}, {setup['threads']} threads; torch {setup['torch']}, "
        f"transformers {setup['transformers']}; allocator: {setup['allocator']}",
        f"commit {setup['git_commit']}{dirty}; {setup['date']}; median of {setup['repeats']} timed runs",
        "",
        "matrix-product peaks (a @ b, square matrices)",
    ]
    rows = [
        [str(r["size"]), precision, f"{r['median_s']:.4f}", f"{r['gflops']:.1f}", cores_cell(r)]
        for precision in ("fp32", "bf16")
        for r in report[peak_key(precision)]["sizes"]
    ]
    lines += table(("size", "precision", "median s", "GFLOP/s", "cores"), rows)
    lines += [
        peaks_line(report),
        "",
        "Forward throughput (eval, inference_mode; bf16: autocast over fp32 weights; % of that precision's peak)",
    ]
    header = ("model", "shape", "precision", "median s", "tokens/s", "GFLOP/s", "% peak", "x fp32", "cores")
    lines += table(header, [forward_cells(r) for r in report["forward"]])
    skipped = {(r["model"], r["skipped"]) for r in report["forward"] if "skipped" in r}
    lines += [f"n/a: {model} {reason}" for model, reason in sorted(skipped)]
    lines += [f"note: {MODERNBERT_NOTE}", f"* below {MIN_CORES} cores: the machine was busy; unreliable.", ""]
    for key in ("packed_vs_padded", "packed_vs_padded_bf16"):
        if key in report:
            lines += packing_lines(report[key])
    if not report["targets"]:
        lines.append("no targets checked: they are set for fp32 (run with --precision fp32 or both)")
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
    add_precision_option(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    allocator = set_allocator(not args.no_tune_allocator)
    plan = QUICK if args.quick else FULL
    repeats = args.repeats or plan.repeats
    report: dict = {"setup": {**setup_info(allocator, args.quick), "repeats": repeats}}
    chosen = precisions(args.precision)
    with torch.inference_mode():
        report.update(measure_peaks(plan.matrix_sizes, repeats))
        peaks = {precision: report[peak_key(precision)]["gflops"] for precision in chosen}
        report["forward"] = benchmark_models(plan, repeats, peaks)
        for precision in chosen:
            suffix = "" if precision == "fp32" else f"_{precision}"
            report[f"packed_vs_padded{suffix}"] = benchmark_packing(plan, repeats, precision)
    report["targets"] = check_targets(report["forward"], report.get("packed_vs_padded"), plan)
    report["notes"] = [MODERNBERT_NOTE]
    write_json(report, args.out)  # before printing, so a closed stdout cannot lose the figures
    print(render(report))
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()
