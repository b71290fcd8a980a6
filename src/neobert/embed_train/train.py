"""The contrastive fine-tuning loop: a NeoBERT folder in, an exported sentence embedder folder out."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from neobert.embed_train.data import HomogeneousBatches, Pair, check_batch_fits, read_pairs
from neobert.embed_train.grad_cache import contrastive_step
from neobert.embed_train.loss import TEMPERATURE, info_nce
from neobert.pooling import pooled_packed
from neobert.run_lock import check_output_folder, hold_beside, holding
from neobert.train.checkpoint import verify_model_folder


@dataclass
class ContrastiveSettings:
    steps: int = 2000  # the paper's unified fine-tuning length (spec D.3)
    batch_size: int = 32  # pairs per process and step
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_steps: int = 100
    temperature: float = TEMPERATURE
    alpha: float = 0.5
    chunk_size: int | None = None  # gradient cache chunk (texts); None embeds the whole batch at once
    max_length: int = 512
    pooling: str = "mean"
    seed: int = 0
    log_every: int = 10
    device: str = "auto"

    def __post_init__(self) -> None:
        """Settings that cannot train refused before any work, named by their command-line flags (a zero
        temperature divides by zero; a NaN alpha makes every dataset's probability NaN)."""
        problems = [
            f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}"
            for name in ("steps", "batch_size", "log_every")
            if getattr(self, name) < 1
        ]
        if self.max_length < 3:
            problems.append(f"--max-length must leave room for [CLS], a token and [SEP] (3), got {self.max_length}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            problems.append(f"--temperature must be a positive number, got {self.temperature}")
        for name in ("lr", "weight_decay", "alpha"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                problems.append(f"--{name.replace('_', '-')} must be a finite number >= 0, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            problems.append(f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        if problems:
            raise ValueError("; ".join(problems))


def packed_embedder(model: torch.nn.Module, tokenizer, max_length: int, pooling: str, device: torch.device):
    """texts -> pooled (n, hidden) embeddings, the texts packed into one row (no padding), as `encode` runs them."""

    def embed(texts: Sequence[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, model_config(model).hidden_size, device=device)
        ids = tokenizer(list(texts), truncation=True, max_length=max_length, verbose=False)["input_ids"]
        return pooled_packed(model, ids, pooling, device)

    return embed


def training_groups(pairs: Sequence, prompts: dict[str, str] | None) -> tuple[list[str], list[str], list[str]]:
    """(queries, positives, negatives) as the model will see them at use: a stored "query" prompt before
    each query and a "document" prompt before each positive and negative, as `encode(prompt_name=...)`,
    sentence-transformers and the retrieval suite add them."""
    prompts = prompts or {}
    query, document = prompts.get("query", ""), prompts.get("document", "")
    return (
        [query + p.query for p in pairs],
        [document + p.positive for p in pairs],
        [document + n for p in pairs for n in p.negatives],
    )


def model_config(model: torch.nn.Module):
    return getattr(model, "module", model).config


def load_datasets(
    sources: Sequence[str | Path], words: Mapping[str, Callable[[], list[Pair]]] | None = None
) -> dict[str, list[Pair]]:
    """One dataset per source; its name is the file or folder name (made unique). A source that is one of
    `words` (the command's `demo`) is read by that word's function."""
    words = words or {}
    datasets = {}
    for source in sources:
        name = Path(str(source).removeprefix("hf:")).stem or str(source)
        while name in datasets:
            name += "_"
        word = words.get(source) if isinstance(source, str) else None
        datasets[name] = word() if word is not None else read_pairs(source)
    return datasets


@holding(hold_beside, lambda arguments: arguments["out"])  # one run at a time; its export takes it again
def train_contrastive(
    model_dir: str | Path,
    data: Sequence[str | Path],
    out: str | Path,
    settings: ContrastiveSettings | None = None,
    prompts: dict[str, str] | None = None,
    overwrite: bool = False,
    data_words: Mapping[str, Callable[[], list[Pair]]] | None = None,
) -> Path:
    """Fine-tune `model_dir` on the pairs in `data` and write an exported embedder folder to `out`.
    Under torchrun every process trains on its slice of each batch; negatives are gathered across them.
    `prompts` are stored with the model; its "query" and "document" prompts are also put before the
    training texts (see `training_groups`), so the model learns with the text it will be given."""
    from transformers import AutoModelForMaskedLM

    import neobert.model  # noqa: F401  (registers "neobert" with the Auto classes)
    from neobert.export.folder import export_model
    from neobert.tokenizer import load_tokenizer
    from neobert.train.distributed import init_distributed, no_sync, teardown
    from neobert.train.optim import LRSchedule

    settings = settings or ContrastiveSettings()
    out = Path(out)
    check_output_folder(out, "--out")
    if out.exists() and not overwrite:
        raise FileExistsError(f"--out {out} exists; pass --restart to replace it, or choose another --out")
    datasets = load_datasets(data, data_words)  # before any model work, so that bad data fails fast
    check_batch_fits(datasets, settings.batch_size)
    if not (Path(model_dir) / "config.json").is_file():
        raise FileNotFoundError(f"--model {model_dir} holds no model (no config.json; `neobert export` writes one)")
    context = init_distributed(settings.device, option="--device")
    try:
        check_batch_fits(datasets, settings.batch_size * context.world_size)
        torch.manual_seed(settings.seed + context.rank)
        model_dir = Path(model_dir)
        verify_model_folder(model_dir)
        full = AutoModelForMaskedLM.from_pretrained(model_dir).to(context.device)
        tokenizer = load_tokenizer(str(model_dir) if (model_dir / "tokenizer_config.json").is_file() else None)
        encoder = full.model.train()
        trained = encoder
        if context.enabled:
            trained = torch.nn.parallel.DistributedDataParallel(
                encoder, device_ids=[context.device.index] if context.device.type == "cuda" else None
            )
        embed = packed_embedder(trained, tokenizer, settings.max_length, settings.pooling, context.device)
        optimizer = torch.optim.AdamW(encoder.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        warmup = min(settings.warmup_steps, max(settings.steps // 10, 0))
        schedule = LRSchedule(warmup_steps=warmup, total_steps=settings.steps, kind="linear", final_fraction=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=schedule)
        batches = iter(
            HomogeneousBatches(
                datasets, settings.batch_size, settings.alpha, settings.seed, context.rank, context.world_size
            )
        )

        def loss_fn(q, p, n):
            return info_nce(q, p, n, settings.temperature)

        started = time.perf_counter()
        for step in range(settings.steps):
            name, pairs = next(batches)
            groups = training_groups(pairs, prompts)
            loss = contrastive_step(embed, groups, loss_fn, settings.chunk_size, lambda skip: no_sync(trained, skip))
            torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if context.is_main and ((step + 1) % settings.log_every == 0 or step + 1 == settings.steps):
                elapsed = time.perf_counter() - started
                print(f"step {step + 1}/{settings.steps}  loss {float(loss):.4f}  ({name})  {elapsed:.0f}s", flush=True)
        if context.is_main:
            _export(full, tokenizer, out, settings.pooling, prompts, overwrite, export_model)
    finally:
        teardown(context)
    return out


def _export(full, tokenizer, out: Path, pooling: str, prompts, overwrite: bool, export_model) -> None:
    full.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.weights.") as staging:
        full.cpu().save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        export_model(staging, out, pooling=pooling, overwrite=overwrite, prompts=prompts)


__all__ = ["ContrastiveSettings", "train_contrastive"]
