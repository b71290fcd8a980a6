"""The demo's frozen-embedding probe: a linear probe on mean-pooled embeddings, for the trained model and for
the initialisation its run started from."""

import json

import pytest
import torch
from torch import nn
from transformers import AutoModel

from neobert.cli import main
from neobert.demo import offline_suite, retrieval_offline
from neobert.finetune.data import Examples
from neobert.tokenizer import load_tokenizer
from neobert.train.config import load_config, preset_path
from neobert.train.trainer import initial_model
from test_commands import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


class BagOfTokens(nn.Module):
    """Token embeddings, no context: enough to tell "good" from "bad" when the word decides the label."""

    def __init__(self, scale: float):
        super().__init__()
        self.embedding = nn.Embedding(30522, 16)
        self.embedding.weight.data.mul_(scale)

    def forward(self, input_ids, attention_mask):
        return type("Out", (), {"last_hidden_state": self.embedding(input_ids)})()


def word_task(n: int, offset: int) -> Examples:
    words = ["table", "river", "window", "garden", "paper"]
    texts = [f"{words[(i + offset) % 5]} {'good' if i % 2 else 'bad'} {words[(i * 3) % 5]}" for i in range(n)]
    return Examples(texts, ["pos" if i % 2 else "neg" for i in range(n)], source="words")


def test_the_probe_separates_what_the_embeddings_separate():
    data = {"words": (word_task(60, 0), word_task(30, 1))}
    budget = offline_suite.SuiteBudget(max_length=16)
    torch.manual_seed(0)
    scores = offline_suite.probe_suite(
        {"bag": BagOfTokens(1.0), "constant": BagOfTokens(0.0)}, load_tokenizer(), budget, data
    )
    assert scores["bag"] == {"words": 1.0, "mean": 1.0}
    assert scores["constant"]["words"] == 0.5  # every vector equal: the majority class of a balanced test set


def headline_pairs(n: int) -> tuple[list[str], list[str]]:
    words = ["table", "river", "window", "garden", "paper", "stone", "cloud", "horse", "music", "salt"]
    headlines = [f"{words[i % 10]} {words[(i * 7 + 3) % 10]} {i}" for i in range(n)]
    return headlines, [f"the story of the {h} and more" for h in headlines]


def test_frozen_retrieval_finds_what_the_embeddings_share():
    torch.manual_seed(0)
    scores = retrieval_offline.frozen_retrieval(
        {"bag": BagOfTokens(1.0), "constant": BagOfTokens(0.0)}, load_tokenizer(), 32, headline_pairs(30)
    )
    assert scores["bag"]["recall_at_1"] > 0.5  # each pair shares its words and its number; chance is 1/30
    # every vector equal: every article ties with the right one, and ties count against it
    assert scores["constant"] == {"recall_at_1": 0.0, "mrr_at_10": 0.0, "ndcg_at_10": 0.0}


def test_demo_reports_the_probe_of_the_trained_model_and_of_its_initialisation(corpus, tmp_path, monkeypatch, capsys):
    data = {"words": (word_task(40, 0), word_task(20, 1)), "more words": (word_task(30, 2), word_task(20, 3))}
    monkeypatch.setattr(offline_suite, "task_examples", lambda task, budget: data[task.name])
    monkeypatch.setattr(offline_suite, "TASKS", [offline_suite.SuiteTask(n, "x", None) for n in data])
    monkeypatch.setattr(retrieval_offline, "headline_article_pairs", lambda max_articles: headline_pairs(24))
    out = tmp_path / "demo"
    overrides = [item for item in TINY if not item.startswith("system.log_sinks")] + ["budget.steps=3"]
    main(["demo", "--corpus", str(corpus), "--out", str(out), *overrides])
    report = json.loads((out / "report.json").read_text())
    scores = report["probe"]["scores"]
    assert set(scores) == {"trained", "random init"} and set(scores["trained"]) == {"words", "more words", "mean"}

    # The same numbers, recomputed here from the checkpoint and from the run's own initialisation.
    config = load_config([preset_path("demo")], [f"data.path={corpus}", f"system.output_dir={out}", *overrides])
    tokenizer = load_tokenizer()
    budget = offline_suite.SuiteBudget(max_train=1000, max_test=400, max_length=config.data.max_length)
    expected = offline_suite.probe_suite(
        {"trained": AutoModel.from_pretrained(report["checkpoint"]), "random init": initial_model(config).model},
        tokenizer,
        budget,
        data,
    )
    assert scores == expected
    retrieval = retrieval_offline.frozen_retrieval(
        {"trained": AutoModel.from_pretrained(report["checkpoint"]), "random init": initial_model(config).model},
        tokenizer,
        config.data.max_length,
        headline_pairs(24),
    )
    assert report["probe"]["retrieval"] == retrieval
    printed = capsys.readouterr().out
    assert "random init" in printed and "frozen-embedding retrieval" in printed
    assert f"{retrieval['trained']['recall_at_1']:17.3f}" in printed


def test_demo_without_the_probe(corpus, tmp_path):
    out = tmp_path / "demo"
    overrides = [item for item in TINY if not item.startswith("system.log_sinks")] + ["budget.steps=3"]
    main(["demo", "--corpus", str(corpus), "--out", str(out), "--no-probe", *overrides])
    assert "probe" not in json.loads((out / "report.json").read_text())
