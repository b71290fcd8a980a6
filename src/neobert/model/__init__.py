from neobert.model.encoder import NeoBERTModel, NeoBERTPreTrainedModel
from neobert.model.heads import (
    NeoBERTForMaskedLM,
    NeoBERTForSequenceClassification,
    NeoBERTForTokenClassification,
)

__all__ = [
    "NeoBERTModel",
    "NeoBERTPreTrainedModel",
    "NeoBERTForMaskedLM",
    "NeoBERTForSequenceClassification",
    "NeoBERTForTokenClassification",
]

# Whoever imports the model classes can load "neobert" folders through the Auto classes.
from neobert.model.hf import register as _register  # noqa: E402

_register()
