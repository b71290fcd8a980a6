"""The command line end to end on a small corpus the test prepares: pretrain, resume, export, evaluate, demo, smoke."""

import itertools
import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForMaskedLM, BertTokenizer

from helpers.data import sample_texts, write_jsonl
from neobert.cli import main
from neobert.data.loader import LoaderConfig, build_loader
from neobert.data.prepare import PrepareConfig, prepare
from neobert.data.sources import ReaderOptions, resolve_sources
from neobert.tokenizer import load_tokenizer
from neobert.train.config import load_config, preset_path
from neobert.train.data import make_eval_batches
from neobert.train.distributed import DistributedContext

TINY = [
    "model.preset=tiny",
    "system.precision=fp32",  # pinned: `auto` measures the host
    "model.overrides.num_hidden_layers=2",
    "model.overrides.hidden_size=32",
    "model.overrides.num_attention_heads=2",
    "model.overrides.intermediate_size=64",
    "data.max_length=32",
    "data.batch_size=4",
    "data.eval_batches=2",
    "train.warmup_steps=1",
    "train.log_every=1",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "system.progress_bar=false",
    "system.log_sinks=[jsonl]",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def pretrain(corpus, out, *extra):
    return main(["pretrain", "demo", *TINY, f"data.path={corpus}", f"system.output_dir={out}", *extra])


def test_pretrain_resume_and_export(corpus, tmp_path, tokenizer):
    out = tmp_path / "run"
    assert pretrain(corpus, out, "budget.steps=4", "--stop-at-step", "2") == 0
    assert pretrain(corpus, out, "budget.steps=4", "--resume") == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"] for r in records if "train/loss" in r} >= {1, 2, 3, 4}
    assert any("eval/loss" in r for r in records) and (out / "loss_curve.png").is_file()

    exported = tmp_path / "exported"
    assert main(["export", "--model", str(out / "checkpoints" / "latest"), "--out", str(exported)]) == 0
    config = json.loads((exported / "config.json").read_text())
    assert config["auto_map"]["AutoModelForMaskedLM"] == "modeling_neobert.NeoBERTForMaskedLM"
    checkpoint = AutoModelForMaskedLM.from_pretrained(out / "checkpoints" / "latest").eval()
    model = AutoModelForMaskedLM.from_pretrained(exported).eval()
    batch = tokenizer(["the quick brown fox"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, checkpoint(**batch).logits)

    sentence_transformers = pytest.importorskip("sentence_transformers")
    encoder = sentence_transformers.SentenceTransformer(str(exported), device="cpu")
    vectors = encoder.encode(["the quick brown fox", "a second sentence"], convert_to_tensor=True)
    with torch.no_grad():
        batch = tokenizer(["the quick brown fox", "a second sentence"], padding=True, return_tensors="pt")
        hidden = model.model(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None].float()
        expected = (hidden * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(vectors.cpu(), expected, atol=1e-5, rtol=1e-4)
    assert main(["export", "--model", str(out / "checkpoints" / "latest"), "--out", str(exported)]) == 2  # no overwrite

    # Held-out MLM of the checkpoint on the corpus's held-out split: the command's figures, and the loop's
    # last evaluation, each recomputed here densely (eval mode, full logits) on the batches each one reads.
    evaluated = tmp_path / "evaluated"
    assert main(["evaluate", "--model", str(exported), "--mlm-data", str(corpus), "--out", str(evaluated)]) == 0
    mlm = json.loads((evaluated / "evaluate.json").read_text())["mlm"]
    command_batches = build_loader(LoaderConfig(path=str(corpus), split="heldout", batch_size=16, epochs=1), 0, 1)
    loss, accuracy, count = dense_mlm(model, itertools.islice(command_batches, 50))
    assert mlm["mlm/masked_tokens"] == count and mlm["mlm/accuracy"] == accuracy
    assert mlm["mlm/loss"] == pytest.approx(loss, rel=1e-5)

    last_eval = [r for r in records if "eval/loss" in r][-1]
    assert last_eval["step"] == 4
    config = load_config([preset_path("demo")], [*TINY, f"data.path={corpus}", "budget.steps=4"])
    loss, accuracy, count = dense_mlm(model, make_eval_batches(config, 4, DistributedContext()))
    assert last_eval["eval/masked_tokens"] == count and last_eval["eval/accuracy"] == pytest.approx(accuracy)
    assert last_eval["eval/loss"] == pytest.approx(loss, rel=1e-5)


MODEL_INPUTS = ("input_ids", "attention_mask", "cu_seqlens", "max_seqlen")


def dense_mlm(model, batches) -> tuple[float, float, int]:
    """Mean cross-entropy and top-1 accuracy over the masked tokens, from the full logits."""
    losses, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for batch in batches:
            inputs = {k: v for k, v in batch.items() if k in MODEL_INPUTS}
            logits = model.eval()(**inputs).logits.reshape(-1, model.config.vocab_size)
            labels = batch["labels"].reshape(-1)
            selected = labels != -100
            losses += F.cross_entropy(logits[selected].double(), labels[selected], reduction="sum").item()
            correct += int((logits[selected].argmax(-1) == labels[selected]).sum())
            count += int(selected.sum())
    return losses / count, correct / count, count


def test_unknown_key_fails_before_training(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert pretrain(corpus, out, "train.learning_rate=1e-3") == 2
    assert "learning_rate" in capsys.readouterr().err
    assert not out.exists()


def test_corpus_from_another_tokenizer_fails_before_training(tmp_path, capsys):
    vocab = {token: index for index, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the"])}
    other = BertTokenizer(vocab=vocab)
    other_folder = tmp_path / "other-tokenizer"
    other.save_pretrained(other_folder)
    source = write_jsonl(tmp_path / "docs.jsonl", sample_texts(50, long_every=0))
    prepare(
        resolve_sources([str(source)], ReaderOptions()),
        tmp_path / "prepared",
        load_tokenizer(other_folder),
        PrepareConfig(workers=1, progress=False, heldout_fraction=0.2),
    )
    out = tmp_path / "run"
    assert pretrain(tmp_path / "prepared", out, "budget.steps=2") == 2
    assert "tokenizer" in capsys.readouterr().err
    assert not (out / "checkpoints").exists()


@pytest.fixture(scope="module")
def cyclic_corpus(prepared_corpus):
    """Runs of a fixed cycle of words from random starting points: every word is equally frequent (the
    unigram baseline guesses right about 1 in 12) while its neighbours give it away (a model learns it)."""
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    words += ["golf", "hotel", "india", "juliet", "kilo", "lima"]
    rng = random.Random(0)
    texts = []
    for _ in range(300):
        start = rng.randrange(len(words))
        texts.append(" ".join(words[(start + k) % len(words)] for k in range(rng.randint(10, 40))))
    return prepared_corpus(texts, max_length=32, heldout_fraction=0.1)


def demo(corpus, out, *extra):
    overrides = [item for item in TINY if not item.startswith("system.log_sinks")]
    return main(
        ["demo", "--corpus", str(corpus), "--out", str(out), "--no-probe", *overrides, "data.eval_batches=8", *extra]
    )


def test_demo_exits_0_when_the_model_beats_the_unigram_baseline(cyclic_corpus, tmp_path, capsys):
    out = tmp_path / "demo"
    code = demo(cyclic_corpus, out, "budget.steps=150", "train.lr=1e-2", "train.eval_every=1000")
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 150 and report["status"] == "completed"
    assert report["model"]["accuracy"] > report["unigram"]["accuracy"] + 0.1 and code == 0
    assert report["model"]["perplexity"] == pytest.approx(math.exp(report["model"]["loss"]))
    assert "unigram baseline" in capsys.readouterr().out


def test_demo_exits_1_when_the_model_does_not(cyclic_corpus, tmp_path):
    out = tmp_path / "demo"
    code = demo(cyclic_corpus, out, "budget.steps=2", "train.lr=1e-9")  # the initial weights, in effect
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["accuracy"] < report["unigram"]["accuracy"] and code == 1


def test_demo_trains_the_short_budget_preset_when_asked(cyclic_corpus, tmp_path):
    out = tmp_path / "demo"
    overrides = [item for item in TINY if not item.startswith("system.log_sinks")]
    args = ["demo", "--recipe", "short", "--corpus", str(cyclic_corpus), "--out", str(out), "--no-probe"]
    assert main([*args, *overrides, "budget.steps=4"]) in (0, 1)
    report = json.loads((out / "report.json").read_text())
    assert report["recipe"]["preset"] == "demo-short" and report["steps"] == 4
    short = load_config([preset_path("demo-short")], [f"data.path={cyclic_corpus}"])
    assert report["config"]["train"]["schedule"] == short.train.schedule == "wsd"
    assert report["config"]["train"]["wsd_decay_fraction"] == short.train.wsd_decay_fraction


def test_demo_auto_recipe_follows_the_predicted_steps_of_the_hours_budget(monkeypatch):
    from neobert.commands import demo as demo_command

    monkeypatch.setattr(demo_command, "time_train_steps", lambda settings: 1.0)  # one second a step
    config = load_config([preset_path("demo")])
    few = demo_command.SHORT_RECIPE_BELOW_STEPS - 1
    for seconds, preset in ((few, "demo-short"), (few + 1, "demo")):
        config.budget.hours = seconds / 3600
        chosen = demo_command.choose_recipe("auto", config, [])
        assert chosen["preset"] == preset and chosen["predicted_steps"] == seconds

    def untimed(settings):
        raise AssertionError("a steps budget needs no timing")

    monkeypatch.setattr(demo_command, "time_train_steps", untimed)
    steps_budget = load_config([preset_path("demo")], ["budget.steps=900"])
    assert demo_command.choose_recipe("auto", steps_budget, [])["preset"] == "demo"
    assert demo_command.choose_recipe("standard", config, [])["preset"] == "demo"


def test_demo_auto_recipe_names_a_missing_corpus_before_training(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--recipe", "auto", "--corpus", str(tmp_path / "nowhere"), "--out", str(out)]
    assert main([*args, *TINY]) == 2
    assert "not a prepared corpus" in capsys.readouterr().err and not out.exists()


def test_demo_step_timing_leaves_the_random_state_as_it_found_it(cyclic_corpus):
    from neobert.commands.demo import time_train_steps

    state = torch.get_rng_state()
    settings = [item for item in TINY if not item.startswith("system.log_sinks")] + [f"data.path={cyclic_corpus}"]
    assert time_train_steps(settings) > 0
    assert torch.equal(torch.get_rng_state(), state)


def test_pretrain_takes_preset_names_beside_yaml_files(tmp_path, capsys):
    import neobert
    from neobert.commands.pretrain import split_items
    from neobert.train.config import PRESET_ROOT, load_config, preset_path

    own = tmp_path / "mine.yaml"
    own.write_text("train:\n  lr: 0.0005\n")
    paths, overrides = split_items(["neobert-250m-stage2", "ablations/m1", str(own), "budget.steps=3"])
    assert paths == [str(preset_path("neobert-250m-stage2")), str(preset_path("ablations/m1")), str(own)]
    assert overrides == ["budget.steps=3"]
    # The presets are package data: they travel with a wheel install, not only with a checkout.
    assert PRESET_ROOT.is_relative_to(Path(neobert.__file__).parent)
    stage2 = load_config([str(preset_path("neobert-250m-stage2"))], [])
    assert stage2.data.max_length == 4096 and stage2.model.preset == "neobert-250m"  # its inherit resolved
    assert main(["pretrain", "no-such-preset"]) == 2
    error = capsys.readouterr().err
    assert "no pre-training preset 'no-such-preset'" in error and "'neobert-250m-stage1'" in error
    assert main(["pretrain", str(tmp_path / "absent.yaml")]) == 2


def test_smoke_checks_the_installation_in_seconds(capsys, tokenizer):
    from neobert import NeoBERTConfig, NeoBERTForMaskedLM

    assert main(["smoke"]) == 0
    out = capsys.readouterr().out
    parameters = sum(p.numel() for p in NeoBERTForMaskedLM(NeoBERTConfig.from_preset("tiny")).parameters())
    tokens = len(tokenizer("Paris is the [MASK] of France.")["input_ids"])
    assert f"preset tiny: {parameters:,} parameters, {tokens} tokens" in out
    assert "gives identical logits: True" in out
    assert main(["smoke", "--text", "no mask here"]) == 2  # a usage error: one line, exit 2
    assert capsys.readouterr().err == "neobert smoke: --text must contain [MASK]\n"
