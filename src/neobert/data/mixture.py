"""The phase-2 length mixture: each batch drawn from one of several loaders over the same corpus, one per
length bucket (`LoaderConfig.length_mixture`). `build_loader` in `loader.py` builds it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from neobert.data.sequences import TokenCorpus
from neobert.data.shards import DataError

if TYPE_CHECKING:
    from neobert.data.loader import LoaderConfig, PretrainingLoader

MIXTURE_STREAM = 1_000_003  # a stream id no component uses, for the per-batch mixture draw


class MixtureLoader:
    """Each batch comes from one component loader, drawn with the configured probabilities. The draw
    depends on (seed, chunk number in the global order) only, so which documents a global batch holds does
    not depend on the world size; each component keeps its own global order. `component` is the
    single-stream loader class (`PretrainingLoader`), given by `build_loader` so that this module does not
    import `loader.py` back."""

    def __init__(
        self,
        config: LoaderConfig,
        component: type[PretrainingLoader],
        rank: int = 0,
        world_size: int = 1,
        tokenizer_fingerprint: str | None = None,
    ):
        if config.epochs is not None:
            raise ValueError("a length mixture runs endlessly: leave epochs unset")
        buckets = config.length_mixture
        weights = np.array([bucket.probability for bucket in buckets], dtype=np.float64)
        if len(buckets) == 0 or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("length_mixture needs buckets with non-negative probabilities summing to more than 0")
        self.config = config
        self.cumulative = np.cumsum(weights / weights.sum())
        corpus = TokenCorpus(config.path, config.split, tokenizer_fingerprint, config.verify)
        self.components = [
            component(
                replace(config, length_mixture=(), min_document_tokens=bucket.min_document_tokens),
                rank,
                world_size,
                corpus=corpus,
                stream=number + 1,
            )
            for number, bucket in enumerate(buckets)
        ]
        self.corpus, self.rank, self.world_size = corpus, rank, world_size
        self._chunks = 0  # chunks of the global order gone by; each is drawn from one component

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def _draw(self, chunk: int) -> int:
        draw = np.random.default_rng(np.random.SeedSequence([self.config.seed, MIXTURE_STREAM, chunk]))
        component = int(np.searchsorted(self.cumulative, draw.random(), side="right"))
        return min(component, len(self.components) - 1)

    def _my_turn(self) -> None:
        while self._chunks % self.world_size != self.rank:
            self.components[self._draw(self._chunks)].take_samples(self.config.batch_size)
            self._chunks += 1

    def __next__(self) -> dict[str, Any]:
        return self.finish(self.next_unmasked())

    def next_unmasked(self) -> dict[str, Any]:
        self._my_turn()
        number = self._draw(self._chunks)
        component = self.components[number]
        samples, first = component.take_samples(self.config.batch_size)
        self._chunks += 1
        return {**component.unmasked(samples, first), "component": number}

    def finish(self, unmasked: dict[str, Any]) -> dict[str, Any]:
        self.last_component = unmasked["component"]
        return self.components[self.last_component].finish(unmasked)

    def set_mlm_probability(self, rate: float) -> None:
        for component in self.components:
            component.set_mlm_probability(rate)

    def skip(self, count: int) -> None:
        for _ in range(count):
            self._my_turn()
            self.components[self._draw(self._chunks)].take_samples(self.config.batch_size)
            self._chunks += 1

    def _placement(self) -> dict[str, int]:
        return {"rank": self.rank, "world_size": self.world_size, "batch_size": self.config.batch_size}

    def position(self) -> dict[str, Any]:
        return {"chunks": self._chunks, "components": [component.position() for component in self.components]}

    def set_position(self, state: dict[str, Any]) -> None:
        self._chunks = int(state["chunks"])
        for component, position in zip(self.components, state["components"], strict=True):
            component.set_position(position)

    def state_dict(self) -> dict[str, Any]:
        now = self._chunks, [component.state_dict() for component in self.components]
        while self._chunks % self.world_size:  # to the end of the round, as in PretrainingLoader.end_of_round
            self.components[self._draw(self._chunks)].take_samples(self.config.batch_size)
            self._chunks += 1
        boundary = {"chunks": self._chunks, "components": [c.position() for c in self.components]}
        self._chunks = now[0]
        for component, saved in zip(self.components, now[1], strict=True):
            component.load_state_dict(saved)
        return {"chunks": now[0], "components": now[1], "boundary": boundary, "placement": self._placement()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["components"]) != len(self.components):
            raise DataError("the loader state holds a different number of length-mixture components")
        for component, saved in zip(self.components, state["components"], strict=True):
            component.check_identity(saved)
        if state.get("placement") == self._placement():
            for component, saved in zip(self.components, state["components"], strict=True):
                component.load_state_dict(saved)
            self._chunks = int(state["chunks"])
            return
        saved_batch = state.get("placement", {}).get("batch_size")
        chunks = int(state["boundary"]["chunks"])
        if saved_batch != self.config.batch_size or chunks % self.world_size:
            raise DataError(
                f"a length mixture draws its bucket per micro-batch: resume it with the micro-batch it was saved "
                f"with ({saved_batch} samples, here {self.config.batch_size}) and a world size that divides "
                f"its {chunks} micro-batches gone by"
            )
        self.set_position(state["boundary"])
