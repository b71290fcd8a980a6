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
