"""Registration with transformers' Auto classes, so `from_pretrained` needs no `trust_remote_code`, with PEFT's
default LoRA targets, and the writer of self-contained folders (`save_pretrained(..., self_contained=True)`).
Every class of the head registry (`heads.HEADS`) is registered with the Auto class its row names."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

import transformers
from transformers import AutoConfig

from neobert.config import NeoBERTConfig
from neobert.model.encoder import NeoBERTPreTrainedModel
from neobert.model.heads import HEADS
from neobert.model.remote_code import write_remote_code

# The attention input/output and SwiGLU projections of every block (the GELU ablation has no w12 / w3;
# PEFT then adapts the attention alone): PEFT's default LoRA targets for model type "neobert".
LORA_TARGET_MODULES = ("qkv", "wo", "w12", "w3")
# The PEFT module holding its table of default LoRA target modules by model type.
PEFT_TABLES = "peft.utils.constants"


def auto_classes() -> dict[str, str]:
    """transformers Auto class name -> the name of the class it loads, from the head registry."""
    return {head.auto_class: name for name, head in HEADS.items()}


def write_self_contained(folder, config) -> None:
    """The model code written into `folder` as remote code, its `auto_map` naming every registered class."""
    write_remote_code(folder, config, auto_classes())


def register() -> None:
    """Idempotent: safe to call from every import of `neobert`."""
    # A staticmethod, so that `self.code_writer(...)` does not pass the model along.
    NeoBERTPreTrainedModel.code_writer = staticmethod(write_self_contained)
    AutoConfig.register(NeoBERTConfig.model_type, NeoBERTConfig, exist_ok=True)
    for head in HEADS.values():
        getattr(transformers, head.auto_class).register(NeoBERTConfig, head.model_class, exist_ok=True)
    register_with_peft()


def register_with_peft() -> None:
    """Enters NeoBERT in PEFT's default LoRA targets now if PEFT is imported, else when it is (idempotent).
    PEFT stays unimported until the user imports it: it takes seconds."""
    tables = sys.modules.get(PEFT_TABLES)
    if tables is not None:
        _enter(tables)
    elif not any(isinstance(finder, _WhenPeftIsImported) for finder in sys.meta_path):
        sys.meta_path.insert(0, _WhenPeftIsImported())


def _enter(tables) -> None:
    mapping = tables.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    mapping.setdefault(NeoBERTConfig.model_type, list(LORA_TARGET_MODULES))


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
