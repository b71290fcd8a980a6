"""The CUDA path in one call, for a lent GPU (sized for an H200, under 7 minutes).

Stages, each guarded (a failing stage or run is recorded with its error and the others still run), the
JSON rewritten after each one so a killed run keeps what it measured. They run in this order, the bounded
ones first; training takes the time left, its runs in order of importance, skipping those that no longer fit:

1. peak       bf16 matrix-product peak (8192^3); every MFU below is against it
2. tests      the `gpu`-marked tests in a pytest subprocess, among them sdpa / flex_attention / eager in
              bf16 against fp32, padded and packed (pytest must be installed there)
3. inference  encoders at 4,096 tokens in bf16, the batch doubled while it still adds throughput, against
              the paper's A100 figures
4. train      `neobert-250m` at 1,024 tokens, packed, bf16 autocast, fused AdamW, compiled and not, on one
              fixed synthetic batch; ModernBertForMaskedLM and BertForMaskedLM (base) on the same batch,
              padded (every position real); the top CUDA kernels of the compiled NeoBERT run

Targets (in the JSON and the table): training MFU >= 45% and more real tokens/s than ModernBERT; inference
>= 30x the paper's A100 figure; bf16 within tolerance of fp32; no NaN; no compilation in timed steps.

    bash benchmarks/gpu/gpu_check.sh                               # on the GPU machine
    python benchmarks/gpu/gpu_check.py --device cpu --quick        # tiny sizes: a dry run of the script
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import BertConfig, BertForMaskedLM, ModernBertConfig, ModernBertForMaskedLM, ModernBertModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench_common, one folder up
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))  # train_step

import neobert
from bench_common import ROOT, measure_device_peak, setup_info, time_calls, write_json
from gpu_pretrain import FIRST_ID, neobert_step_flops, synchronizer, synthetic_batch, train_run
from gpu_report import PAPER_A100_TOKENS_PER_S, render, targets
from neobert.model.attention import BACKENDS
from neobert.model.flops import forward_flops, non_embedding_parameters
from neobert.train.metrics import mfu, peak_flops
from train_step import Runner, step_flops

STAGES = ("peak", "tests", "inference", "train")
PEER_SMALL = dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=4, intermediate_size=512)

FULL = dict(
    preset="neobert-250m",
    batch=32,
    length=1024,
    steps=50,
    warmup=3,
    peak_sizes=(8192,),
    peak_repeats=30,
    infer_length=4096,
    infer_batches=(8, 16, 32, 64),
    infer_repeats=3,
    profile_steps=3,
    budget_s=380.0,  # from the start of main; imports come before (the whole run stays under 7 minutes)
    tests_timeout=120.0,
    compile_backend="inductor",
    # What a training run needs at least (compilation included) to be started.
    run_estimate_s={"compiled": 90.0, "eager": 25.0},
)
QUICK = dict(
    FULL,
    preset="tiny",
    batch=2,
    length=64,
    steps=6,
    warmup=2,
    peak_sizes=(256,),
    peak_repeats=5,
    infer_length=128,
    infer_batches=(1, 2),
    infer_repeats=2,
    profile_steps=2,
    budget_s=150.0,
    tests_timeout=300.0,  # a safety net for a hung process: collection alone is slow on a busy CPU
    compile_backend="eager",  # dynamo without inductor: seconds on a CPU, same recompilation accounting
    run_estimate_s={"compiled": 5.0, "eager": 2.0},
)


@dataclass
class Context:
    args: argparse.Namespace
    sizes: dict
    device: torch.device
    deadline: float
    report: dict

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def save(self, stage: str | None = None, partial: dict | None = None) -> None:
        """The report so far (with a running stage's partial results) to `--out`."""
        stages = self.report["stages"] if stage is None else {**self.report["stages"], stage: partial}
        write_json({**self.report, "stages": stages}, self.args.out)

    @property
    def peak(self) -> float | None:
        stage = self.report["stages"].get("peak", {})
        return stage.get("flops") if stage.get("status") == "ok" else None


def error_entry(error: BaseException) -> dict:
    return {
        "status": "error",
        "error": f"{type(error).__name__}: {error}",
        "traceback": traceback.format_exc()[-3000:],
    }


def guarded(fn, *args) -> dict:
    """`fn(*args)` as {"status": "ok", **result}, or its error; CUDA memory is freed either way."""
    try:
        return {"status": "ok", **fn(*args)}
    except Exception as error:
        return error_entry(error)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# ---- stages ------------------------------------------------------------------------------------------------


def stage_peak(ctx: Context) -> dict:
    sync = synchronizer(ctx.device)
    peak = measure_device_peak(ctx.sizes["peak_sizes"], ctx.sizes["peak_repeats"], torch.bfloat16, ctx.device, sync)
    rows = [{"size": r["size"], "median_s": r["median_s"], "tflops": r["gflops"] / 1e3} for r in peak["sizes"]]
    # The datasheet's dense bf16 figure where the GPU is known, to judge the measured one by.
    return {
        "dtype": "bfloat16",
        "sizes": rows,
        "flops": peak["gflops"] * 1e9,
        "datasheet_flops": peak_flops(ctx.device),
    }


def gpu_test_files() -> list[str]:
    return sorted(
        str(path.relative_to(ROOT)) for path in (ROOT / "tests").rglob("test_*.py") if "mark.gpu" in path.read_text()
    )


def stage_tests(ctx: Context) -> dict:
    if importlib.util.find_spec("pytest") is None:
        raise RuntimeError("pytest is not installed in this Python; the gpu-marked tests cannot run")
    junit = ctx.args.out.parent / "gpu_check_tests.xml"
    junit.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "-q", "-rfE"]
    command += ["--continue-on-collection-errors", f"--junitxml={junit}", *gpu_test_files()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    timeout = max(10.0, min(ctx.sizes["tests_timeout"], ctx.left()))
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    cases = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, message = "passed", None
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome, message = {"failure": "failed"}.get(child.tag, child.tag), (child.get("message") or "")[:300]
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome, "message": message})
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
    return {
        "files": gpu_test_files(),
        "returncode": done.returncode,
        **counts,
        "cases": cases,
        "output_tail": (done.stdout + done.stderr)[-2000:],
    }


