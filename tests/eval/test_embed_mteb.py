"""The MTEB wrapper and `neobert mteb` on a custom retrieval task (local data) through mteb's own evaluator."""

import json

import numpy as np
import pytest

from helpers.embed import exported_model
from neobert.embed import encode

mteb = pytest.importorskip("mteb")
from datasets import Dataset  # noqa: E402
from mteb.abstasks.retrieval import AbsTaskRetrieval  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402
from mteb.types import PromptType  # noqa: E402

from neobert.cli import main  # noqa: E402
from neobert.eval.mteb_encoder import PROMPTS_BY_TASK_TYPE, NeoBERTEncoder  # noqa: E402

DOCUMENTS = [
    "cats purr and sleep on warm windowsills all afternoon",
    "heavy rain and strong wind are expected across the coast tomorrow",
    "the stock market fell sharply after the bank raised interest rates",
    "a recipe for lemon cake with sugar butter and fresh eggs",
    "how to tune a guitar string by string using your ear",
    "the printing press changed how books were made in europe",
]
# Each query shares words with its own document only; the untrained test model ranks some second.
QUERIES = ["cats sleep windowsills", "rain wind coast", "stock market interest rates", "lemon cake recipe"]
QUERIES += ["tune guitar string", "printing press books"]


class LocalRetrieval(AbsTaskRetrieval):
    """Query i's one relevant document is document i."""

    metadata = TaskMetadata(
        type="Retrieval",
        name="NeoBERTLocalRetrieval",
        main_score="ndcg_at_10",
        description="Local test task: each keyword query must retrieve the sentence it was taken from.",
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
        documents = [{"id": f"d{i}", "text": t, "title": ""} for i, t in enumerate(DOCUMENTS)]
        relevant = {f"q{i}": {f"d{i}": 1} for i in range(len(QUERIES))}
        split = {"queries": queries, "corpus": Dataset.from_list(documents), "relevant_docs": relevant}
        self.dataset = {"default": {"test": {**split, "top_ranked": None}}}
        self.data_loaded = True


def expected_scores(folder, query_prompt: str = "", document_prompt: str = "") -> dict[str, float]:
    """nDCG@10 and MRR@10 by hand: one relevant document, so 1 / log2(rank + 1) and 1 / rank."""
    queries = encode(folder, QUERIES, prompt=query_prompt, show_progress=False)
    documents = encode(folder, DOCUMENTS, prompt=document_prompt, show_progress=False)
    scores = queries @ documents.T
    ranks = 1 + (scores > np.diag(scores)[:, None]).sum(1)
    return {"ndcg_at_10": float(np.mean(1 / np.log2(ranks + 1))), "mrr_at_10": float(np.mean(1 / ranks))}


def mteb_scores(encoder) -> dict[str, float]:
    results = mteb.evaluate(encoder, LocalRetrieval(), cache=None, show_progress_bar=False)
    return results.task_results[0].scores["test"][0]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return exported_model(tmp_path_factory.mktemp("mteb"))


class ReversedDocuments(NeoBERTEncoder):
    """A wrong encoder: the right vectors, returned in the wrong order for the corpus."""

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
        vectors = super().encode(
            inputs, task_metadata=task_metadata, hf_split=hf_split, hf_subset=hf_subset, prompt_type=prompt_type
        )
        return vectors[::-1].copy() if prompt_type == PromptType.document else vectors


def test_custom_task_scores_what_the_vectors_imply(folder):
    encoder = NeoBERTEncoder(str(folder), use_default_prompts=False)
    assert encoder.mteb_model_meta.embed_dim == 64 and encoder.mteb_model_meta.similarity_fn_name == "cosine"
    scores, expected = mteb_scores(encoder), expected_scores(folder)
    assert 0.5 < expected["ndcg_at_10"] < 1.0  # neither trivial nor hopeless for this model
    assert scores["ndcg_at_10"] == pytest.approx(expected["ndcg_at_10"], abs=1e-5)
    assert scores["mrr_at_10"] == pytest.approx(expected["mrr_at_10"], abs=1e-5)
    wrong = mteb_scores(ReversedDocuments(str(folder), use_default_prompts=False))
    assert wrong["ndcg_at_10"] < scores["ndcg_at_10"] - 0.1


def contains(sequence: list[int], part: list[int]) -> bool:
    return any(sequence[i : i + len(part)] == part for i in range(len(sequence) - len(part) + 1))


def test_prompts_by_task_type_reach_the_model(folder, tokenizer):
    encoder = NeoBERTEncoder(str(folder), prompts={"NeoBERTLocalRetrieval-document": "passage: "})
    metadata = LocalRetrieval.metadata
    instruction = PROMPTS_BY_TASK_TYPE["Retrieval-query"]
    assert encoder.prompt_for(metadata, PromptType.query) == instruction
    assert encoder.prompt_for(metadata, PromptType.document) == "passage: "

    seen: list[int] = []
    embeddings = encoder.embedder.model.get_input_embeddings()
    hook = embeddings.register_forward_hook(lambda module, args, output: seen.extend(args[0].flatten().tolist()))
    try:
        scores = mteb_scores(encoder)
    finally:
        hook.remove()
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    for query in QUERIES:
        assert contains(seen, [tokenizer.cls_token_id, *ids(instruction + query)]), query
        assert not contains(seen, [tokenizer.cls_token_id, *ids(query)]), query
    for document in DOCUMENTS:
        assert contains(seen, [tokenizer.cls_token_id, *ids("passage: " + document)]), document
    expected = expected_scores(folder, instruction, "passage: ")
    assert scores["ndcg_at_10"] == pytest.approx(expected["ndcg_at_10"], abs=1e-5)


def test_mteb_command_runs_a_task_and_writes_its_summary(folder, tmp_path, monkeypatch, capsys):
    assert main(["mteb", "--model", str(folder), "--tasks", "NoSuchTask"]) == 2
    assert "NoSuchTask" in capsys.readouterr().err
    # MTEB's data cannot be downloaded here: the registry lookup hands the command the local task.
    monkeypatch.setattr(mteb, "get_tasks", lambda tasks: [LocalRetrieval() for _ in tasks])
    out = tmp_path / "mteb"
    assert main(["mteb", "--model", str(folder), "--tasks", "Local", "--out", str(out), "--no-prompts"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    expected = expected_scores(folder)["ndcg_at_10"]
    assert summary["model"] == str(folder)
    assert summary["main_scores"]["NeoBERTLocalRetrieval"] == pytest.approx(expected, abs=1e-5)
    table = capsys.readouterr().out.splitlines()  # the scores as a table: task, main score
    assert table[-3].split() == ["task", "main", "score"] and set(table[-2]) <= {"-", " "}
    assert table[-1].split() == ["NeoBERTLocalRetrieval", f"{expected:.4f}"]


def test_the_wrapper_pools_as_the_folder_says(tmp_path):
    from sentence_transformers import SentenceTransformer

    folder = exported_model(tmp_path, pooling="cls")
    theirs = SentenceTransformer(str(folder), device="cpu").encode(QUERIES, normalize_embeddings=True)
    encoder = NeoBERTEncoder(str(folder), use_default_prompts=False)
    batches = [{"text": QUERIES[:2]}, {"text": QUERIES[2:]}]
    ours = encoder.encode(batches, task_metadata=LocalRetrieval.metadata, hf_split="test", hf_subset="default")
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
