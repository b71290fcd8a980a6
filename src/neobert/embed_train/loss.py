"""InfoNCE on cosine similarity, with in-batch and hard negatives gathered across processes."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

TEMPERATURE = 0.07


def gather_with_grad(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every process's rows stacked in rank order, and where this process's rows start. Only the local
    part carries gradient (the other ranks' rows are constants here; their own processes backpropagate
    them). Ranks may hold different numbers of rows (hard negatives vary), so rows are padded to gather."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    count = torch.tensor([local.shape[0]], device=local.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    padded = local.new_zeros((max(counts), *local.shape[1:]))
    padded[: local.shape[0]] = local.detach()
    pieces = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(pieces, padded)
    pieces = [piece[:n] for piece, n in zip(pieces, counts, strict=True)]
    pieces[rank] = local
    return torch.cat(pieces), sum(counts[:rank])


def info_nce(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    temperature: float = TEMPERATURE,
    gather: bool = True,
) -> torch.Tensor:
    """Mean over queries of -log softmax(cos(q_i, d) / t)[positive_i], the candidates d being every
    positive of the (global) batch followed by every hard negative of the (global) batch.

    queries, positives: (B, D), row i of each a pair; negatives: (N, D), shared by all queries.
    """
    if queries.shape != positives.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and positives {tuple(positives.shape)} must match")
    if negatives is None:
        negatives = positives.new_zeros((0, positives.shape[-1]))
    if gather:
        positives, offset = gather_with_grad(positives)
        negatives, _ = gather_with_grad(negatives)
    else:
        offset = 0
    candidates = F.normalize(torch.cat([positives, negatives]), dim=-1)
    logits = F.normalize(queries, dim=-1) @ candidates.T / temperature
    targets = torch.arange(queries.shape[0], device=queries.device) + offset
    return F.cross_entropy(logits.float(), targets)
