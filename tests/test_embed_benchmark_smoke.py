"""The encode throughput benchmark runs end to end at tiny sizes and writes a complete JSON report."""

from conftest import run_quick_benchmark

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
    for name, row in report["rows"].items():
        assert row["texts_per_s"] > 0 and row["median_s"] > 0 and row["cores"] > 0, name
    bound = report["float32_bound"]
    assert bound["peak_gflops"] > 0 and 0 < bound["non_embedding_params"] < 10_000_000
    assert bound["texts_per_s"] == 24 / bound["seconds"]
    cosine = report["cosine_to_float32"]
    assert cosine["sentence_transformers_min"] > 0.9999  # the same model through sentence-transformers
    assert 0.99 < cosine["onnx_int8_min"] < 1.0 + 1e-6
    assert [t["name"] for t in report["targets"]] == [
        "encode (float32) / SentenceTransformer, same model",
        "encode (ONNX int8) / SentenceTransformer, same model",
    ]
    assert "float32 bound at peak" in stdout and "cosine to float32" in stdout
