"""Pooling token states into one vector per text: the pooling names and their one implementation.

`neobert.embed.encode` pools with these, and so do contrastive training, the offline suite's frozen-encoder
probe and retrieval, `neobert export`'s check of `--pooling` and the benchmarks. (The ONNX graph keeps its
own traceable form, `neobert.export.onnx_export.pool_in_graph`.) A module of its own, beside `neobert.embed`,
so that `neobert.export.folder` can name the poolings without importing the encoder and its backends.
"""

from __future__ import annotations

from typing import Any

import torch

POOLINGS = ("mean", "cls", "max")


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
