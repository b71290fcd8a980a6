"""The encode throughput benchmark runs end to end at tiny sizes and writes a complete JSON report."""

import sys
from pathlib import Path

import pytest

from helpers.benchmarks import run_quick_benchmark

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_common import MIN_CORES  # noqa: E402

try:
    import openvino  # noqa: F401

    OPENVINO_ROUTES = ["neobert.encode (OpenVINO fp32)", "neobert.encode (OpenVINO int8)"]
except ImportError:  # the benchmark leaves its routes out
    OPENVINO_ROUTES = []
ROUTES = [
    "neobert.encode (packed)",
    "neobert.encode (padded)",
    "neobert.encode (ONNX int8)",
    *OPENVINO_ROUTES,
    "SentenceTransformer(NeoBERT)",
    "SentenceTransformer(ModernBertModel)",
]
RUNTIME_ROUTES = ["neobert.encode (ONNX int8)", *OPENVINO_ROUTES]


def test_quick_encode_benchmark_writes_every_figure(tmp_path):
    report, stdout = run_quick_benchmark("encode_throughput.py", tmp_path / "encode.json")

    assert report["setup"]["texts"] == 24 and report["setup"]["preset"] == "tiny"
    assert 5 < report["setup"]["mean_tokens"] < 100  # tweets and headlines, with [CLS] and [SEP]
    assert list(report["rows"]) == ROUTES
    for name, row in report["rows"].items():
        assert row["texts_per_s"] == pytest.approx(24 / row["median_s"], rel=1e-12), name
        # CPU time over wall time. No upper bound: on calls of milliseconds the clocks' granularity alone
        # put a quiet run at 2.30 on 2 CPUs; the figure is what the report marks unreliable, not a test.
        assert row["cores"] > 0, name
        assert row["reliable"] == (row["cores"] >= MIN_CORES), name
    bound = report["float32_bound"]
    assert bound["peak_gflops"] > 0 and 0 < bound["non_embedding_params"] < 10_000_000
    assert bound["texts_per_s"] == 24 / bound["seconds"]
    cosine = report["cosine_to_float32"]
    assert cosine["sentence_transformers_max_abs_diff"] < 1e-5  # the same model through sentence-transformers
    assert 0.99 < cosine["onnx_int8_min"] < 1.0 + 1e-6
    if OPENVINO_ROUTES:
        assert cosine["openvino_min"] > 1 - 1e-6  # fp32: the same vectors
        assert 0.99 < cosine["openvino_int8_min"] < 1.0 + 1e-6
    best = report["best_route"]
    assert best["route"] in ROUTES and best["cosine_min"] >= 0.999
    eligible = [
        name for name in ROUTES[:-2] if name not in ("neobert.encode (ONNX int8)", "neobert.encode (OpenVINO int8)")
    ]
    eligible += [
        name
        for name, key in (
            ("neobert.encode (ONNX int8)", "onnx_int8"),
            ("neobert.encode (OpenVINO int8)", "openvino_int8"),
        )
        if name in ROUTES and cosine[f"{key}_min"] >= 0.999
    ]
    assert best["texts_per_s"] == max(report["rows"][name]["texts_per_s"] for name in eligible)
    reference = report["rows"]["SentenceTransformer(NeoBERT)"]["texts_per_s"]
    speedup, *others = report["targets"]
    assert speedup["name"].startswith(f"best CPU route with cosine >= 0.999 ({best['route']})")
    assert speedup["value"] == pytest.approx(best["texts_per_s"] / reference, rel=1e-12)
    assert speedup["target"] == 3.0 and speedup["passed"] == (speedup["value"] >= 3.0)
    assert f"{speedup['name']}: {speedup['value']:.2f}x" in stdout and "load average" in stdout
    assert [t["name"] for t in others] == [
        "encode (float32) / SentenceTransformer, same model",
        "encode (ONNX int8) / SentenceTransformer, same model",
    ]
    for item, route in zip(others, ["neobert.encode (packed)", "neobert.encode (ONNX int8)"], strict=True):
        assert item["value"] == pytest.approx(report["rows"][route]["texts_per_s"] / reference, rel=1e-12)
        assert item["target"] == 1.5 and item["passed"] == (item["value"] >= 1.5)
        assert f"{item['name']}: {item['value']:.2f}x" in stdout
    assert "float32 bound at peak" in stdout and "cosine to float32" in stdout


def test_quick_encode_benchmark_reports_the_torch_routes_in_bf16_too(tmp_path):
    report, stdout = run_quick_benchmark("encode_throughput.py", tmp_path / "encode.json")
    peaks = {"fp32": report["peak"]["gflops"], "bf16": report["peak_bf16"]["gflops"]}
    assert report["peak"]["precision"] == "fp32" and report["peak_bf16"]["precision"] == "bf16"
    assert [r["precision"] for r in report["rows"].values()] == [
        "int8" if name.endswith("int8)") else "fp32" for name in ROUTES
    ]
    torch_routes = [name for name in ROUTES if name not in RUNTIME_ROUTES]
    assert list(report["rows_bf16"]) == torch_routes
    assert all(row["precision"] == "bf16" for row in report["rows_bf16"].values())
    assert "percent_of_peak" not in report["rows"]["neobert.encode (ONNX int8)"]  # int8 has no such peak

    texts, tokens = report["setup"]["texts"], report["setup"]["mean_tokens"] * report["setup"]["texts"]
    neobert_flops = 2 * report["float32_bound"]["non_embedding_params"] * tokens
    for rows, precision in ((report["rows"], "fp32"), (report["rows_bf16"], "bf16")):
        for name in torch_routes:
            row = rows[name]
            assert row["texts_per_s"] == pytest.approx(texts / row["median_s"], rel=1e-12)
            assert row["percent_of_peak"] == pytest.approx(100 * row["gflops"] / peaks[precision], rel=1e-12)
            if name.startswith(("neobert", "SentenceTransformer(NeoBERT)")):  # the same model's real tokens
                assert row["gflops"] == pytest.approx(neobert_flops / row["median_s"] / 1e9, rel=1e-9)
    for name, row in report["rows_bf16"].items():
        ratio = row["texts_per_s"] / report["rows"][name]["texts_per_s"]
        assert row["bf16_over_fp32"] == pytest.approx(ratio, rel=1e-12)
        assert f"{ratio:.2f}x" in stdout
    assert all("bf16_over_fp32" not in row for row in report["rows"].values())

    for key, precision, rows in (
        ("float32_bound", "fp32", report["rows"]),
        ("bf16_bound", "bf16", report["rows_bf16"]),
    ):
        bound = report[key]
        assert bound["peak_gflops"] == peaks[precision]
        assert bound["seconds"] == pytest.approx(neobert_flops / (peaks[precision] * 1e9), rel=1e-9)
        reference = rows["SentenceTransformer(NeoBERT)"]["texts_per_s"]
        assert bound["over_sentence_transformers"] == pytest.approx(bound["texts_per_s"] / reference, rel=1e-12)
    # bf16 autocast really ran (the vectors moved off float32's) and kept them close.
    assert 0.999 < report["cosine_to_float32"]["bf16_packed_min"] < 1 - 1e-6
    assert "bf16 bound at peak" in stdout