def training_models(ctx: Context) -> dict:
    quick = ctx.args.quick
    neo = neobert.NeoBERTConfig.from_preset(ctx.sizes["preset"])
    neo._attn_implementation = ctx.args.attention
    # BERT's base table has 512 positions; the same 1,024-token batch needs a longer one.
    bert = BertConfig(**(PEER_SMALL if quick else {}), max_position_embeddings=max(512, ctx.sizes["length"]))
    modern = ModernBertConfig(**(PEER_SMALL if quick else {}))
    return {
        "neobert": (neo, lambda: neobert.NeoBERTForMaskedLM(neo)),
        "modernbert": (modern, lambda: ModernBertForMaskedLM(modern)),
        "bert": (bert, lambda: BertForMaskedLM(bert)),
    }


# The order matters when time runs short: the target pair first, the eager and BERT references after.
TRAIN_RUNS = [("neobert", True), ("modernbert", True), ("neobert", False), ("modernbert", False)]
TRAIN_RUNS += [("bert", True), ("bert", False)]


def train_one(ctx: Context, name: str, compiled: bool, batches: tuple[dict, dict]) -> dict:
    s = ctx.sizes
    config, build = training_models(ctx)[name]
    torch.manual_seed(0)
    model = build()
    packed, padded = batches
    batch = packed if name == "neobert" else padded
    if name == "neobert":
        flops = neobert_step_flops(config, packed)
    else:
        flops = step_flops(model, Runner(name, build, "padded", True), padded)
    profile = s["profile_steps"] if (name, compiled) == ("neobert", True) else 0
    backend = ctx.args.compile_backend if compiled else None
    result = train_run(model, batch, ctx.device, s["steps"], s["warmup"], ctx.args.lr, backend, ctx.deadline, profile)
    tokens = s["batch"] * s["length"]
    result.update(
        model=name,
        layout="packed" if name == "neobert" else "padded",
        attention=getattr(config, "_attn_implementation", None),
        batch=s["batch"],
        length=s["length"],
        real_tokens_per_step=tokens,
        flops_per_step=flops,
        tokens_per_s=tokens * result["steps"] / result["seconds"],
        model_tflops_per_s=flops * result["steps"] / result["seconds"] / 1e12,
    )
    result["mfu"] = flops * result["steps"] / result["seconds"] / ctx.peak if ctx.peak else None
    del model
    if compiled:
        torch._dynamo.reset()  # its compiled graphs would otherwise keep the model's memory alive
    return result


def stage_train(ctx: Context) -> dict:
    vocab = training_models(ctx)["neobert"][0].vocab_size
    batches = synthetic_batch(ctx.sizes["batch"], ctx.sizes["length"], vocab)
    runs = []
    for name, compiled in TRAIN_RUNS:
        if ctx.left() < ctx.sizes["run_estimate_s"]["compiled" if compiled else "eager"]:
            runs.append({"model": name, "compiled": compiled, "status": "skipped", "reason": "time budget"})
            continue
        runs.append({"model": name, "compiled": compiled, **guarded(train_one, ctx, name, compiled, batches)})
        ctx.save("train", {"status": "running", "runs": runs})
    return {
        "masked_tokens": int((batches[0]["labels"] != -100).sum()),
        "note": "peer FLOPs count full attention in every layer (ModernBERT's local layers do less)",
        "runs": runs,
    }


