"""Contrastive fine-tuning: InfoNCE, gradient cache, dataset sampling, pairs files, gathering, the command."""

import json
import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from helpers.embed import exported_model
from helpers.model import small_config
from neobert import NeoBERTModel
from neobert.cli import main
from neobert.embed import encode
from neobert.embed_train.data import HomogeneousBatches, Pair, read_pairs, sampling_probabilities
from neobert.embed_train.grad_cache import contrastive_step
from neobert.embed_train.loss import info_nce
from neobert.embed_train.train import packed_embedder


def direct_info_nce(q, p, n, t):
    """Written out term by term: candidates are all positives then all hard negatives."""
    candidates = list(p) + list(n)
    total = 0.0
    for i, query in enumerate(q):
        scores = [float(torch.cosine_similarity(query, c, dim=0)) / t for c in candidates]
        total += -scores[i] + math.log(sum(math.exp(s) for s in scores))
    return total / len(q)


def test_info_nce_equals_the_direct_formula():
    q, p, n = torch.randn(4, 8), torch.randn(4, 8), torch.randn(3, 8)
    assert float(info_nce(q, p, n, 0.07)) == pytest.approx(direct_info_nce(q, p, n, 0.07), rel=1e-5)
    assert float(info_nce(q, p, None, 0.07)) == pytest.approx(direct_info_nce(q, p, [], 0.07), rel=1e-5)
    # A perfect positive and orthogonal negatives: the loss approaches zero at a low temperature.
    eye = torch.eye(4)
    assert float(info_nce(eye, eye, -eye, 0.01)) < 1e-6
    with pytest.raises(ValueError, match="must match"):
        info_nce(q, p[:3], n)


