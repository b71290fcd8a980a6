"""LoRA on NeoBERT with PEFT (the `[hf]` extra).

After `import neobert`, a plain `peft.LoraConfig(task_type="SEQ_CLS")` (or "TOKEN_CLS", "FEATURE_EXTRACTION")
adapts NeoBERT's layers: model type "neobert" is entered in PEFT's table of default target modules as soon as
PEFT defines it, whichever of the two packages is imported first. The heads' own layers start untrained and
must be trained and saved beside the adapters; their names end in "classifier" (`pre_classifier`,
`classifier`), which PEFT saves by default for these tasks. `lora_config` writes the same choices out.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from typing import Any

# The attention input/output and SwiGLU projections of every block (the GELU ablation has no w12 / w3;
# PEFT then adapts the attention alone).
LORA_TARGET_MODULES = ("qkv", "wo", "w12", "w3")
# The layers each head adds on the encoder (NeoBERTForSequenceClassification, ...ForTokenClassification).
HEAD_MODULES = {"SEQ_CLS": ("pre_classifier", "classifier"), "TOKEN_CLS": ("classifier",)}
TASK_TYPES = (None, "SEQ_CLS", "TOKEN_CLS", "FEATURE_EXTRACTION")
MODEL_TYPE = "neobert"
# The PEFT module holding its table of default LoRA target modules by model type.
PEFT_TABLES = "peft.utils.constants"


def lora_config(
    task_type: str | None = None, r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.0, **overrides: Any
):
    """A `peft.LoraConfig` for NeoBERT. `task_type`: "SEQ_CLS", "TOKEN_CLS", "FEATURE_EXTRACTION" (the bare
    encoder) or None (any model, e.g. the masked LM, whose decoder is pre-trained and stays frozen).
    `overrides` go to LoraConfig as they are (e.g. `target_modules=["qkv"]`)."""
    try:
        from peft import LoraConfig
    except ImportError as error:
        raise ImportError("LoRA needs PEFT: pip install 'neobert[hf]'") from error
    if task_type not in TASK_TYPES:
        raise ValueError(f"unknown task_type {task_type!r}; choose one of {TASK_TYPES}")
    settings = dict(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=list(LORA_TARGET_MODULES),
        modules_to_save=list(HEAD_MODULES.get(task_type, ())) or None,
        task_type=task_type,
    )
    settings.update(overrides)
    return LoraConfig(**settings)


def register_with_peft() -> None:
    """Enters NeoBERT in PEFT's default LoRA targets now if PEFT is imported, else when it is (idempotent).
    PEFT stays unimported until the user imports it: it takes seconds."""
    tables = sys.modules.get(PEFT_TABLES)
    if tables is not None:
        _enter(tables)
    elif not any(isinstance(finder, _WhenPeftIsImported) for finder in sys.meta_path):
        sys.meta_path.insert(0, _WhenPeftIsImported())


def _enter(tables) -> None:
    tables.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.setdefault(MODEL_TYPE, list(LORA_TARGET_MODULES))


class _WhenPeftIsImported(importlib.abc.MetaPathFinder):
    """Finds PEFT's table module with the ordinary finders and enters NeoBERT right after the module runs."""

    def find_spec(self, name, path=None, target=None):
        if name != PEFT_TABLES:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module) -> None:
            run_module(module)
            _enter(module)

        spec.loader.exec_module = exec_module
        return spec