def inference_models(ctx: Context) -> dict:
    neo = neobert.NeoBERTConfig.from_preset(ctx.sizes["preset"])
    neo._attn_implementation = ctx.args.attention
    modern = ModernBertConfig(**(PEER_SMALL if ctx.args.quick else {}))
    return {
        "neobert": (neo, lambda: neobert.NeoBERTModel(neo)),
        "modernbert": (modern, lambda: ModernBertModel(modern)),
    }


def infer_one(ctx: Context, name: str) -> dict:
    """Tokens/s of the bf16 encoder over full rows of `infer_length`, the batch doubled until it stops
    adding 3% (or runs out of memory); the best row is the model's figure."""
    s, sync = ctx.sizes, synchronizer(ctx.device)
    config, build = inference_models(ctx)[name]
    torch.manual_seed(0)
    model = build().to(ctx.device, torch.bfloat16).eval()
    if name == "neobert":
        model.check_inputs = False
    length, rows = s["infer_length"], []
    with torch.inference_mode():
        probe = model(input_ids=torch.randint(FIRST_ID, 30000, (1, length), device=ctx.device)).last_hidden_state
        finite = bool(torch.isfinite(probe).all())
        for batch in s["infer_batches"]:
            if rows and ctx.left() < 30:
                break
            ids = torch.randint(FIRST_ID, 30000, (batch, length), device=ctx.device)
            try:
                timing = time_calls(lambda ids=ids: model(input_ids=ids), s["infer_repeats"], sync=sync)
            except torch.OutOfMemoryError:
                rows.append({"batch": batch, "error": "out of memory"})
                break
            rows.append(
                {"batch": batch, "median_s": timing["median_s"], "tokens_per_s": batch * length / timing["median_s"]}
            )
            if len(rows) > 1 and rows[-1]["tokens_per_s"] < 1.03 * rows[-2]["tokens_per_s"]:
                break
    measured = [r for r in rows if "tokens_per_s" in r]
    if not measured:
        raise RuntimeError(f"no batch of {length}-token rows fit: {rows}")
    best = max(measured, key=lambda r: r["tokens_per_s"])
    result = {
        "length": length,
        "rows": rows,
        "finite": finite,
        "batch": best["batch"],
        "tokens_per_s": best["tokens_per_s"],
    }
    result["times_paper_a100"] = best["tokens_per_s"] / PAPER_A100_TOKENS_PER_S[name]
    if name == "neobert":
        tokens = best["batch"] * length
        flops = forward_flops(config, tokens, best["batch"] * length**2, 0.0, non_embedding_parameters(config))
        result["mfu"] = mfu(flops, best["median_s"], ctx.peak)
    return result


def stage_inference(ctx: Context) -> dict:
    models = {}
    for name in ("neobert", "modernbert"):
        models[name] = guarded(infer_one, ctx, name)
    return {"paper_a100_tokens_per_s": PAPER_A100_TOKENS_PER_S, "models": models}


STAGE_FUNCTIONS = {"peak": stage_peak, "tests": stage_tests, "train": stage_train, "inference": stage_inference}


def sizes_from(args: argparse.Namespace) -> dict:
    sizes = dict(QUICK if args.quick else FULL)
    for key in ("batch", "steps", "budget_s"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    return sizes


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a dry run of the script itself")
    parser.add_argument("--quick", action="store_true", help="tiny models and batches (the CPU dry run)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "gpu_check.json")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    parser.add_argument("--attention", default="sdpa", choices=BACKENDS, help="NeoBERT's, in training and inference")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (inductor; eager with --quick)")
    parser.add_argument("--batch", type=int, default=None, help="training sequences a step")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps a run")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--budget-s", type=float, default=None, help="wall-time budget; stages and runs shrink to fit")
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; use --device cpu --quick for a dry run of the script")
    sizes = sizes_from(args)
    args.compile_backend = args.compile_backend or sizes["compile_backend"]
    torch.backends.cuda.matmul.allow_tf32 = True
    started = time.perf_counter()
    report = {
        "setup": {
            **setup_info("n/a", args.quick),
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "cuda": torch.version.cuda,
            "attention": args.attention,
            "compile_backend": args.compile_backend,
            "lr": args.lr,
            "sizes": sizes,
        },
        "stages": {},
    }
    ctx = Context(args, sizes, device, started + sizes["budget_s"], report)
    for name in STAGES:
        if name not in stages:
            continue
        if ctx.left() <= 0:
            report["stages"][name] = {"status": "skipped", "reason": "time budget"}
            continue
        ctx.save(name, {"status": "running"})
        stage_start = time.perf_counter()
        report["stages"][name] = {**guarded(STAGE_FUNCTIONS[name], ctx), "seconds": time.perf_counter() - stage_start}
        ctx.save()
    report["elapsed_s"] = time.perf_counter() - started
    report["targets"] = targets(report)
    write_json(report, args.out)
    print(render(report))
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()