def test_gradient_cache_gives_the_full_batch_gradients(tokenizer):
    torch.manual_seed(1)
    model = NeoBERTModel(small_config(dropout=0.0)).train()
    embed = packed_embedder(model, tokenizer, 64, "mean", torch.device("cpu"))
    groups = (
        ["what is a cat", "rain tomorrow?", "best pizza", "how tall is everest", "x"],
        ["cats are small felines", "forecast: showers", "pizza places in naples", "8,849 metres", "y"],
        ["dogs bark", "sunny all week", "sushi bars", "k2 is 8,611 m"],
    )

    def loss_fn(q, p, n):
        return info_nce(q, p, n, 0.07)

    grads = []
    for chunk_size in (None, 2):
        model.zero_grad()
        loss = contrastive_step(embed, groups, loss_fn, chunk_size)
        grads.append((float(loss), [param.grad.clone() for param in model.parameters()]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    for full, cached in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(cached, full, atol=1e-6, rtol=1e-4)
    assert any(float(g.abs().sum()) > 0 for g in grads[0][1])


def test_sampling_proportional_to_size_to_the_alpha():
    np.testing.assert_allclose(sampling_probabilities([100, 400], 0.5), [1 / 3, 2 / 3])
    np.testing.assert_allclose(sampling_probabilities([100, 400], 1.0), [0.2, 0.8])
    np.testing.assert_allclose(sampling_probabilities([100, 400], 0.0), [0.5, 0.5])
    data = {
        "small": [Pair(f"s{i}", f"sp{i}") for i in range(100)],
        "large": [Pair(f"l{i}", f"lp{i}") for i in range(400)],
    }
    draws = HomogeneousBatches(data, batch_size=4, alpha=0.5, seed=3)
    counts = {"small": 0, "large": 0}
    for (name, batch), _ in zip(draws, range(3000), strict=False):
        counts[name] += 1
        assert all(pair.query[0] == name[0] for pair in batch)  # one dataset per batch
        assert len(batch) == 4
    assert counts["small"] / 3000 == pytest.approx(1 / 3, abs=0.03)
    with pytest.raises(ValueError, match="at least one pair"):
        sampling_probabilities([5, 0])


def test_processes_share_the_dataset_and_split_the_batch():
    data = {"a": [Pair(f"a{i}", "p") for i in range(50)], "b": [Pair(f"b{i}", "p") for i in range(50)]}
    ranks = [iter(HomogeneousBatches(data, 3, seed=7, rank=r, world_size=2)) for r in range(2)]
    for _ in range(20):
        (name0, batch0), (name1, batch1) = next(ranks[0]), next(ranks[1])
        assert name0 == name1
        assert not {p.query for p in batch0} & {p.query for p in batch1}


def test_pairs_files(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(
        json.dumps({"query": "q", "positive": "p", "negatives": ["n1", "n2"]})
        + "\n\n"
        + json.dumps({"query": "q2", "positive": "p2", "negative": "n"})
        + "\n"
        + json.dumps({"query": "q3", "positive": "p3"})
        + "\n"
    )
    assert read_pairs(good) == [Pair("q", "p", ("n1", "n2")), Pair("q2", "p2", ("n",)), Pair("q3", "p3", ())]
    cases = {
        '{"query": "q"}': r"bad.jsonl:1: missing field 'positive'",
        '{"positive": "p"}': "missing field 'query'",
        '{"query": 3, "positive": "p"}': "'query' must be a string",
        '{"query": "q", "positive": "p", "negatives": [1]}': "negatives must be",
        "[1, 2]": "expected an object",
        "{not json": r"bad.jsonl:1:2: not valid JSON",
    }
    for line, message in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text(line + "\n")
        with pytest.raises(ValueError, match=message):
            read_pairs(bad)
    with pytest.raises(FileNotFoundError):
        read_pairs(tmp_path / "absent.jsonl")


def test_pairs_from_a_table_and_bytes_that_are_not_utf8_named_with_their_line(tmp_path):
    table = tmp_path / "pairs.csv"
    table.write_text("query,positive,negative\nq,p,n\nq2,p2,n2\n", encoding="utf-8")
    assert read_pairs(table) == [Pair("q", "p", ("n",)), Pair("q2", "p2", ("n2",))]
    latin1 = tmp_path / "pairs.jsonl"
    latin1.write_bytes(b'{"query": "q", "positive": "p"}\n{"query": "caf\xe9", "positive": "p"}\n')
    with pytest.raises(ValueError, match=rf"^{latin1}:2:15: byte 0xe9 is not UTF-8; save the file as UTF-8$"):
        read_pairs(latin1)


def test_pairs_from_a_saved_datasets_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([{"query": "q", "positive": "p", "negatives": ["n"]}]).save_to_disk(tmp_path / "ds")
    assert read_pairs(tmp_path / "ds") == [Pair("q", "p", ("n",))]


def _gather_worker(rank, port, q, p, n, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        half = q.shape[0] // 2
        local_q = q[rank * half : (rank + 1) * half].clone().requires_grad_()
        local_n = n[:1] if rank == 0 else n[1:]  # ranks hold different numbers of hard negatives
        loss = info_nce(local_q, p[rank * half : (rank + 1) * half], local_n, 0.07)
        loss.backward()
        results[rank] = (float(loss), local_q.grad)
    finally:
        torch.distributed.destroy_process_group()


def test_negatives_are_gathered_across_processes():
    q, p, n = torch.randn(4, 8), torch.randn(4, 8), torch.randn(3, 8)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_gather_worker, args=(port, q, p, n, results), nprocs=2)
    full_q = q.clone().requires_grad_()
    full = info_nce(full_q, p, n, 0.07, gather=False)
    (full * 2).backward()  # each process averages over its own half of the queries
    assert (results[0][0] + results[1][0]) / 2 == pytest.approx(float(full.detach()), rel=1e-5)
    torch.testing.assert_close(torch.cat([results[0][1], results[1][1]]), full_q.grad)


# Queries and answers share no word: an untrained encoder ranks the right answer first by chance only.
TRAINING_PAIRS = [
    ("capital of france", "paris"),
    ("largest ocean", "pacific"),
    ("red fruit", "apple"),
    ("fast animal", "cheetah"),
    ("frozen water", "ice"),
    ("opposite of hot", "cold"),
    ("king of the jungle", "lion"),
    ("colour of the sky", "blue"),
]


def loss_and_recall(folder) -> tuple[float, float]:
    """InfoNCE (t = 0.07, in-batch negatives) of the training pairs as one batch, and recall@1 of each
    query against every answer, from the model's `encode` vectors."""
    queries = encode(folder, [q for q, _ in TRAINING_PAIRS], show_progress=False)
    answers = encode(folder, [a for _, a in TRAINING_PAIRS], show_progress=False)
    logits = queries @ answers.T / 0.07
    loss = float(np.mean(np.log(np.exp(logits).sum(1)) - np.diag(logits)))
    return loss, float(np.mean(logits.argmax(1) == np.arange(len(TRAINING_PAIRS))))


def test_contrastive_command_learns_its_pairs(tmp_path, capsys):
    model = exported_model(tmp_path)
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"query": q, "positive": a, "negatives": [f"other {i}"]} for i, (q, a) in enumerate(TRAINING_PAIRS)]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"query": f"t{i}", "positive": f"u{i}"}) + "\n" for i in range(4)))
    out = tmp_path / "embedder"
    loss_before, recall_before = loss_and_recall(model)
    command = ["contrastive", "--model", str(model), "--data", str(pairs), str(other), "--out", str(out)]
    assert main([*command, "--steps", "20", "--batch-size", "4", "--grad-cache", "3", "--lr", "1e-3"]) == 0
    assert (out / "modules.json").is_file() and (out / "1_Pooling" / "config.json").is_file()
    loss_after, recall_after = loss_and_recall(out)
    assert loss_before > 1.5 and recall_before <= 0.5
    assert loss_after < loss_before / 4 and recall_after == 1.0
    logged = [
        float(line.split("loss ")[1].split()[0]) for line in capsys.readouterr().out.splitlines() if "loss " in line
    ]
    assert len(logged) == 2 and logged[-1] < loss_before  # steps 10 and 20
    assert main([*command, "--steps", "3"]) == 2  # no overwrite
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q"}\n')
    assert main(["contrastive", "--model", str(model), "--data", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "missing field 'positive'" in capsys.readouterr().err


def test_stored_query_and_document_prompts_are_trained_with(tmp_path, monkeypatch):
    from neobert.embed_train import train as train_module
    from neobert.embed_train.data import Pair

    pairs = [Pair("who won", "the home side won", ("it rained",)), Pair("when", "at noon", ())]
    prompts = {"query": "query: ", "document": "passage: ", "classification": "label: "}
    assert train_module.training_groups(pairs, prompts) == (
        ["query: who won", "query: when"],
        ["passage: the home side won", "passage: at noon"],
        ["passage: it rained"],
    )
    assert train_module.training_groups(pairs, None)[0] == ["who won", "when"]

    model = exported_model(tmp_path)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"query": f"q{i}", "positive": f"p{i}"}) + "\n" for i in range(4)))
    seen = []
    real_step = train_module.contrastive_step

    def recording_step(embed, groups, *args, **kwargs):
        seen.append(groups)
        return real_step(embed, groups, *args, **kwargs)

    monkeypatch.setattr(train_module, "contrastive_step", recording_step)
    command = ["contrastive", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "e")]
    prompt_options = ["--prompt", "query=query: ", "--prompt", "document=passage: "]
    assert main([*command, "--steps", "1", "--batch-size", "4", *prompt_options]) == 0
    queries, positives, _ = seen[0]
    assert sorted(queries) == [f"query: q{i}" for i in range(4)]
    assert sorted(positives) == [f"passage: p{i}" for i in range(4)]
    stored = json.loads((tmp_path / "e" / "config_sentence_transformers.json").read_text())["prompts"]
    assert stored["query"] == "query: " and stored["document"] == "passage: "
