"""The training-step benchmark runs end to end at tiny sizes, in fp32 and with bf16 autocast, and its figures
agree with one another."""

import pytest

from helpers.benchmarks import run_quick_benchmark

MODELS = ["neobert (packed)", "neobert (padded)", "bert", "modernbert"]
QUICK_REAL_TOKENS = 286


def check_step(row: dict, peak: float) -> None:
    assert row["real_tokens_per_s"] == pytest.approx(QUICK_REAL_TOKENS / row["median_s"], rel=1e-12)
    assert row["gflops"] == pytest.approx(row["flops_per_step"] / row["median_s"] / 1e9, rel=1e-12)
    assert row["percent_of_peak"] == pytest.approx(100 * row["gflops"] / peak, rel=1e-12)


def test_quick_train_step_reports_each_model_in_fp32_and_bf16(tmp_path):
    report, stdout = run_quick_benchmark("train_step.py", tmp_path / "train_step.json")
    assert report["real_tokens"] == QUICK_REAL_TOKENS
    peaks = {"fp32": report["peak"], "bf16": report["peak_bf16"]}
    for precision, peak in peaks.items():
        assert peak["precision"] == precision and [r["size"] for r in peak["sizes"]] == [256, 512]
        assert peak["gflops"] == max(r["gflops"] for r in peak["sizes"])

    assert [(r["model"], r["precision"]) for r in report["steps"]] == [
        (model, precision) for model in MODELS for precision in ("fp32", "bf16")
    ]
    rows = {(r["model"], r["precision"]): r for r in report["steps"]}
    for (model, precision), row in rows.items():
        check_step(row, peaks[precision]["gflops"])
        fp32 = rows[(model, "fp32")]
        assert row["flops_per_step"] == fp32["flops_per_step"]  # the same work counted in either precision
        if precision == "bf16":
            ratio = row["real_tokens_per_s"] / fp32["real_tokens_per_s"]
            assert row["bf16_over_fp32"] == pytest.approx(ratio, rel=1e-12)
            assert f"{ratio:.2f}x" in stdout
        else:
            assert "bf16_over_fp32" not in row

    # The targets are fp32's, computed from the fp32 rows.
    packed = rows[("neobert (packed)", "fp32")]
    faster_peer = max(rows[("bert", "fp32")]["real_tokens_per_s"], rows[("modernbert", "fp32")]["real_tokens_per_s"])
    assert [(t["name"], t["value"]) for t in report["targets"]] == [
        ("NeoBERT (packed) % of peak", packed["percent_of_peak"]),
        ("NeoBERT real tokens/s over the faster peer", packed["real_tokens_per_s"] / faster_peer),
    ]
    assert "matrix-product peak: fp32" in stdout and "bf16/fp32" in stdout


def test_quick_train_step_in_bf16_only_measures_both_peaks_and_checks_no_fp32_target(tmp_path):
    report, stdout = run_quick_benchmark("train_step.py", tmp_path / "train_step.json", "--precision", "bf16")
    assert report["peak"]["gflops"] > 0 and report["peak_bf16"]["gflops"] > 0
    assert [(r["model"], r["precision"]) for r in report["steps"]] == [(model, "bf16") for model in MODELS]
    for row in report["steps"]:
        check_step(row, report["peak_bf16"]["gflops"])
        assert "bf16_over_fp32" not in row  # nothing to compare with
    assert report["targets"] == []
    assert "no targets checked: they are set for fp32" in stdout
