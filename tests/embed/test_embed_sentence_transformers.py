"""An exported folder loads with SentenceTransformer(path) and agrees with `encode`; the encode command."""

import json

import numpy as np
import pytest

import neobert  # noqa: F401  (registers the model type for sentence-transformers' AutoModel)
from helpers.embed import exported_model
from neobert.cli import main
from neobert.embed import encode, load_embedder

sentence_transformers = pytest.importorskip("sentence_transformers")

TEXTS = ["the quick brown fox", "", "a much longer second sentence, with punctuation and more words", "b"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return exported_model(tmp_path_factory.mktemp("st"), prompts={"query": "query: ", "document": "passage: "})


def test_sentence_transformers_gives_the_same_vectors(folder):
    model = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    theirs = model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    ours = encode(folder, TEXTS, show_progress=False)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_prompts_are_stored_and_used_by_both(folder):
    model = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    assert model.prompts["query"] == "query: " and model.prompts["document"] == "passage: "
    theirs = model.encode(TEXTS, prompt_name="query", normalize_embeddings=True, convert_to_numpy=True)
    embedder = load_embedder(folder)
    assert embedder.prompts["document"] == "passage: "
    ours = encode(embedder, TEXTS, prompt_name="query", show_progress=False)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    plain = encode(embedder, TEXTS, show_progress=False)
    assert np.abs(plain - ours).max(1).min() > 1e-3  # the prompt changed every text's vector


def test_encode_command(folder, tmp_path, capsys):
    source = tmp_path / "docs.jsonl"
    source.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS) + "\n")
    out = tmp_path / "out" / "docs.npy"
    assert main(["encode", "--model", str(folder), "--input", str(source), "--out", str(out)]) == 0
    np.testing.assert_allclose(np.load(out), encode(folder, TEXTS, show_progress=False), atol=1e-6)
    lines = tmp_path / "docs.txt"
    lines.write_text("one\ntwo\n")
    command = ["encode", "--model", str(folder), "--input", str(lines), "--out", str(out)]
    assert main([*command, "--pooling", "cls"]) == 0
    assert np.load(out).shape == (2, 64)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"body": "no text field"}\n')
    assert main(["encode", "--model", str(folder), "--input", str(bad), "--out", str(out)]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    assert main(["encode", "--model", str(folder), "--input", str(lines), "--out", str(out), "--pooling", "x"]) == 2
