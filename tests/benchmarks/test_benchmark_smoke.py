"""benchmarks/peers/model_forward.py runs end to end at tiny sizes (`--quick`) and writes a complete report."""

from helpers.benchmarks import run_quick_benchmark


def test_model_forward_quick_run_reports_every_model_shape_and_precision(tmp_path):
    report, stdout = run_quick_benchmark("peers/model_forward.py", tmp_path / "model_forward.json")

    assert report["setup"]["allocator"] in ("tuned", "default (tuning unavailable)")
    assert report["peak"]["gflops"] > 0 and report["peak_bf16"]["gflops"] > 0
    rows = {(r["model"], r["batch"], r["length"], r["precision"]): r for r in report["forward"]}
    shapes = [(2, 64), (1, 128)]
    assert set(rows) == {
        (m, b, n, p) for m in ("neobert", "bert", "modernbert") for b, n in shapes for p in ("fp32", "bf16")
    }
    # As in the full run, BERT's position table is too short for the long shape (scaled down here).
    assert {key for key, r in rows.items() if "skipped" in r} == {("bert", 1, 128, p) for p in ("fp32", "bf16")}
    assert all(r["tokens_per_s"] > 0 for r in rows.values() if "skipped" not in r)
    # Packed and padded batches give the same outputs: fp32 to rounding, bf16 within a few roundings.
    assert report["packed_vs_padded"]["max_abs_diff"] < 1e-4
    assert report["packed_vs_padded_bf16"]["max_abs_diff"] < 0.1
    assert [t["name"] for t in report["targets"]] == ["NeoBERT 2x64 % of peak", "packed/padded real tokens/s"]
    for item in report["targets"]:
        assert f"{'PASS' if item['passed'] else 'FAIL'} {item['name']}" in stdout
