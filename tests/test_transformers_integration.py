"""`import neobert` makes every Auto class and the fill-mask / feature-extraction pipelines work."""

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
from conftest import random_ids, small_config
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
