"""NeoBERT: the model, its pre-training, fine-tuning and evaluation.

Importing the package registers model type "neobert" with transformers' Auto classes. The public names
below load on first use (PEP 562), so that `import neobert` and the command line's `--help` do not pay for
torch and transformers: the registration happens at once when transformers is already imported, else as
soon as transformers is (or when a name of the model is first used).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute in it)
_LAZY: dict[str, tuple[str, str]] = {
    "PRESETS": ("neobert.config", "PRESETS"),
    "NeoBERTConfig": ("neobert.config", "NeoBERTConfig"),
    "encode": ("neobert.embed", "encode"),
    "load_embedder": ("neobert.embed", "load_embedder"),
    "NeoBERTForMaskedLM": ("neobert.model", "NeoBERTForMaskedLM"),
    "NeoBERTForSequenceClassification": ("neobert.model", "NeoBERTForSequenceClassification"),
    "NeoBERTForTokenClassification": ("neobert.model", "NeoBERTForTokenClassification"),
    "NeoBERTModel": ("neobert.model", "NeoBERTModel"),
    "NeoBERTPreTrainedModel": ("neobert.model", "NeoBERTPreTrainedModel"),
    "load_tokenizer": ("neobert.tokenizer", "load_tokenizer"),
    # The released remote code's class names, for users coming from `trust_remote_code`.
    "NeoBERT": ("neobert.model", "NeoBERTModel"),
    "NeoBERTLMHead": ("neobert.model", "NeoBERTForMaskedLM"),
}

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

if TYPE_CHECKING:
    from neobert.config import PRESETS, NeoBERTConfig
    from neobert.embed import encode, load_embedder
    from neobert.model import (
        NeoBERTForMaskedLM,
        NeoBERTForSequenceClassification,
        NeoBERTForTokenClassification,
        NeoBERTModel,
        NeoBERTPreTrainedModel,
    )
    from neobert.model import NeoBERTForMaskedLM as NeoBERTLMHead
    from neobert.model import NeoBERTModel as NeoBERT
    from neobert.tokenizer import load_tokenizer


def register_auto_classes() -> None:
    """Registers "neobert" with transformers' Auto classes (idempotent; imports torch and the model)."""
    importlib.import_module("neobert.model.hf").register()


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'neobert' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module_name), attribute)
    register_auto_classes()
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def _importing_inside_neobert() -> bool:
    """Whether a module of this package is half-way through its own import (the very check CPython's import
    makes): registering then would import that module again, half-built."""
    return any(
        getattr(getattr(module, "__spec__", None), "_initializing", False)
        for name, module in list(sys.modules.items())
        if name.startswith("neobert.")
    )


class _RegisterAfterTransformers:
    """A meta path finder that waits for `import transformers`, lets it finish, then registers; it leaves
    sys.meta_path at once.
    When a module of neobert brought transformers in, `neobert.model` registers as it finishes loading."""

    def find_spec(self, name, path=None, target=None):
        if name != "transformers":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        load = spec.loader.exec_module

        def load_then_register(module):
            load(module)
            if not _importing_inside_neobert():
                register_auto_classes()

        spec.loader.exec_module = load_then_register
        return spec


if "transformers" in sys.modules:
    register_auto_classes()
elif not any(isinstance(finder, _RegisterAfterTransformers) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterTransformers())
