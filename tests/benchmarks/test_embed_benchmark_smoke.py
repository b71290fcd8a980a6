"""benchmarks/peers/encode_throughput.py runs end to end at tiny sizes (`--quick`) and writes a complete report."""

from helpers.benchmarks import run_quick_benchmark

try:
    import openvino  # noqa: F401

    OPENVINO_ROUTES = [
        "neobert.encode (OpenVINO fp32)",
        "neobert.encode (OpenVINO bf16)",
        "neobert.encode (OpenVINO int8)",
    ]
except ImportError:  # the benchmark leaves its routes out
    OPENVINO_ROUTES = []
ROUTES = [
    "neobert.encode (packed)",
    "neobert.encode (padded)",
    "neobert.encode (ONNX int8)",
    "neobert.encode (ONNX int8, 7-bit)",
    *OPENVINO_ROUTES,
    "SentenceTransformer(NeoBERT)",
    "SentenceTransformer(ModernBertModel)",
]
RUNTIME_ROUTES = ["neobert.encode (ONNX int8)", "neobert.encode (ONNX int8, 7-bit)", *OPENVINO_ROUTES]


def test_encode_throughput_quick_run_reports_every_route_and_how_close_its_vectors_are(tmp_path):
    report, stdout = run_quick_benchmark("peers/encode_throughput.py", tmp_path / "encode.json")

    assert report["setup"]["texts"] == 24 and report["setup"]["preset"] == "tiny"
    assert list(report["rows"]) == ROUTES
    assert list(report["rows_bf16"]) == [name for name in ROUTES if name not in RUNTIME_ROUTES]
    assert all(row["texts_per_s"] > 0 for row in [*report["rows"].values(), *report["rows_bf16"].values()])
    # What the speed is bought with: each route's vectors against float32 `encode`'s.
    cosine = report["cosine_to_float32"]
    assert cosine["sentence_transformers_max_abs_diff"] < 1e-5  # the same model through sentence-transformers
    assert 0.99 < cosine["onnx_int8_min"] < 1.0 + 1e-6
    assert 0.99 < cosine["onnx_int8_7bit_min"] < 1.0 + 1e-6
    # Where the CPU has VNNI the route runs the full-range graph, closer to float32 than the 7-bit one.
    vnni = report["setup"]["cpu_vnni"]
    assert report["setup"]["onnx_int8_graph"] == f"onnx/model_qint8{'_avx512_vnni' if vnni else ''}.onnx"
    assert (cosine["onnx_int8_min"] > cosine["onnx_int8_7bit_min"]) == vnni
    assert 0.999 < cosine["bf16_packed_min"] < 1 - 1e-6  # bf16 autocast really ran, and kept them close
    if OPENVINO_ROUTES:
        assert cosine["openvino_min"] > 1 - 1e-6  # fp32: the same vectors
        assert 0.99 < cosine["openvino_int8_min"] < 1.0 + 1e-6
        assert 0.999 < cosine["openvino_bf16_min"] <= cosine["openvino_bf16_mean"] < 1.0 + 1e-6
    best = report["best_route"]
    assert best["route"] in ROUTES and best["cosine_min"] >= 0.999
    speedup = report["targets"][0]
    assert speedup["name"].startswith(f"best CPU route with cosine >= 0.999 ({best['route']})")
    assert f"{speedup['name']}: {speedup['value']:.2f}x" in stdout and "load average" in stdout
