"""benchmarks/peers/prepare_throughput.py runs end to end on made-up text (`--quick`) and writes a complete report."""

import json
import sys
from pathlib import Path

from helpers.benchmarks import run_quick_benchmark
from neobert import load_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "peers"))
from prepare_throughput import quick_text  # noqa: E402

QUICK_MAX_LENGTH = 256


def test_prepare_throughput_quick_run_times_the_work_it_was_given(tmp_path):
    report, _ = run_quick_benchmark("peers/prepare_throughput.py", tmp_path / "prepare_throughput.json")
    assert report["corpus"]["name"] == "quick (made-up)"

    # Each route tokenised the whole seeded corpus: we store every token without specials; the official
    # route truncates each document to 256 with [CLS] and [SEP].
    source, documents, _, _ = quick_text(tmp_path)
    assert report["corpus"]["documents"] == documents
    texts = [json.loads(line)["text"] for line in source.read_text().splitlines()]
    lengths = [len(ids) for ids in load_tokenizer()(texts, add_special_tokens=False)["input_ids"]]
    official = sum(min(n, QUICK_MAX_LENGTH - 2) + 2 for n in lengths)
    expected = {"neobert": sum(lengths), "official": official, "official-num_proc": official}
    assert {route: [run["tokens"] for run in report["prepare"][route]["runs"]] for route in expected} == {
        route: [tokens] for route, tokens in expected.items()
    }
    assert report["prepare_speedup_vs_official"] > 0
    rows = report["loader_vs_tiny_training"]
    assert len(rows) == 2 and all(0 < row["packing_efficiency"] <= 1 and row["ratio"] > 0 for row in rows)
