"""The command line end to end on a small corpus the test prepares: pretrain, resume, export, demo."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM, BertTokenizer

from data_helpers import prepare_files, sample_texts, write_jsonl
from neobert.cli import main
from neobert.data.prepare import PrepareConfig, prepare
from neobert.data.sources import ReaderOptions, resolve_sources
from neobert.tokenizer import load_tokenizer

TINY = [
    "model.preset=tiny",
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


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    source = write_jsonl(folder / "docs.jsonl", sample_texts(300, long_every=0))
    prepare_files([source], folder / "prepared", max_length=32, heldout_fraction=0.1)
    return folder / "prepared"


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
    assert main(["export", str(out / "checkpoints" / "latest"), "--out", str(exported)]) == 0
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
    assert main(["export", str(out / "checkpoints" / "latest"), "--out", str(exported)]) == 2  # no overwrite

    # Held-out MLM of the checkpoint on the corpus's held-out split, as the loop's own evaluation measures it.
    evaluated = tmp_path / "evaluated"
    assert main(["evaluate", "--model", str(exported), "--mlm-data", str(corpus), "--out", str(evaluated)]) == 0
    mlm = json.loads((evaluated / "evaluate.json").read_text())["mlm"]
    assert mlm["mlm/masked_tokens"] > 0 and 0 <= mlm["mlm/accuracy"] <= 1
    last_eval = [r["eval/loss"] for r in records if "eval/loss" in r][-1]
    assert abs(mlm["mlm/loss"] - last_eval) < 0.5  # other batches and masks, the same model and split


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


def test_demo_runs_end_to_end_on_a_small_corpus(corpus, tmp_path, capsys):
    out = tmp_path / "demo"
    overrides = [item for item in TINY if not item.startswith("system.log_sinks")]
    code = main(["demo", "--corpus", str(corpus), "--out", str(out), "--no-probe", *overrides, "budget.steps=3"])
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 3 and report["status"] == "completed"
    assert set(report["model"]) >= {"loss", "accuracy", "perplexity"} and 0 <= report["unigram"]["accuracy"] <= 1
    assert code == (0 if report["model"]["accuracy"] > report["unigram"]["accuracy"] else 1)
    assert "unigram baseline" in capsys.readouterr().out


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
