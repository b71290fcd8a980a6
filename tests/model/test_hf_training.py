"""The `[hf]` extra: a `transformers.Trainer` fine-tuning run (train, save, reload into a pipeline) and LoRA
through PEFT, with `neobert.lora.lora_config` or a plain `peft.LoraConfig` (train, save the adapter, reload
it, same outputs)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from helpers.model import small_config
from neobert import (
    NeoBERTForMaskedLM,
    NeoBERTForSequenceClassification,
    NeoBERTForTokenClassification,
    NeoBERTModel,
)
from neobert.lora import LORA_TARGET_MODULES, lora_config

pytest.importorskip("accelerate", reason="Trainer needs accelerate: pip install 'neobert[hf]'")
peft = pytest.importorskip("peft", reason="LoRA needs PEFT: pip install 'neobert[hf]'")

# Two classes told apart by their words, so a few steps visibly lower the loss.
TEXTS = ["good fine great nice", "bad awful poor sad", "great good nice", "poor bad sad awful"] * 4
LABELS = [0, 1, 0, 1] * 4


@pytest.fixture
def backbone(tmp_path, tokenizer):
    """A pre-trained-style folder (masked LM and tokenizer) that task heads start from."""
    folder = tmp_path / "backbone"
    NeoBERTForMaskedLM(small_config()).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _batch(tokenizer):
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    return {**batch, "labels": torch.tensor(LABELS)}


def test_trainer_fine_tunes_saves_and_the_pipeline_reloads(backbone, tokenizer, tmp_path):
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, pipeline

    model = NeoBERTForSequenceClassification.from_pretrained(backbone, num_labels=2)
    rows = [{**tokenizer(text), "labels": label} for text, label in zip(TEXTS, LABELS, strict=True)]
    arguments = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=12,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=rows, data_collator=DataCollatorWithPadding(tokenizer))
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 12 and max(losses[-3:]) < min(losses[:3])
    out = tmp_path / "classifier"
    trainer.save_model(str(out))
    tokenizer.save_pretrained(out)

    classify = pipeline("text-classification", model=str(out), top_k=None)
    scores = {row["label"]: row["score"] for row in classify([TEXTS[0]])[0]}
    trained = trainer.model.eval()
    with torch.no_grad():
        expected = trained(**tokenizer(TEXTS[0], return_tensors="pt")).logits[0].softmax(-1)
    got = torch.tensor([scores[trained.config.id2label[i]] for i in range(2)])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_lora_trains_saves_and_reloads_to_the_same_outputs(backbone, tokenizer, tmp_path):
    torch.manual_seed(0)
    model = NeoBERTForSequenceClassification.from_pretrained(backbone, num_labels=2)
    adapted = peft.get_peft_model(model, lora_config("SEQ_CLS"))
    trainable = [name for name, p in adapted.named_parameters() if p.requires_grad]
    adapted_layers = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trainable if ".lora_" in name}
    assert adapted_layers == set(LORA_TARGET_MODULES)
    assert all(".lora_" in name or ".modules_to_save." in name for name in trainable)
    assert any(".pre_classifier.modules_to_save." in name for name in trainable)  # the untrained head too

    batch = _batch(tokenizer)
    optimizer = torch.optim.AdamW([p for p in adapted.parameters() if p.requires_grad], lr=5e-3)
    adapted.train()
    losses = []
    for _ in range(10):
        loss = adapted(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert max(losses[-3:]) < min(losses[:3])
    adapted.eval()
    with torch.no_grad():
        expected = adapted(**batch).logits
    adapted.save_pretrained(tmp_path / "adapter")

    torch.manual_seed(1)  # the fresh head below starts from other weights than the trained one did
    fresh = NeoBERTForSequenceClassification.from_pretrained(backbone, num_labels=2).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(**batch).logits, expected, atol=1e-3)
    reloaded = peft.PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, expected, atol=1e-5, rtol=1e-5)
        merged = reloaded.merge_and_unload()
        torch.testing.assert_close(merged(**batch).logits, expected, atol=1e-5, rtol=1e-5)


def test_lora_config_names_bad_task_types():
    with pytest.raises(ValueError, match="unknown task_type 'CAUSAL_LM'"):
        lora_config("CAUSAL_LM")


HEADS = {"SEQ_CLS": NeoBERTForSequenceClassification, "TOKEN_CLS": NeoBERTForTokenClassification}


def adapted_and_saved(model, config) -> tuple[set[str], set[str]]:
    """(the layers LoRA adapts, the modules saved whole) of `model` under `config`."""
    adapted = peft.get_peft_model(model, config)
    trainable = [name for name, p in adapted.named_parameters() if p.requires_grad]
    assert all(".lora_" in name or ".modules_to_save." in name for name in trainable)
    lora_layers = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trainable if ".lora_" in name}
    saved = {name.split(".modules_to_save.")[0].rsplit(".", 1)[-1] for name in trainable if ".modules_to_save." in name}
    return lora_layers, saved


@pytest.mark.parametrize(
    "task, model_class, head",
    [
        ("SEQ_CLS", NeoBERTForSequenceClassification, {"pre_classifier", "classifier"}),
        ("TOKEN_CLS", NeoBERTForTokenClassification, {"classifier"}),
        ("FEATURE_EXTRACTION", NeoBERTModel, set()),
    ],
)
def test_a_plain_lora_config_adapts_neobert_and_saves_the_whole_head(task, model_class, head):
    """No target modules named: PEFT takes NeoBERT's from its table; every head layer is saved whole."""
    lora_layers, saved = adapted_and_saved(model_class(small_config(num_labels=3)), peft.LoraConfig(task_type=task))
    assert lora_layers == set(LORA_TARGET_MODULES)
    assert saved == head


