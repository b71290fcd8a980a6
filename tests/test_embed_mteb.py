"""The MTEB wrapper runs a custom retrieval task (local data) through mteb's own evaluator."""

import numpy as np
import pytest

from embed_helpers import exported_model

mteb = pytest.importorskip("mteb")
from datasets import Dataset  # noqa: E402
from mteb.abstasks.retrieval import AbsTaskRetrieval  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402
from mteb.types import PromptType  # noqa: E402

from neobert.eval.mteb_encoder import PROMPTS_BY_TASK_TYPE, NeoBERTEncoder  # noqa: E402

QUERIES = ["cats purr when content", "heavy rain expected tomorrow", "the stock market fell sharply"]
DISTRACTORS = ["a recipe for lemon cake", "how to tune a guitar", "the history of the printing press"]


class LocalRetrieval(AbsTaskRetrieval):
    """Each query's relevant document is the query text itself, among distractors: a perfect encoder
    of identical texts ranks it first."""

    metadata = TaskMetadata(
        type="Retrieval",
        name="NeoBERTLocalRetrieval",
        main_score="ndcg_at_10",
        description="Local test task: each query must retrieve the document with the same text.",
        reference=None,
        dataset={"path": "local/neobert-test", "revision": "1"},
        category="t2t",
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        date=("2025-01-01", "2025-01-01"),
        dialect=[],
        domains=[],
        task_subtypes=[],
        license="not specified",
        annotations_creators="derived",
        modalities=["text"],
        sample_creation="created",
        bibtex_citation="",
    )

    def load_data(self, **kwargs):
        queries = Dataset.from_list([{"id": f"q{i}", "text": t} for i, t in enumerate(QUERIES)])
        documents = [{"id": f"d{i}", "text": t, "title": ""} for i, t in enumerate(QUERIES)]
        documents += [{"id": f"x{i}", "text": t, "title": ""} for i, t in enumerate(DISTRACTORS)]
        relevant = {f"q{i}": {f"d{i}": 1} for i in range(len(QUERIES))}
        split = {"queries": queries, "corpus": Dataset.from_list(documents), "relevant_docs": relevant}
        self.dataset = {"default": {"test": {**split, "top_ranked": None}}}
        self.data_loaded = True


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return exported_model(tmp_path_factory.mktemp("mteb"))


def test_custom_task_runs_through_mteb(folder):
    encoder = NeoBERTEncoder(str(folder), use_default_prompts=False)
    assert encoder.mteb_model_meta.embed_dim == 64 and encoder.mteb_model_meta.similarity_fn_name == "cosine"
    results = mteb.evaluate(encoder, LocalRetrieval(), cache=None, show_progress_bar=False)
    scores = results.task_results[0].scores["test"][0]
    assert scores["ndcg_at_10"] == pytest.approx(1.0) and scores["mrr_at_10"] == pytest.approx(1.0)


def test_prompts_by_task_type(folder):
    encoder = NeoBERTEncoder(str(folder), prompts={"NeoBERTLocalRetrieval-document": "passage: "})
    metadata = LocalRetrieval.metadata
    assert encoder.prompt_for(metadata, PromptType.query) == PROMPTS_BY_TASK_TYPE["Retrieval-query"]
    assert encoder.prompt_for(metadata, PromptType.document) == "passage: "
    # With a query-only instruction, identical texts are no longer identical vectors: scores stay valid.
    results = mteb.evaluate(encoder, LocalRetrieval(), cache=None, show_progress_bar=False)
    assert 0.0 < results.task_results[0].get_score() <= 1.0


def test_the_wrapper_pools_as_the_folder_says(tmp_path):
    from sentence_transformers import SentenceTransformer

    folder = exported_model(tmp_path, pooling="cls")
    theirs = SentenceTransformer(str(folder), device="cpu").encode(QUERIES, normalize_embeddings=True)
    encoder = NeoBERTEncoder(str(folder), use_default_prompts=False)
    batches = [{"text": QUERIES[:2]}, {"text": QUERIES[2:]}]
    ours = encoder.encode(batches, task_metadata=LocalRetrieval.metadata, hf_split="test", hf_subset="default")
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
