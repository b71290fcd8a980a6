"""The demo's train step as `neobert demo` runs it: the demo preset's Trainer on the demo corpus, fp32 pinned,
one `train_step` at a time (loader, forward, backward, clipping, AdamW, metrics).

Reported: seconds a step (fastest and median), real tokens a second, the step's model FLOPs (the trainer's
own count) a second, and that as a share of the fp32 matrix-product peak measured in the same process
before and after the steps (the better of the two). `cores` is CPU time over wall time while stepping:
well under the thread count, the machine was busy and the figures are pessimistic. To compare two versions
of the code on a shared machine, run them alternately (`PYTHONPATH=old/src`, `PYTHONPATH=src`) several
times and compare the fastest steps.

    python benchmarks/studies/demo_step.py [--steps 12] [--warmup 3] [--corpus FOLDER] [--out results/demo_step.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench_common, one folder up

from bench_common import ROOT, setup_info, write_json
from neobert.model.flops import training_flops
from neobert.runtime import tune_cpu_allocator
from neobert.train.metrics import batch_shape_stats
from neobert.train.precision import matmul_peak_gflops


class RecordingLoader:
    """The trainer's loader, keeping the shape statistics of the batches it hands out."""

    def __init__(self, loader):
        self.loader, self.stats = loader, []

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.loader)
        self.stats.append(batch_shape_stats(batch))
        return batch

    def state_dict(self):
        return self.loader.state_dict()

    def load_state_dict(self, state):
        self.loader.load_state_dict(state)


def demo_trainer(corpus: Path, output_dir: Path, overrides: list[str]):
    from neobert.train.config import load_config, preset_path
    from neobert.train.data import make_loader
    from neobert.train.distributed import DistributedContext
    from neobert.train.trainer import Trainer

    config = load_config(
        [preset_path("demo")],
        [
            f"data.path={corpus}",
            f"system.output_dir={output_dir}",
            "system.precision=fp32",
            "budget.hours=null",
            "budget.steps=1000",
            *overrides,
        ],
    )
    trainer = Trainer(config, make_loader, None, DistributedContext(device=torch.device("cpu")))
    trainer.loader = RecordingLoader(trainer.loader)
    return trainer


def measure(trainer, steps: int, warmup: int) -> dict:
    for _ in range(warmup):
        trainer.train_step()
    peak_before = matmul_peak_gflops(torch.float32)
    del trainer.loader.stats[:]
    walls = []
    cpu_started, window_started = time.process_time(), time.perf_counter()
    for _ in range(steps):
        started = time.perf_counter()
        trainer.train_step()
        walls.append(time.perf_counter() - started)
    cores = (time.process_time() - cpu_started) / (time.perf_counter() - window_started)
    peak = max(peak_before, matmul_peak_gflops(torch.float32))
    config, stats = trainer.model_config, trainer.loader.stats
    flops = [training_flops(config, s["tokens"], s["sum_sq"], s["masked"]) for s in stats]
    tokens = [s["tokens"] for s in stats]
    gflops = [f / w / 1e9 for f, w in zip(flops, walls, strict=True)]
    return {
        "steps": steps,
        "step_s": walls,
        "min_s": min(walls),
        "median_s": statistics.median(walls),
        "tokens_per_s_at_median": statistics.mean(tokens) / statistics.median(walls),
        "gflops_per_step": statistics.mean(flops) / 1e9,
        "masked_per_step": statistics.mean(s["masked"] for s in stats),
        "best_gflops": max(gflops),
        "median_gflops": statistics.median(gflops),
        "peak_fp32_gflops": peak,
        "best_percent_of_peak": 100 * max(gflops) / peak,
        "median_percent_of_peak": 100 * statistics.median(gflops) / peak,
        "cores": cores,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--corpus", type=Path, default=None, help="prepared demo corpus (default: the cached one)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "demo_step.json")
    parser.add_argument("overrides", nargs="*", help="dotted overrides of the demo preset")
    args = parser.parse_args()
    tune_cpu_allocator()
    if args.corpus is None:
        from neobert.commands.demo import prepare_demo_corpus

        args.corpus = prepare_demo_corpus()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = demo_trainer(args.corpus, Path(scratch), args.overrides)
        report = {"setup": setup_info("tuned", quick=False), **measure(trainer, args.steps, args.warmup)}
    write_json(report, args.out)
    print(
        f"demo step (fp32): fastest {report['min_s']:.3f} s, median {report['median_s']:.3f} s, "
        f"{report['tokens_per_s_at_median']:,.0f} tokens/s at the median; {report['gflops_per_step']:.1f} GFLOP "
        f"a step ({report['masked_per_step']:.0f} scored tokens); best {report['best_gflops']:.1f} GFLOP/s = "
        f"{report['best_percent_of_peak']:.0f}% of the fp32 peak {report['peak_fp32_gflops']:.0f} GFLOP/s "
        f"(median {report['median_percent_of_peak']:.0f}%); {report['cores']:.2f} cores"
    )


if __name__ == "__main__":
    main()
