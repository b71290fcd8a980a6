"""Training throughput of candidate demo shapes in fp32 and under bf16 autocast, on synthetic batches like the
demo's (32 packed-length rows of 128 tokens, 20% masked): which model learns the most per CPU second starts
with how many tokens a second each shape trains here.

    python benchmarks/studies/speedrun_shapes.py [--shapes 128x4,256x4,...] [--steps 4]
        [--out results/speedrun_shapes.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench_common, one folder up

import neobert
from bench_common import setup_info, write_json
from neobert.runtime import tune_cpu_allocator
from neobert.train.precision import matmul_peak_gflops

BATCH, LENGTH = 32, 128


def step_seconds(hidden: int, layers: int, precision: str, steps: int) -> float:
    config = neobert.NeoBERTConfig.from_preset(
        "tiny",
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(2, hidden // 64),
        intermediate_size=4 * hidden,
    )
    torch.manual_seed(0)
    model = neobert.NeoBERTForMaskedLM(config).train()
    model.model.check_inputs = False
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    ids = torch.randint(1000, 30000, (BATCH, LENGTH))
    selected = torch.rand(BATCH, LENGTH) < 0.2
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    ids = ids.masked_fill(selected, 103)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(), step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--shapes", default="128x4,256x4,256x8,384x6,512x4,512x8", help="HIDDENxLAYERS, comma-separated"
    )
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", default="results/speedrun_shapes.json")
    args = parser.parse_args()
    tune_cpu_allocator()
    report = {
        "setup": setup_info("tuned", quick=False),
        "peak_gflops": {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)},
        "rows": [],
    }
    print(f"peaks: fp32 {report['peak_gflops']['fp32']:.0f}, bf16 {report['peak_gflops']['bf16']:.0f} GFLOP/s")
    for shape in args.shapes.split(","):
        hidden, layers = map(int, shape.split("x"))
        for precision in ("fp32", "bf16"):
            seconds = step_seconds(hidden, layers, precision, args.steps)
            row = {
                "hidden": hidden,
                "layers": layers,
                "precision": precision,
                "s_per_step": seconds,
                "tokens_per_s": BATCH * LENGTH / seconds,
            }
            report["rows"].append(row)
            print(f"{hidden:4d} x {layers:2d} {precision}: {seconds:.3f} s a step, {row['tokens_per_s']:,.0f} tokens/s")
    write_json(report, Path(args.out))


if __name__ == "__main__":
    main()
