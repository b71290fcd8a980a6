"""Registration with transformers' Auto classes, so `from_pretrained` needs no `trust_remote_code`, with PEFT's
default LoRA targets, and the writer of self-contained folders (`save_pretrained(..., self_contained=True)`)."""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from neobert.config import NeoBERTConfig
from neobert.lora import register_with_peft
from neobert.model.encoder import NeoBERTModel, NeoBERTPreTrainedModel
from neobert.model.heads import (
    NeoBERTForMaskedLM,
    NeoBERTForSequenceClassification,
    NeoBERTForTokenClassification,
)
from neobert.remote_code import write_remote_code

_AUTO_CLASSES = (
    (AutoModel, NeoBERTModel),
    (AutoModelForMaskedLM, NeoBERTForMaskedLM),
    (AutoModelForSequenceClassification, NeoBERTForSequenceClassification),
    (AutoModelForTokenClassification, NeoBERTForTokenClassification),
)


def register() -> None:
    """Idempotent: safe to call from every import of `neobert`."""
    # A staticmethod, so that `self.code_writer(...)` does not pass the model along.
    NeoBERTPreTrainedModel.code_writer = staticmethod(write_remote_code)
    AutoConfig.register(NeoBERTConfig.model_type, NeoBERTConfig, exist_ok=True)
    for auto_class, model_class in _AUTO_CLASSES:
        auto_class.register(NeoBERTConfig, model_class, exist_ok=True)
    register_with_peft()
