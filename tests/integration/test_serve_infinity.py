"""An exported folder served by Infinity (an existing embedding server, in its own environment) answers
OpenAI `/embeddings` requests over real HTTP with the vectors `neobert.encode` gives in-process.

Infinity always L2-normalises what it returns; `encode` normalises by default too, so the vectors compare
as they are. Skipped when the serving environment is absent (`make serve-env` builds it)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.embed import exported_model
from neobert.embed import encode, load_embedder

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "peers"))
from infinity_serving import InfinityServer, embeddings_request, request, serve_python, vectors  # noqa: E402

pytestmark = pytest.mark.slow

TEXTS = ["the quick brown fox", "a much longer second sentence, with punctuation and more words", "b", "Ünïcödé ✓"]


@pytest.fixture(scope="module")
def python():
    found, why = serve_python()
    if found is None:
        pytest.skip(why)
    return found


@pytest.fixture(scope="module")
def folder(python, tmp_path_factory):
    return exported_model(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def server(python, folder):
    with InfinityServer(python, folder) as running:
        yield running


@pytest.fixture(scope="module")
def embedder(folder):
    return load_embedder(folder)


def embed(server, texts):
    status, answer = request(server.url, "POST", "/embeddings", embeddings_request(texts))
    assert status == 200, answer
    assert answer["object"] == "list" and answer["model"] == "neobert"
    return np.asarray(vectors(answer), dtype=np.float32)


def test_a_single_text(server, embedder):
    served = embed(server, TEXTS[0])
    assert served.shape == (1, 64)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-6)  # Infinity's L2 normalisation
    np.testing.assert_allclose(served[0], encode(embedder, TEXTS[0], show_progress=False), atol=1e-5, rtol=0)


def test_a_batch_comes_back_in_input_order(server, embedder):
    served = embed(server, TEXTS)
    np.testing.assert_allclose(served, encode(embedder, TEXTS, show_progress=False), atol=1e-5, rtol=0)


def test_a_text_longer_than_the_model_limit_is_truncated_as_encode_truncates_it(server, embedder):
    long_text = " ".join(f"word{i}" for i in range(2000))
    assert len(embedder.tokenizer(long_text)["input_ids"]) > embedder.max_length
    served = embed(server, [long_text, TEXTS[0]])
    with pytest.warns(UserWarning):  # encode says it truncated; the server truncates at the same limit
        ours = encode(embedder, [long_text, TEXTS[0]], show_progress=False)
    np.testing.assert_allclose(served, ours, atol=1e-5, rtol=0)


def test_an_empty_string_gets_the_vector_of_its_special_tokens(server, embedder):
    served = embed(server, ["", TEXTS[2]])
    np.testing.assert_allclose(served, encode(embedder, ["", TEXTS[2]], show_progress=False), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "body",
    [b'{"model": "neobert", "input": ["unterminated"', b'{"model": "neobert"}', b'{"model": "neobert", "input": []}'],
    ids=["bad-json", "no-input", "empty-list"],
)
def test_a_bad_request_is_refused_with_a_4xx_and_the_server_keeps_serving(server, embedder, body):
    status, answer = request(server.url, "POST", "/embeddings", body)
    assert 400 <= status < 500, answer
    assert server.alive()
    np.testing.assert_allclose(embed(server, TEXTS[0])[0], encode(embedder, TEXTS[0], show_progress=False), atol=1e-5)


def test_the_load_run_stops_by_itself_and_reports_both_sides(python, tmp_path):
    import serve_load

    out = tmp_path / "serve_load.json"
    threads = torch.get_num_threads()
    try:
        assert serve_load.main(["--quick", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())
    served, in_process = report["rows"]["Infinity /embeddings (2 clients)"], report["rows"][serve_load.IN_PROCESS]
    assert served["requests"] == in_process["requests"] == 20 and served["failures"] == 0
    assert served["p50_ms"] <= served["p99_ms"] and in_process["p50_ms"] <= in_process["p99_ms"]
    assert report["warmup_max_abs_difference"] < 1e-5
