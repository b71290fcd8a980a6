"""transformers' own common model and config tests (`ModelTesterMixin`, `ConfigTester`) on the four NeoBERT
classes, from the installed transformers version's sources (see `transformers_suite`).

Every test the mixin runs on CPU passes; the skipped ones are skipped by the mixin's own conditions (an
accelerator, deepspeed, flash attention, kernels, composite or generative models, MoE, RoPE scaling), and
those marked slow are left to `-m slow` with RUN_SLOW=1, as in transformers. The torch.export tests of
`ExportTesterMixin` do not run: their module is not in the source distribution.

transformers' pipeline tests are not run from here: their classes (`tests/pipelines/`) and the tiny-model
table `test_pipeline_mixin.py` opens on import are not in the source distribution; the four pipelines are
tested on a saved tiny model in test_transformers_integration.py instead.
"""

from __future__ import annotations

import sys
import unittest

import pytest
import torch
from transformers.models.auto import modeling_auto

import neobert  # noqa: F401  (registers the model type)
from helpers.transformers_suite import ensure_suite
from neobert.config import NeoBERTConfig
from neobert.model import (
    NeoBERTForMaskedLM,
    NeoBERTForSequenceClassification,
    NeoBERTForTokenClassification,
    NeoBERTModel,
)

try:
    sys.path.insert(0, str(ensure_suite()))
except RuntimeError as error:  # no route to the package index; CI has one
    pytest.skip(f"transformers' test sources unavailable: {error}", allow_module_level=True)

from hf_tests.test_configuration_common import ConfigTester  # noqa: E402
from hf_tests.test_modeling_common import ModelTesterMixin, ids_tensor, random_attention_mask  # noqa: E402

# The rows in-tree models add to transformers' name tables; the mixin picks inputs and labels from them.
NAME_TABLE_ROWS = {
    "MODEL_MAPPING_NAMES": "NeoBERTModel",
    "MODEL_FOR_MASKED_LM_MAPPING_NAMES": "NeoBERTForMaskedLM",
    "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES": "NeoBERTForSequenceClassification",
    "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES": "NeoBERTForTokenClassification",
}


@pytest.fixture(autouse=True, scope="module")
def neobert_in_name_tables():
    for table, name in NAME_TABLE_ROWS.items():
        getattr(modeling_auto, table)[NeoBERTConfig.model_type] = name
    yield
    for table in NAME_TABLE_ROWS:
        getattr(modeling_auto, table).pop(NeoBERTConfig.model_type, None)


class NeoBERTModelTester:
    """A tiny NeoBERT and a batch of random inputs, in the shape transformers' mixin asks for."""

    def __init__(self, parent, batch_size=3, seq_length=7, is_training=True):
        self.parent = parent
        self.batch_size, self.seq_length, self.is_training = batch_size, seq_length, is_training
        self.vocab_size, self.hidden_size = 99, 32
        self.num_hidden_layers, self.num_attention_heads = 2, 4
        self.num_labels = 3

    def get_config(self) -> NeoBERTConfig:
        return NeoBERTConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=64,
            max_length=64,
            num_labels=self.num_labels,
        )

    def prepare_config_and_inputs_for_common(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        attention_mask = random_attention_mask([self.batch_size, self.seq_length])
        return self.get_config(), {"input_ids": input_ids, "attention_mask": attention_mask}


class NeoBERTCommonTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (
        NeoBERTModel,
        NeoBERTForMaskedLM,
        NeoBERTForSequenceClassification,
        NeoBERTForTokenClassification,
    )

    def setUp(self):
        self.model_tester = NeoBERTModelTester(self)
        self.config_tester = ConfigTester(self, config_class=NeoBERTConfig, hidden_size=32, num_attention_heads=4)
        torch.manual_seed(0)

    def test_config(self):
        self.config_tester.run_common_tests()