def test_peft_imported_after_neobert_still_knows_it():
    code = (
        "import neobert, peft\n"
        "from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as table\n"
        "print(table['neobert'])"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(list(LORA_TARGET_MODULES))


@pytest.mark.parametrize(
    "task, targets",
    [("SEQ_CLS", None), ("SEQ_CLS", list(LORA_TARGET_MODULES)), ("TOKEN_CLS", None)],
    ids=["sequence, plain config", "sequence, layers listed by hand", "token, plain config"],
)
def test_one_lora_step_saves_and_reloads_to_the_same_outputs(backbone, tokenizer, tmp_path, task, targets):
    """The issue's trap: a config naming only the obvious layers must not leave the head's hidden layer at a
    random initialisation that the adapter does not carry."""
    torch.manual_seed(0)
    model = HEADS[task].from_pretrained(backbone, num_labels=2)
    adapted = peft.get_peft_model(model, peft.LoraConfig(task_type=task, target_modules=targets))
    batch = _batch(tokenizer)
    if task == "TOKEN_CLS":
        batch["labels"] = batch["attention_mask"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW([p for p in adapted.parameters() if p.requires_grad], lr=5e-3)
    adapted.train()
    adapted(**batch).loss.backward()
    optimizer.step()
    adapted.eval()
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with torch.no_grad():
        expected = adapted(**inputs).logits
    adapted.save_pretrained(tmp_path / "adapter")

    torch.manual_seed(1)  # the fresh head starts from other weights than the trained one did
    fresh = HEADS[task].from_pretrained(backbone, num_labels=2).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(**inputs).logits, expected, atol=1e-3)
        reloaded = peft.PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
        torch.testing.assert_close(reloaded(**inputs).logits, expected, atol=1e-6, rtol=0)


def test_an_adapter_saved_when_the_head_layer_was_called_dense_still_loads(backbone, tmp_path):
    """Adapters from `lora_config("SEQ_CLS")` before the rename store the layer as `dense`."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    adapted = peft.get_peft_model(
        NeoBERTForSequenceClassification.from_pretrained(backbone, num_labels=2), lora_config("SEQ_CLS")
    )
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if ".modules_to_save." in name or "lora_B" in name:
                parameter.add_(0.1)  # away from the fresh model, so a layer not loaded shows
    ids = torch.randint(1000, 30000, (2, 6))
    adapted.eval()
    with torch.no_grad():
        expected = adapted(input_ids=ids).logits
    folder = tmp_path / "adapter"
    adapted.save_pretrained(folder)
    weights = load_file(folder / "adapter_model.safetensors")
    save_file(
        {key.replace(".pre_classifier.", ".dense."): value for key, value in weights.items()},
        folder / "adapter_model.safetensors",
    )
    settings = json.loads((folder / "adapter_config.json").read_text())
    settings["modules_to_save"] = ["dense", "classifier"]
    (folder / "adapter_config.json").write_text(json.dumps(settings))

    torch.manual_seed(1)
    fresh = NeoBERTForSequenceClassification.from_pretrained(backbone, num_labels=2)
    reloaded = peft.PeftModel.from_pretrained(fresh, folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, atol=1e-6, rtol=0)
