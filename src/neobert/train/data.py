"""The pre-training loop's batches: a prepared corpus (`neobert prepare`) read by `neobert.data`'s loader."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from neobert.data.loader import LoaderConfig, build_loader
from neobert.data.workers import MultiWorkerLoader
from neobert.tokenizer import load_tokenizer
from neobert.train.config import PretrainConfig
from neobert.train.distributed import DistributedContext
from neobert.train.held_out import SAMPLE_SETTINGS

# The held-out order's granularity, fixed here rather than read from DataSection's defaults, so that a change
# of the training order's defaults cannot move the held-out sequences and masks that every run is scored on.
# (It did once: at ffd6203 the held-out rule followed the defaults from (128, 16) to these values.)
HELD_OUT_BLOCK_DOCUMENTS = 8
HELD_OUT_WINDOW_BLOCKS = 256


def loader_config(config: PretrainConfig, split: str, micro_batch: int, held_out: bool = False) -> LoaderConfig:
    """The loader of `split`: the training settings, or the held-out rule (`data.eval`, which falls back to
    them). The loader's config has the data section's names, so the settings pass over as they are."""
    data = config.data
    if data.path is None:
        raise ValueError("data.path is not set: point it at a folder written by `neobert prepare`")
    if not held_out:
        return LoaderConfig(
            path=data.path,
            split=split,
            batch_size=micro_batch,
            length_mixture=tuple(data.length_mixture),
            block_documents=data.block_documents,
            window_blocks=data.window_blocks,
            **{name: getattr(data, name) for name in SAMPLE_SETTINGS},
        )
    rule = data.eval.over(data)
    return LoaderConfig(
        path=data.path,
        split=split,
        batch_size=micro_batch if rule.batch_size is None else rule.batch_size,
        # Held-out batches are the same whatever the phase or the training order: one pass, no length
        # mixture, the fixed granularity.
        block_documents=HELD_OUT_BLOCK_DOCUMENTS,
        window_blocks=HELD_OUT_WINDOW_BLOCKS,
        epochs=1,
        **{name: getattr(rule, name) for name in SAMPLE_SETTINGS},
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
    """The first `data.eval_batches` held-out batches of this rank (under the rule `data.eval`): the same
    batches every call."""
    split = config.data.eval_split
    if split is None:
        return []
    loader = build_loader(loader_config(config, split, micro_batch, held_out=True), context.rank, context.world_size)
    return list(itertools.islice(loader, config.data.eval_batches))
