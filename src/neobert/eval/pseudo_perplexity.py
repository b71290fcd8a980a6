"""Pseudo-perplexity as in the paper (spec D.5): every position of a sequence masked once, PPL = exp(mean CE).

The naive way runs one forward pass per position. Here the masked copies of a sequence are stacked into
batches (row j masks position j), the encoder runs once per batch, and the decoder is applied only to each
row's masked position, so no (batch, length, vocabulary) tensor is ever built.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F


def scored_positions(ids: Sequence[int], special_ids: set[int]) -> list[int]:
    """Every position except [CLS], [SEP] and other special tokens."""
    return [i for i, token in enumerate(ids) if token not in special_ids]


@torch.no_grad()
def masked_losses(
    model, ids: Sequence[int], mask_id: int, positions: Sequence[int], batch_size: int = 32
) -> torch.Tensor:
    """Cross-entropy of the true token at each of `positions`, each masked in its own copy of `ids`."""
    model.eval()
    row = torch.tensor(list(ids), dtype=torch.long)
    losses = []
    for start in range(0, len(positions), batch_size):
        chunk = torch.tensor(positions[start : start + batch_size], dtype=torch.long)
        copies = row.repeat(len(chunk), 1)
        rows = torch.arange(len(chunk))
        copies[rows, chunk] = mask_id
        hidden = model.model(input_ids=copies).last_hidden_state
        logits = model.decoder(hidden[rows, chunk]).float()
        losses.append(F.cross_entropy(logits, row[chunk], reduction="none"))
    return torch.cat(losses) if losses else torch.zeros(0)


@torch.no_grad()
def masked_losses_naive(model, ids: Sequence[int], mask_id: int, positions: Sequence[int]) -> torch.Tensor:
    """The definition, one forward pass per masked position (the reference and the benchmark's baseline)."""
    model.eval()
    row = torch.tensor([list(ids)], dtype=torch.long)
    losses = []
    for position in positions:
        copy = row.clone()
        copy[0, position] = mask_id
        logits = model(input_ids=copy).logits[0, position].float()
        losses.append(F.cross_entropy(logits[None], row[0, position][None]))
    return torch.stack(losses) if losses else torch.zeros(0)


def pseudo_perplexity(losses: torch.Tensor) -> float:
    return math.exp(float(losses.double().mean()))


def spread_positions(positions: list[int], limit: int | None) -> list[int]:
    """At most `limit` positions spread evenly over the sequence (all when `limit` is None)."""
    if limit is None or len(positions) <= limit:
        return positions
    step = len(positions) / limit
    return [positions[int(i * step)] for i in range(limit)]


def windows(token_stream: list[int], length: int, count: int, cls_id: int, sep_id: int) -> list[list[int]]:
    """Up to `count` consecutive, non-overlapping [CLS] ... [SEP] sequences of exactly `length` tokens."""
    body = length - 2
    starts = range(0, len(token_stream) - body + 1, body)
    return [[cls_id, *token_stream[s : s + body], sep_id] for s in list(starts)[:count]]


@dataclass
class LengthResult:
    length: int
    sequences: int
    scored_tokens: int
    pseudo_perplexity: float
    mean_loss: float
    beyond_training_length: bool
    seconds: float


def perplexity_by_length(
    model,
    tokenizer,
    texts: list[str],
    lengths: Sequence[int],
    sequences: int = 4,
    batch_size: int = 32,
    max_positions: int | None = None,
    log=print,
) -> list[LengthResult]:
    """Pseudo-perplexity of `sequences` windows of each length cut from the texts laid end to end."""
    stream = [t for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] for t in ids]
    special = set(tokenizer.all_special_ids)
    training_length = int(getattr(model.config, "max_length", 0) or 0)
    results = []
    for length in lengths:
        chosen = windows(stream, length, sequences, tokenizer.cls_token_id, tokenizer.sep_token_id)
        if not chosen:
            log(f"length {length}: the text has only {len(stream)} tokens, skipped")
            continue
        started = time.perf_counter()
        losses = [
            masked_losses(
                model,
                ids,
                tokenizer.mask_token_id,
                spread_positions(scored_positions(ids, special), max_positions),
                batch_size,
            )
            for ids in chosen
        ]
        every = torch.cat(losses)
        results.append(
            LengthResult(
                length=length,
                sequences=len(chosen),
                scored_tokens=int(every.numel()),
                pseudo_perplexity=pseudo_perplexity(every),
                mean_loss=float(every.mean()),
                beyond_training_length=bool(training_length and length > training_length),
                seconds=time.perf_counter() - started,
            )
        )
        log(f"length {length}: pseudo-perplexity {results[-1].pseudo_perplexity:.2f} ({results[-1].seconds:.1f} s)")
    return results


def format_length_table(results: list[LengthResult]) -> str:
    lines = [
        "| length | sequences | scored tokens | pseudo-perplexity | beyond training length |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        beyond = "yes" if r.beyond_training_length else ""
        lines.append(f"| {r.length} | {r.sequences} | {r.scored_tokens} | {r.pseudo_perplexity:.2f} | {beyond} |")
    return "\n".join(lines) + "\n"


def plot_lengths(results: list[LengthResult], png: str | Path, training_length: int | None, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot([r.length for r in results], [r.pseudo_perplexity for r in results], marker="o")
    if training_length:
        axis.axvline(training_length, linestyle="--", color="grey", label=f"training length {training_length}")
        axis.legend()
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("input length (tokens)")
    axis.set_ylabel("pseudo-perplexity")
    axis.set_title(title)
    figure.tight_layout()
    png = Path(png)
    temporary = png.with_name(f".{png.name}.tmp.png")
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    temporary.replace(png)
    return png


def results_as_dicts(results: list[LengthResult]) -> list[dict]:
    return [asdict(r) for r in results]
