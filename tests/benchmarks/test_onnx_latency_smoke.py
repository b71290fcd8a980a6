"""benchmarks/studies/onnx_request_latency.py runs end to end at tiny sizes and compares the two routes a
one-text request can take, on the same feed."""

import pytest

from helpers.benchmarks import run_quick_benchmark

pytest.importorskip("onnxruntime")


def test_one_text_latency_compares_the_threaded_and_single_thread_sessions(tmp_path):
    report, stdout = run_quick_benchmark("studies/onnx_request_latency.py", tmp_path / "latency.json")

    assert report["preset"] == "tiny"
    for backend in ("onnx", "onnx-int8"):
        result = report[backend]
        assert result["threaded_session_used"] is True  # one row went to the session on every thread
        assert list(result["lengths"]) == ["16", "64", "256"]
        for row in result["lengths"].values():
            assert row["threaded_ms"] > 0 and row["single_thread_ms"] > 0
            assert row["speed_up"] == pytest.approx(row["single_thread_ms"] / row["threaded_ms"])
    # The same float graph on one or more threads: the same vector to float rounding.
    assert all(row["max_abs_diff"] < 1e-5 for row in report["onnx"]["lengths"].values())
    assert stdout.count(" tokens: ") == 6
