"""`neobert.lora`, the documented path of `lora_config` (README, "Fine-tuning and evaluation"); the code is
neobert.export.lora."""

from neobert.export.lora import LORA_TARGET_MODULES, head_modules, lora_config, task_types

__all__ = ["LORA_TARGET_MODULES", "head_modules", "lora_config", "task_types"]
