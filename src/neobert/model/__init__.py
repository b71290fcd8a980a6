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
from neobert import register_auto_classes as _register  # noqa: E402

_register()
