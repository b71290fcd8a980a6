"""The forward benchmark runs end to end at tiny sizes and writes a complete JSON report."""

import pytest

from conftest import run_quick_benchmark


def test_quick_benchmark_writes_every_figure(tmp_path):
    out = tmp_path / "model_forward.json"
    report, stdout = run_quick_benchmark("model_forward.py", out)

    assert report["setup"]["allocator"] in ("tuned", "default (tuning unavailable)")
    assert report["setup"]["torch"] and report["setup"]["transformers"]
    assert report["peak"]["gflops"] > 0 and len(report["peak"]["sizes"]) == 2

    rows = {(r["model"], r["batch"], r["length"]): r for r in report["forward"]}
    shapes = [(2, 64), (1, 128)]
    assert set(rows) == {(m, b, n) for m in ("neobert", "bert", "modernbert") for b, n in shapes}
    # As in the full run, BERT's position table is too short for the long shape (scaled down here).
    skipped = {key for key, r in rows.items() if "skipped" in r}
    assert skipped == {("bert", 1, 128)}
    peak = report["peak"]["gflops"]
    assert peak == max(size["gflops"] for size in report["peak"]["sizes"])
    for key, r in rows.items():
        if key not in skipped:
            _, batch, length = key
            assert r["tokens_per_s"] == pytest.approx(batch * length / r["median_s"], rel=1e-12), key
            assert r["gflops"] == pytest.approx(r["flops"] / r["median_s"] / 1e9, rel=1e-12), key
            assert r["percent_of_peak"] == pytest.approx(100 * r["gflops"] / peak, rel=1e-12), key
            assert r["cores"] > 0 and r["non_embedding_params"] > 0, key

    packing = report["packed_vs_padded"]
    assert max(packing["lengths"]) == 64 and len(packing["lengths"]) == 8
    for layout in ("padded", "packed"):
        timing = packing[layout]
        assert timing["real_tokens_per_s"] == pytest.approx(sum(packing["lengths"]) / timing["median_s"], rel=1e-12)
    assert packing["ratio"] == packing["packed"]["real_tokens_per_s"] / packing["padded"]["real_tokens_per_s"]
    assert packing["max_abs_diff"] < 1e-4
    assert [t["name"] for t in report["targets"]] == ["NeoBERT 2x64 % of peak", "packed/padded real tokens/s"]
    # Each target's verdict follows from its value, and the printed line says that verdict.
    expected_values = [rows[("neobert", 2, 64)]["percent_of_peak"], packing["ratio"]]
    for item, value, goal in zip(report["targets"], expected_values, [90, 1.5], strict=True):
        assert item["value"] == value and item["target"] == goal and item["passed"] == (value >= goal)
        verdict = "PASS" if value >= goal else "FAIL"
        assert f"{verdict} {item['name']}: {value:.2f} (target >= {goal:g})" in stdout
