"""Pooling token states into one vector per text: the pooling names, their one implementation, and the
pooling a model folder stores (its sentence-transformers Pooling module).

`neobert.embed.encode` pools with these, and so do contrastive training, the offline suite's frozen-encoder
probe and retrieval, `neobert export`'s check of `--pooling` and the benchmarks. (The ONNX graph keeps its
own traceable form, `neobert.export.onnx_export.pool_in_graph`.) A module of its own, beside `neobert.embed`,
so that `neobert.export.folder` can name the poolings without importing the encoder and its backends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

POOLINGS = ("mean", "cls", "max")
ST_MODULES = "modules.json"
# Older sentence-transformers write one flag per mode instead of `pooling_mode`.
_ST_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
}


def pool_packed(hidden: torch.Tensor, lengths: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool (total tokens, dim) states of documents laid end to end with the given lengths."""
    if pooling == "cls":
        return hidden[torch.cumsum(lengths, 0) - lengths]
    if pooling == "max":
        return torch.stack([piece.amax(0) for piece in hidden.split(lengths.tolist())])
    doc = torch.repeat_interleave(torch.arange(len(lengths), device=hidden.device), lengths)
    sums = hidden.new_zeros(len(lengths), hidden.shape[-1]).index_add_(0, doc, hidden)
    return sums / lengths[:, None].to(hidden.dtype)


def pool_padded(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool (batch, length, dim) states over the positions where `mask` is 1."""
    if pooling == "cls":
        return hidden[:, 0]
    keep = mask.bool()[..., None]
    if pooling == "mean":
        return (hidden * keep).sum(1) / keep.sum(1).to(hidden.dtype)
    return hidden.masked_fill(~keep, float("-inf")).amax(1)


def pooled_packed(model: Any, rows: list[list[int]], pooling: str, device: torch.device) -> torch.Tensor:
    """Pooled float32 vectors (len(rows), dim) of token-id rows run packed: end to end in one row, delimited
    by `cu_seqlens` (gradients flow when the caller is not under `no_grad`: contrastive training runs it)."""
    lengths = torch.tensor([len(tokens) for tokens in rows], device=device)
    row = torch.tensor([t for tokens in rows for t in tokens], device=device)[None]
    cu_seqlens = torch.nn.functional.pad(torch.cumsum(lengths, 0), (1, 0)).to(torch.int32)
    hidden = model(input_ids=row, cu_seqlens=cu_seqlens, max_seqlen=int(lengths.max())).last_hidden_state
    return pool_packed(hidden[0].float(), lengths, pooling)


def stored_pooling(path: str | Path) -> str | None:
    """The pooling mode of the sentence-transformers Pooling module in a model folder, or None without one.

    Modes `encode` has no implementation of (e.g. "weightedmean", or several flags at once) are returned as
    they are, so that `encode` can name them."""
    path = Path(path)
    if not (path / ST_MODULES).is_file():
        return None
    modules = json.loads((path / ST_MODULES).read_text())
    for module in modules:
        if str(module.get("type", "")).rsplit(".", 1)[-1] != "Pooling":
            continue
        settings_file = path / module.get("path", "") / "config.json"
        if not settings_file.is_file():
            raise FileNotFoundError(f"{path / ST_MODULES} names a Pooling module, but {settings_file} is missing")
        settings = json.loads(settings_file.read_text())
        if "pooling_mode" in settings:
            return str(settings["pooling_mode"])
        flags = [key for key, on in settings.items() if key.startswith("pooling_mode_") and on is True]
        return "+".join(_ST_POOLING_FLAGS.get(flag, flag.removeprefix("pooling_mode_")) for flag in flags) or None
    return None
