"""The encode throughput benchmark runs end to end at tiny sizes and writes a complete JSON report."""

import sys
from pathlib import Path

import pytest

from conftest import run_quick_benchmark

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from bench_common import MIN_CORES  # noqa: E402

ROUTES = [
    "neobert.encode (packed)",
    "neobert.encode (padded)",
    "neobert.encode (ONNX int8)",
    "SentenceTransformer(NeoBERT)",
    "SentenceTransformer(ModernBertModel)",
]


def test_quick_encode_benchmark_writes_every_figure(tmp_path):
    report, stdout = run_quick_benchmark("encode_throughput.py", tmp_path / "encode.json")

    assert report["setup"]["texts"] == 24 and report["setup"]["preset"] == "tiny"
    assert 5 < report["setup"]["mean_tokens"] < 100  # tweets and headlines, with [CLS] and [SEP]
    assert list(report["rows"]) == ROUTES
    cpus = report["setup"]["logical_cpus"]
    for name, row in report["rows"].items():
        assert row["texts_per_s"] == pytest.approx(24 / row["median_s"], rel=1e-12), name
        assert 0 < row["cores"] <= cpus + 0.05, name  # CPU time over wall time: at most every CPU busy
        assert row["reliable"] == (row["cores"] >= MIN_CORES), name
    bound = report["float32_bound"]
    assert bound["peak_gflops"] > 0 and 0 < bound["non_embedding_params"] < 10_000_000
    assert bound["texts_per_s"] == 24 / bound["seconds"]
    cosine = report["cosine_to_float32"]
    assert cosine["sentence_transformers_max_abs_diff"] < 1e-5  # the same model through sentence-transformers
    assert 0.99 < cosine["onnx_int8_min"] < 1.0 + 1e-6
    assert [t["name"] for t in report["targets"]] == [
        "encode (float32) / SentenceTransformer, same model",
        "encode (ONNX int8) / SentenceTransformer, same model",
    ]
    reference = report["rows"]["SentenceTransformer(NeoBERT)"]["texts_per_s"]
    for item, route in zip(report["targets"], ["neobert.encode (packed)", "neobert.encode (ONNX int8)"], strict=True):
        assert item["value"] == pytest.approx(report["rows"][route]["texts_per_s"] / reference, rel=1e-12)
        assert item["target"] == 1.5 and item["passed"] == (item["value"] >= 1.5)
        assert f"{item['name']}: {item['value']:.2f}x" in stdout
    assert "float32 bound at peak" in stdout and "cosine to float32" in stdout
