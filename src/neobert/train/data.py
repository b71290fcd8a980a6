"""The pre-training loop's batches: a prepared corpus (`neobert prepare`) read by `neobert.data`'s loader."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from neobert.data.loader import LoaderConfig, build_loader
from neobert.data.masking import MaskingConfig
from neobert.data.workers import MultiWorkerLoader
from neobert.tokenizer import load_tokenizer
from neobert.train.config import PretrainConfig
from neobert.train.distributed import DistributedContext

_MASK_STRATEGIES = {"all": "all_mask", "bert": "80_10_10"}


def loader_config(config: PretrainConfig, split: str, micro_batch: int, held_out: bool = False) -> LoaderConfig:
    data = config.data
    if data.path is None:
        raise ValueError("data.path is not set: point it at a folder written by `neobert prepare`")
    return LoaderConfig(
        path=data.path,
        split=split,
        scheme=data.sequence,
        layout="packed" if data.sequence == "pack" else "padded",
        max_length=data.max_length,
        batch_size=micro_batch,
        # Held-out batches are the same whatever the phase: one pass, no length mixture.
        length_mixture=() if held_out else tuple(data.length_mixture),
        masking=MaskingConfig(rate=data.mlm_probability, strategy=_MASK_STRATEGIES[data.mask_mode]),
        seed=data.seed,
        epochs=1 if held_out else None,
    )


def make_loader(config: PretrainConfig, micro_batch: int, context: DistributedContext):
    """This rank's endless training loader; a corpus tokenised with another tokenizer is refused here,
    before any step runs."""
    tokenizer = load_tokenizer(config.data.tokenizer)
    loader = build_loader(
        loader_config(config, config.data.train_split, micro_batch), context.rank, context.world_size, tokenizer
    )
    if config.system.num_workers > 0:
        return MultiWorkerLoader(loader, num_workers=config.system.num_workers)
    return loader


def make_eval_batches(
    config: PretrainConfig, micro_batch: int, context: DistributedContext
) -> Iterable[dict[str, Any]]:
    """The first `data.eval_batches` held-out batches of this rank: the same batches every call."""
    split = config.data.eval_split
    if split is None:
        return []
    loader = build_loader(loader_config(config, split, micro_batch, held_out=True), context.rank, context.world_size)
    return list(itertools.islice(loader, config.data.eval_batches))
