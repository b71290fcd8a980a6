"""NeoBERT: the model, its pre-training, fine-tuning and evaluation.

Importing the package registers model type "neobert" with transformers' Auto classes.
"""

from neobert.config import PRESETS, NeoBERTConfig
from neobert.embed import encode, load_embedder
from neobert.model import (
    NeoBERTForMaskedLM,
    NeoBERTForSequenceClassification,
    NeoBERTForTokenClassification,
    NeoBERTModel,
    NeoBERTPreTrainedModel,
)
from neobert.model.hf import register as _register
from neobert.tokenizer import load_tokenizer

_register()

# The released remote code's class names, for users coming from `trust_remote_code`.
NeoBERT = NeoBERTModel
NeoBERTLMHead = NeoBERTForMaskedLM

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "encode",
    "load_embedder",
    "NeoBERT",
    "NeoBERTConfig",
    "NeoBERTForMaskedLM",
    "NeoBERTForSequenceClassification",
    "NeoBERTForTokenClassification",
    "NeoBERTLMHead",
    "NeoBERTModel",
    "NeoBERTPreTrainedModel",
    "load_tokenizer",
]
