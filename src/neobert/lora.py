"""LoRA on NeoBERT with PEFT (the `[hf]` extra): `get_peft_model(model, lora_config("SEQ_CLS"))`.

PEFT knows in-tree models' linear layers by model type; NeoBERT's are not in its table, so a bare
`LoraConfig()` finds nothing to adapt. `lora_config` names them, and for a task head also the head's own
layers, which start untrained and so must be trained and saved beside the adapters: reloading the adapter
onto a fresh head would otherwise meet a newly initialised `dense` / `classifier`.
"""

from __future__ import annotations

from typing import Any

# The attention input/output and SwiGLU projections of every block (the GELU ablation has no w12 / w3;
# PEFT then adapts the attention alone).
LORA_TARGET_MODULES = ("qkv", "wo", "w12", "w3")
# The layers each head adds on the encoder (NeoBERTForSequenceClassification, ...ForTokenClassification).
HEAD_MODULES = {"SEQ_CLS": ("dense", "classifier"), "TOKEN_CLS": ("classifier",)}
TASK_TYPES = (None, "SEQ_CLS", "TOKEN_CLS", "FEATURE_EXTRACTION")


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
