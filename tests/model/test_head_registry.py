"""The head registry (`neobert.model.heads.HEADS`) is the one declaration of the model classes: the Auto
classes' registration, the `auto_map` of self-contained folders, LoRA's task types and saved layers, the
layers initialised as a classifier and the public names of `neobert` and `neobert.model` all follow it. A
throwaway head entered in it (and taken out again) shows up in every one of them."""

import json

import pytest
import torch
import transformers
from torch import nn
from transformers import AutoModelForQuestionAnswering

import neobert
import neobert.model
from helpers.model import random_ids, small_config
from neobert.export import lora
from neobert.model import hf
from neobert.model.encoder import NeoBERTModel, NeoBERTPreTrainedModel
from neobert.model.heads import HEADS, Head

pytestmark = pytest.mark.usefixtures("one_thread")

# What the registry held when this test was written: the folders written before it carried this auto_map.
RELEASED_AUTO_MAP = {
    "AutoConfig": "configuration_neobert.NeoBERTConfig",
    "AutoModel": "modeling_neobert.NeoBERTModel",
    "AutoModelForMaskedLM": "modeling_neobert.NeoBERTForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_neobert.NeoBERTForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_neobert.NeoBERTForTokenClassification",
}
THROWAWAY_AUTO_CLASS = "AutoModelForQuestionAnswering"
THROWAWAY_TASK = "QUESTION_ANS"


class NeoBERTForThrowawayScoring(NeoBERTPreTrainedModel):
    """A head this package does not have: one score per token from a new layer named unlike any other head's."""

    head_layers = ("scorer",)

    def __init__(self, config):
        super().__init__(config)
        self.model = NeoBERTModel(config)
        self.scorer = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return self.scorer(hidden)


THROWAWAY = Head(NeoBERTForThrowawayScoring, THROWAWAY_AUTO_CLASS, THROWAWAY_TASK)


def derived_tables() -> dict:
    return dict(auto_classes=hf.auto_classes(), task_types=lora.task_types(), head_modules=lora.head_modules())


@pytest.fixture
def enter_throwaway(monkeypatch):
    """Enters the throwaway head in the registry; the registry and transformers' table are put back after."""
    mapping = getattr(transformers, THROWAWAY_AUTO_CLASS)._model_mapping
    monkeypatch.setattr(mapping, "_extra_content", dict(mapping._extra_content))
    return lambda: monkeypatch.setitem(HEADS, NeoBERTForThrowawayScoring.__name__, THROWAWAY)


def test_the_registry_holds_the_released_classes_under_their_names():
    assert {auto: f"modeling_neobert.{name}" for auto, name in hf.auto_classes().items()} == {
        key: value for key, value in RELEASED_AUTO_MAP.items() if key != "AutoConfig"
    }
    assert all(name == head.model_class.__name__ and name.startswith("NeoBERT") for name, head in HEADS.items())
    assert lora.head_modules() == {
        "FEATURE_EXTRACTION": (),
        "SEQ_CLS": ("pre_classifier", "classifier"),
        "TOKEN_CLS": ("classifier",),
    }


def test_every_registered_class_is_a_public_name():
    for name, head in HEADS.items():
        assert getattr(neobert.model, name) is head.model_class
        assert getattr(neobert, name) is head.model_class
    assert set(HEADS) | {"NeoBERTPreTrainedModel"} == set(neobert.model.__all__)
    assert set(neobert.model.__all__) <= set(neobert.__all__) and set(neobert.model.__all__) <= set(dir(neobert))


def test_a_self_contained_folder_maps_every_registered_class(tmp_path):
    neobert.NeoBERTModel(small_config()).save_pretrained(tmp_path, self_contained=True)
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"] == RELEASED_AUTO_MAP


def test_a_new_head_reaches_every_derived_table(enter_throwaway, tmp_path):
    name = NeoBERTForThrowawayScoring.__name__
    config = small_config()
    before = derived_tables()
    assert THROWAWAY_AUTO_CLASS not in before["auto_classes"] and THROWAWAY_TASK not in before["task_types"]
    with pytest.raises(ValueError, match="Unrecognized configuration class"):
        AutoModelForQuestionAnswering.from_config(config)
    enter_throwaway()
    # The Auto classes: registration reads the registry each time it runs.
    hf.register()
    assert type(AutoModelForQuestionAnswering.from_config(config)) is NeoBERTForThrowawayScoring
    assert hf.auto_classes() == {**before["auto_classes"], THROWAWAY_AUTO_CLASS: name}
    # The auto_map of exported remote code.
    neobert.NeoBERTModel(config).save_pretrained(tmp_path, self_contained=True)
    written = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert written == {**RELEASED_AUTO_MAP, THROWAWAY_AUTO_CLASS: f"modeling_neobert.{name}"}
    # LoRA: the task type is accepted and the head's own layer is saved beside the adapter.
    assert lora.head_modules() == {**before["head_modules"], THROWAWAY_TASK: ("scorer",)}
    assert lora.task_types() == (*before["task_types"], THROWAWAY_TASK)
    pytest.importorskip("peft")
    assert lora.lora_config(THROWAWAY_TASK).modules_to_save == ["scorer"]


def test_a_heads_own_layers_start_as_a_classifier():
    """`head_layers` chooses the classifier's initialisation: with its range 0 the new layer is all zeros,
    while the encoder's matrices are drawn as usual."""
    model = NeoBERTForThrowawayScoring(small_config(classifier_init_range=0.0))
    assert torch.count_nonzero(model.scorer.weight) == 0
    assert torch.count_nonzero(model.model.transformer_encoder[0].qkv.weight) > 0
    assert model(random_ids(1, 4)).shape == (1, 4, 2)


def test_the_derived_tables_forget_the_head_once_it_is_taken_out(enter_throwaway, monkeypatch):
    before = derived_tables()
    enter_throwaway()
    assert derived_tables() != before
    monkeypatch.delitem(HEADS, NeoBERTForThrowawayScoring.__name__)
    assert derived_tables() == before
    pytest.importorskip("peft")
    with pytest.raises(ValueError, match=f"unknown task_type '{THROWAWAY_TASK}'"):
        lora.lora_config(THROWAWAY_TASK)
