"""Registration with transformers' Auto classes, so `from_pretrained` needs no `trust_remote_code`."""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from neobert.config import NeoBERTConfig
from neobert.model.encoder import NeoBERTModel
from neobert.model.heads import (
    NeoBERTForMaskedLM,
    NeoBERTForSequenceClassification,
    NeoBERTForTokenClassification,
)

_AUTO_CLASSES = (
    (AutoModel, NeoBERTModel),
    (AutoModelForMaskedLM, NeoBERTForMaskedLM),
    (AutoModelForSequenceClassification, NeoBERTForSequenceClassification),
    (AutoModelForTokenClassification, NeoBERTForTokenClassification),
)


def register() -> None:
    """Idempotent: safe to call from every import of `neobert`."""
    AutoConfig.register(NeoBERTConfig.model_type, NeoBERTConfig, exist_ok=True)
    for auto_class, model_class in _AUTO_CLASSES:
        auto_class.register(NeoBERTConfig, model_class, exist_ok=True)
