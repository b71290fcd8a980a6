"""Turn what users pass (masks of any convention, packed documents) into one checked description.

Everything here runs before the first matrix product, so bad input fails fast with a `ValueError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class AttentionLayout:
    """Which keys each query may see, in one of two forms.

    Padded: `key_mask` (batch, length) is a boolean keep-mask over keys, or None when every key is real.
    Packed: the batch is one row of documents laid end to end, delimited by `cu_seqlens`; a query only
    sees the keys of its own document.
    """

    batch_size: int
    length: int
    key_mask: torch.Tensor | None = None
    cu_seqlens: torch.Tensor | None = None
    seqlens: list[int] | None = None
    max_seqlen: int | None = None
    position_ids: torch.Tensor | None = None
    # Per-forward memo for backend-specific structures (flex block masks, flash unpadding indices).
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def packed(self) -> bool:
        return self.cu_seqlens is not None

    def document_ids(self) -> torch.Tensor:
        """(length,) index of the document each packed token belongs to."""
        if "document_ids" not in self.cache:
            lengths = torch.tensor(self.seqlens, device=self.cu_seqlens.device)
            self.cache["document_ids"] = torch.repeat_interleave(
                torch.arange(len(self.seqlens), device=lengths.device), lengths
            )
        return self.cache["document_ids"]


def keep_mask_from(attention_mask: torch.Tensor, shape: tuple[int, int], check: bool = True) -> torch.Tensor | None:
    """A boolean keep-mask from an HF 1/0 mask (bool, int or float) or the official additive float
    mask (0 = keep, -inf = pad). With `check`, values are validated and None means every position is
    kept; without it, nothing is read back from the device (for training loops and torch.compile)."""
    if tuple(attention_mask.shape) != tuple(shape):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but the input has shape {tuple(shape)}; "
            "pass a (batch, length) mask"
        )
    if not check:
        return _with_a_key_in_every_row(_keep_mask_unchecked(attention_mask))
    if attention_mask.dtype == torch.bool:
        keep = attention_mask
    elif attention_mask.is_floating_point():
        if torch.isnan(attention_mask).any():
            raise ValueError("attention_mask contains NaN")
        if (attention_mask < 0).any() or not attention_mask.any():
            # The released training code's additive mask: 0.0 keeps a key, a large negative drops it.
            if (attention_mask > 0).any():
                raise ValueError(
                    "attention_mask mixes negative and positive values: use either an additive mask "
                    "(0 = keep, -inf = pad) or a 1/0 keep-mask"
                )
            keep = attention_mask == 0
        else:
            if ((attention_mask != 0) & (attention_mask != 1)).any():
                raise ValueError("a floating-point keep-mask must contain only 0.0 and 1.0")
            keep = attention_mask == 1
    else:
        if ((attention_mask != 0) & (attention_mask != 1)).any():
            raise ValueError("attention_mask must contain only 0 and 1 (or be boolean)")
        keep = attention_mask == 1
    if bool(keep.all()):
        return None
    return _with_a_key_in_every_row(keep)


def _with_a_key_in_every_row(keep: torch.Tensor) -> torch.Tensor:
    """A row without a single real key would make softmax return NaN; let it see its first position.
    Out of place, so the caller's mask is untouched and tracers (ONNX) can follow it."""
    first = torch.arange(keep.shape[1], device=keep.device) == 0
    return keep | (first[None, :] & ~keep.any(dim=1, keepdim=True))


def _keep_mask_unchecked(attention_mask: torch.Tensor) -> torch.Tensor:
    if attention_mask.dtype == torch.bool:
        return attention_mask
    if not attention_mask.is_floating_point():
        return attention_mask != 0
    # Decided on the device: an additive mask has negatives (or is all zeros), a keep-mask has ones.
    additive = (attention_mask < 0).any() | ~(attention_mask > 0).any()
    return torch.where(additive, attention_mask == 0, attention_mask > 0.5)


def _check_cu_seqlens(cu_seqlens: torch.Tensor, total: int, max_seqlen: int | None) -> tuple[list[int], int]:
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.is_floating_point():
        raise ValueError("cu_seqlens must be a 1-D integer tensor [0, end_1, ..., total]")
    bounds = cu_seqlens.tolist()
    if bounds[0] != 0 or bounds[-1] != total:
        raise ValueError(
            f"cu_seqlens must start at 0 and end at the number of packed tokens ({total}); "
            f"got first {bounds[0]} and last {bounds[-1]}"
        )
    seqlens = [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    if min(seqlens) <= 0:
        raise ValueError("cu_seqlens must be strictly increasing (every document needs at least one token)")
    longest = max(seqlens)
    if max_seqlen is not None and int(max_seqlen) < longest:
        raise ValueError(f"max_seqlen ({int(max_seqlen)}) is shorter than the longest document ({longest})")
    return seqlens, longest


def cu_seqlens_from_positions(position_ids: torch.Tensor) -> torch.Tensor | None:
    """Documents packed in one row whose positions restart at 0 (transformers' flattening collator)."""
    if position_ids.shape[0] != 1 or position_ids.shape[1] < 2 or int(position_ids[0, 0]) != 0:
        return None
    starts = torch.nonzero(position_ids[0] == 0).flatten()
    if starts.numel() < 2:
        return None
    end = torch.tensor([position_ids.shape[1]], device=starts.device)
    return torch.cat([starts, end]).to(torch.int32)


def build_layout(
    shape: tuple[int, int],
    device: torch.device,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
    max_seqlen: int | None,
    check: bool = True,
) -> AttentionLayout:
    batch, length = shape
    if batch == 0 or length == 0:
        raise ValueError(f"empty batch: input has shape {tuple(shape)}")
    if position_ids is not None:
        if position_ids.dim() == 1:
            position_ids = position_ids.unsqueeze(0)
        if position_ids.shape[-1] != length or position_ids.shape[0] not in (1, batch):
            raise ValueError(f"position_ids has shape {tuple(position_ids.shape)}, expected ({batch}, {length})")
        if position_ids.is_floating_point() or (check and int(position_ids.min()) < 0):
            raise ValueError("position_ids must be non-negative integers")
        position_ids = position_ids.to(device)
        if cu_seqlens is None and attention_mask is None:
            cu_seqlens = cu_seqlens_from_positions(position_ids)

    if cu_seqlens is not None:
        if batch != 1:
            raise ValueError(f"packed input (cu_seqlens) must have batch size 1, got {batch}")
        if attention_mask is not None and check and keep_mask_from(attention_mask, shape) is not None:
            raise ValueError("packed input must not contain padding: drop it or leave out cu_seqlens")
        seqlens, longest = _check_cu_seqlens(cu_seqlens, length, max_seqlen)
        cu_seqlens = cu_seqlens.to(device=device, dtype=torch.int32)
        layout = AttentionLayout(batch, length, cu_seqlens=cu_seqlens, seqlens=seqlens, max_seqlen=longest)
        if position_ids is None:
            starts = cu_seqlens[:-1].long()
            position_ids = (torch.arange(length, device=device) - starts[layout.document_ids()]).unsqueeze(0)
        layout.position_ids = position_ids
        return layout

    key_mask = keep_mask_from(attention_mask.to(device), shape, check) if attention_mask is not None else None
    return AttentionLayout(batch, length, key_mask=key_mask, position_ids=position_ids)
