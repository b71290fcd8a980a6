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
_LAYOUTS = {"truncate": "padded", "pack": "packed", "pack_naive": "rows"}


# The held-out order's granularity, fixed here rather than read from DataSection's defaults, so that a change
# of the training order's defaults cannot move the held-out sequences and masks that every run is scored on.
# (It did once: at ffd6203 the held-out rule followed the defaults from (128, 16) to these values.)
HELD_OUT_BLOCK_DOCUMENTS = 8
HELD_OUT_WINDOW_BLOCKS = 256


def _held_out(value, training_value):
    return training_value if value is None else value


def loader_config(config: PretrainConfig, split: str, micro_batch: int, held_out: bool = False) -> LoaderConfig:
    data = config.data
    if data.path is None:
        raise ValueError("data.path is not set: point it at a folder written by `neobert prepare`")
    if not held_out:
        sequence, max_length, rate, mode, identity, seed = (
            data.sequence,
            data.max_length,
            data.mlm_probability,
            data.mask_mode,
            data.mlm_identity_probability,
            data.seed,
        )
    else:  # the held-out rule (data.eval_*), which defaults to the training recipe
        sequence = _held_out(data.eval_sequence, data.sequence)
        max_length = _held_out(data.eval_max_length, data.max_length)
        rate = _held_out(data.eval_mlm_probability, data.mlm_probability)
        mode = _held_out(data.eval_mask_mode, data.mask_mode)
        identity = _held_out(data.eval_mlm_identity_probability, data.mlm_identity_probability)
        seed = _held_out(data.eval_seed, data.seed)
        micro_batch = _held_out(data.eval_batch_size, micro_batch)
    return LoaderConfig(
        path=data.path,
        split=split,
        scheme="truncate" if sequence == "truncate" else "pack",
        layout=_LAYOUTS[sequence],
        max_length=max_length,
        batch_size=micro_batch,
        # Held-out batches are the same whatever the phase: one pass, no length mixture.
        length_mixture=() if held_out else tuple(data.length_mixture),
        masking=MaskingConfig(rate=rate, strategy=_MASK_STRATEGIES[mode], identity_rate=identity),
        seed=seed,
        # Held-out samples follow the fixed rule whatever the training order's granularity.
        block_documents=HELD_OUT_BLOCK_DOCUMENTS if held_out else data.block_documents,
        window_blocks=HELD_OUT_WINDOW_BLOCKS if held_out else data.window_blocks,
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
