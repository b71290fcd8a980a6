"""A small NeoBERT written to disk the way users get one: a model folder, then `export_model`."""

from pathlib import Path

import torch

from helpers.model import small_config
from neobert import NeoBERTForMaskedLM, load_tokenizer
from neobert.export.folder import export_model


def exported_model(folder: Path, prompts: dict[str, str] | None = None, seed: int = 0, pooling: str = "mean") -> Path:
    torch.manual_seed(seed)
    raw = folder / "raw"
    NeoBERTForMaskedLM(small_config()).save_pretrained(raw)
    load_tokenizer().save_pretrained(raw)
    return export_model(raw, folder / "exported", pooling=pooling, prompts=prompts)
