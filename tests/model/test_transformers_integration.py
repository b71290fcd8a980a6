"""`import neobert` makes every Auto class and the fill-mask, feature-extraction, text- and token-classification
pipelines work."""

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    pipeline,
)

import neobert
from helpers.model import random_ids, small_config
from neobert import (
    NeoBERTForMaskedLM,
    NeoBERTForSequenceClassification,
    NeoBERTForTokenClassification,
    NeoBERTModel,
)


@pytest.fixture
def saved(tmp_path, tokenizer):
    model = NeoBERTForMaskedLM(small_config()).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return tmp_path, model


@pytest.mark.parametrize(
    "auto_class, expected",
    [
        (AutoModel, NeoBERTModel),
        (AutoModelForMaskedLM, NeoBERTForMaskedLM),
        (AutoModelForSequenceClassification, NeoBERTForSequenceClassification),
        (AutoModelForTokenClassification, NeoBERTForTokenClassification),
    ],
)
def test_auto_classes_load_our_classes(saved, auto_class, expected):
    folder, original = saved
    loaded = auto_class.from_pretrained(folder)
    assert type(loaded) is expected
    backbone = loaded if isinstance(loaded, NeoBERTModel) else loaded.model
    assert torch.equal(backbone.encoder.weight, original.model.encoder.weight)
    assert isinstance(AutoConfig.from_pretrained(folder), neobert.NeoBERTConfig)


def test_released_class_names_are_aliases():
    assert neobert.NeoBERTLMHead is NeoBERTForMaskedLM and neobert.NeoBERT is NeoBERTModel


def test_attention_backend_is_chosen_at_load_and_run_time(saved):
    folder, _ = saved
    model = AutoModelForMaskedLM.from_pretrained(folder, attn_implementation="eager").eval()
    assert model.config._attn_implementation == "eager"
    ids = random_ids(1, 6)
    with torch.no_grad():
        eager = model(input_ids=ids).logits
        model.set_attn_implementation("sdpa")
        assert model.config._attn_implementation == "sdpa"
        torch.testing.assert_close(model(input_ids=ids).logits, eager, atol=1e-5, rtol=1e-5)


def test_fill_mask_pipeline(saved, tokenizer):
    folder, model = saved
    fill = pipeline("fill-mask", model=str(folder))
    predictions = fill("the capital of france is [MASK].", top_k=3)
    assert len(predictions) == 3
    ids = tokenizer("the capital of france is [MASK].", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits[0, ids["input_ids"][0].tolist().index(tokenizer.mask_token_id)]
    assert [p["token"] for p in predictions] == logits.topk(3).indices.tolist()


def test_feature_extraction_pipeline(saved, tokenizer):
    folder, model = saved
    extract = pipeline("feature-extraction", model=str(folder), framework="pt")
    features = torch.tensor(extract("hello world"))
    ids = tokenizer("hello world", return_tensors="pt")
    with torch.no_grad():
        expected = model.model(**ids).last_hidden_state
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)


def _saved_head(folder, tokenizer, head_class):
    model = head_class(small_config(num_labels=3, id2label={0: "A", 1: "B", 2: "C"})).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def test_text_classification_pipeline(tmp_path, tokenizer):
    model = _saved_head(tmp_path, tokenizer, NeoBERTForSequenceClassification)
    classify = pipeline("text-classification", model=str(tmp_path), top_k=None)
    scores = {row["label"]: row["score"] for row in classify(["a short review of a film"])[0]}
    with torch.no_grad():
        expected = model(**tokenizer("a short review of a film", return_tensors="pt")).logits[0].softmax(-1)
    torch.testing.assert_close(torch.tensor([scores[label] for label in "ABC"]), expected, atol=1e-5, rtol=1e-5)


def test_token_classification_pipeline(tmp_path, tokenizer):
    model = _saved_head(tmp_path, tokenizer, NeoBERTForTokenClassification)
    tag = pipeline("token-classification", model=str(tmp_path), aggregation_strategy="none", ignore_labels=[])
    text = "paris is in france"
    rows = tag(text)
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        probabilities = model(**ids).logits[0].softmax(-1)
    words = ids["input_ids"][0, 1:-1]  # [CLS] and [SEP] are special tokens the pipeline leaves out
    assert [row["word"] for row in rows] == tokenizer.convert_ids_to_tokens(words)
    best = probabilities[1:-1].max(-1)
    assert [row["entity"] for row in rows] == ["ABC"[i] for i in best.indices.tolist()]
    torch.testing.assert_close(torch.tensor([row["score"] for row in rows]), best.values, atol=1e-5, rtol=1e-5)
