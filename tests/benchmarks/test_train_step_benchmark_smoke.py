"""benchmarks/peers/train_step.py runs end to end at tiny sizes (`--quick`), in fp32 and with bf16 autocast."""

from helpers.benchmarks import run_quick_benchmark

MODELS = ["neobert (packed)", "neobert (padded)", "bert", "modernbert"]


def test_train_step_quick_run_reports_each_model_in_fp32_and_bf16(tmp_path):
    report, stdout = run_quick_benchmark("peers/train_step.py", tmp_path / "train_step.json")
    assert report["real_tokens"] == 286  # the quick batch's tokens, padding left out
    assert report["peak"]["gflops"] > 0 and report["peak_bf16"]["gflops"] > 0
    assert [(r["model"], r["precision"]) for r in report["steps"]] == [
        (model, precision) for model in MODELS for precision in ("fp32", "bf16")
    ]
    assert all(r["real_tokens_per_s"] > 0 and r["flops_per_step"] > 0 for r in report["steps"])
    assert [t["name"] for t in report["targets"]] == [
        "NeoBERT (packed) % of peak",
        "NeoBERT real tokens/s over the faster peer",
    ]
    assert "matrix-product peak: fp32" in stdout and "bf16/fp32" in stdout
