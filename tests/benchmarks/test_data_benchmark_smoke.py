"""The data benchmark runs end to end on made-up text and writes a complete JSON report."""

import json
import sys
from pathlib import Path

import pytest

from helpers.benchmarks import run_quick_benchmark
from neobert import load_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from prepare_throughput import quick_text  # noqa: E402

QUICK_MAX_LENGTH = 256


def test_quick_data_benchmark_writes_every_figure(tmp_path):
    out = tmp_path / "prepare_throughput.json"
    report, _ = run_quick_benchmark("prepare_throughput.py", out)
    assert report["corpus"]["name"] == "quick (made-up)" and report["corpus"]["text_mb"] > 1

    # The made-up corpus is seeded: its token counts follow from tokenising it here. We store every
    # token without specials; the official route truncates each document to 256 with [CLS] and [SEP].
    source, documents, size, _ = quick_text(tmp_path)
    assert report["corpus"]["documents"] == documents and report["corpus"]["text_mb"] == size / 1e6
    texts = [json.loads(line)["text"] for line in source.read_text().splitlines()]
    lengths = [len(ids) for ids in load_tokenizer()(texts, add_special_tokens=False)["input_ids"]]
    expected_tokens = {
        "neobert": sum(lengths),
        "official": sum(min(n, QUICK_MAX_LENGTH - 2) + 2 for n in lengths),
    }
    expected_tokens["official-num_proc"] = expected_tokens["official"]
    for route, tokens in expected_tokens.items():
        figures = report["prepare"][route]
        (run,) = figures["runs"]
        assert run["tokens"] == tokens, route
        seconds = figures["work_seconds_median"]
        assert seconds == run["work_seconds"], route
        assert figures["mb_per_second"] == pytest.approx(size / 1e6 / seconds, rel=1e-12), route
        assert figures["tokens_per_second"] == pytest.approx(tokens / seconds, rel=1e-12), route
        assert 100 < figures["peak_memory_mb"] < 4000
    baseline = max(("official", "official-num_proc"), key=lambda r: report["prepare"][r]["mb_per_second"])
    assert report["baseline"] == baseline
    assert report["prepare_speedup_vs_official"] == pytest.approx(
        report["prepare"]["neobert"]["mb_per_second"] / report["prepare"][baseline]["mb_per_second"], rel=1e-12
    )
    settings = {row["setting"]: row for row in report["loader_vs_tiny_training"]}
    assert len(settings) == 2
    for row in settings.values():
        ratio = row["loader_batches_per_second"] / row["train_steps_per_second"]
        assert row["ratio"] == pytest.approx(ratio, rel=1e-12)
        assert 0 < row["packing_efficiency"] <= 1
    # Packing fills nearly every slot of its 8 x 256 rows; whole documents padded to the longest do not.
    packed = settings[f"pack 8 x {QUICK_MAX_LENGTH}"]
    assert packed["packing_efficiency"] == pytest.approx(packed["tokens_per_batch"] / (8 * QUICK_MAX_LENGTH))
