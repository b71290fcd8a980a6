"""The data benchmark runs end to end on made-up text and writes a complete JSON report."""

from conftest import run_quick_benchmark


def test_quick_data_benchmark_writes_every_figure(tmp_path):
    out = tmp_path / "prepare_throughput.json"
    report, _ = run_quick_benchmark("prepare_throughput.py", out)
    assert report["corpus"]["name"] == "quick (made-up)" and report["corpus"]["text_mb"] > 1
    for route in ("neobert", "official", "official-num_proc"):
        figures = report["prepare"][route]
        assert figures["mb_per_second"] > 0 and figures["tokens_per_second"] > 0
        assert 100 < figures["peak_memory_mb"] < 4000
    # Both routes tokenised the same text: ours stores no specials and keeps what the official truncates.
    ours, official = report["prepare"]["neobert"]["runs"][0], report["prepare"]["official"]["runs"][0]
    assert ours["tokens"] >= official["tokens"] - 2 * report["corpus"]["documents"]
    assert report["prepare_speedup_vs_official"] > 0
    settings = {row["setting"]: row for row in report["loader_vs_tiny_training"]}
    assert len(settings) == 2
    assert all(row["ratio"] > 1 and 0 < row["packing_efficiency"] <= 1 for row in settings.values())
