"""The forward benchmark runs end to end at tiny sizes and writes a complete JSON report."""

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
    for key, r in rows.items():
        if key not in skipped:
            assert r["tokens_per_s"] > 0 and r["gflops"] > 0 and r["percent_of_peak"] > 0, key
            assert r["cores"] > 0 and r["non_embedding_params"] > 0, key

    packing = report["packed_vs_padded"]
    assert max(packing["lengths"]) == 64 and len(packing["lengths"]) == 8
    assert packing["padded"]["real_tokens_per_s"] > 0 and packing["packed"]["real_tokens_per_s"] > 0
    assert packing["max_abs_diff"] < 1e-4
    assert [t["name"] for t in report["targets"]] == ["NeoBERT 2x64 % of peak", "packed/padded real tokens/s"]
    assert "PASS" in stdout or "FAIL" in stdout
