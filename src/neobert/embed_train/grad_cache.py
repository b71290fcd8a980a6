"""One contrastive step, optionally with a gradient cache (GradCache, Gao et al. 2021) so that the batch
size is limited by the loss, not by activation memory.

With a chunk size: (1) embed every chunk without a graph; (2) compute the loss on those cached
embeddings and backpropagate it to them only; (3) embed each chunk again with a graph and backpropagate
its cached embedding gradient into the model. Dropout masks are reproduced by replaying the random state
of the first pass, so the gradients equal those of the full batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

EmbedFn = Callable[[Sequence[str]], torch.Tensor]


def _rng_state() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def contrastive_step(
    embed: EmbedFn,
    groups: Sequence[Sequence[str]],
    loss_fn: Callable[..., torch.Tensor],
    chunk_size: int | None = None,
    no_sync: Callable[[bool], contextlib.AbstractContextManager] | None = None,
) -> torch.Tensor:
    """Backpropagates `loss_fn(*embeddings of each group)` into the model behind `embed`; returns the loss.

    `groups`: e.g. (queries, positives, negatives) as lists of texts. `no_sync(skip)` (DDP's) silences
    gradient reduction for every backward pass but the last.
    """
    no_sync = no_sync or (lambda skip: contextlib.nullcontext())
    if chunk_size is None:
        loss = loss_fn(*(embed(texts) for texts in groups))
        loss.backward()
        return loss.detach()
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")

    chunks = [[list(texts[i : i + chunk_size]) for i in range(0, len(texts), chunk_size)] for texts in groups]
    states, cached = [], []
    with torch.no_grad():
        for group in chunks:
            pieces = []
            for chunk in group:
                states.append(_rng_state())
                pieces.append(embed(chunk))
            cached.append(torch.cat(pieces) if pieces else embed([]))
    after_first_pass = _rng_state()
    leaves = [c.detach().requires_grad_() for c in cached]
    loss = loss_fn(*leaves)
    loss.backward()

    jobs = []
    for group, leaf in zip(chunks, leaves, strict=True):
        grad = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        start = 0
        for chunk in group:
            jobs.append((chunk, grad[start : start + len(chunk)]))
            start += len(chunk)
    for index, ((chunk, grad), state) in enumerate(zip(jobs, states, strict=True)):
        _set_rng_state(state)
        with no_sync(index < len(jobs) - 1):
            embed(chunk).backward(grad)
    _set_rng_state(after_first_pass)
    return loss.detach()
