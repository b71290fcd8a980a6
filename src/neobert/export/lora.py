"""LoRA on NeoBERT with PEFT (the `[hf]` extra).

After `import neobert`, a plain `peft.LoraConfig(task_type="SEQ_CLS")` (or "TOKEN_CLS", "FEATURE_EXTRACTION")
adapts NeoBERT's layers: model type "neobert" is entered in PEFT's table of default target modules as soon as
PEFT defines it, whichever of the two packages is imported first (model/hf.py). The heads' own layers start
untrained and must be trained and saved beside the adapters; their names end in "classifier"
(`pre_classifier`, `classifier`), which PEFT saves by default for these tasks. `lora_config` writes the same
choices out, read from the head registry (`neobert.model.heads.HEADS`: each class's PEFT task type and its
`head_layers`).
"""

from __future__ import annotations

from typing import Any

from neobert.model.heads import HEADS
from neobert.model.hf import LORA_TARGET_MODULES


def head_modules() -> dict[str, tuple[str, ...]]:
    """PEFT task type -> the layers its model class adds untrained (to be saved with the adapter)."""
    return {head.peft_task: head.model_class.head_layers for head in HEADS.values() if head.peft_task}


def task_types() -> tuple[str | None, ...]:
    """The `task_type`s `lora_config` takes: None (any model) and each registered class's PEFT task type."""
    return (None, *head_modules())


def lora_config(
    task_type: str | None = None, r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.0, **overrides: Any
):
    """A `peft.LoraConfig` for NeoBERT. `task_type`: one of `task_types()`: "SEQ_CLS", "TOKEN_CLS",
    "FEATURE_EXTRACTION" (the bare encoder), or None (any model, e.g. the masked LM, whose decoder is
    pre-trained and stays frozen). `overrides` go to LoraConfig as they are (e.g. `target_modules=["qkv"]`)."""
    try:
        from peft import LoraConfig
    except ImportError as error:
        raise ImportError("LoRA needs PEFT: pip install 'neobert[hf]'") from error
    layers = head_modules()
    if task_type is not None and task_type not in layers:
        raise ValueError(f"unknown task_type {task_type!r}; choose one of {task_types()}")
    settings = dict(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=list(LORA_TARGET_MODULES),
        modules_to_save=list(layers.get(task_type, ())) or None,
        task_type=task_type,
    )
    settings.update(overrides)
    return LoraConfig(**settings)
