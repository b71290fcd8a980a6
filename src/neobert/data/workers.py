"""Building batches in torch DataLoader worker processes, with the same batches and the same resume.

Worker w of n reads batches w, w + n, w + 2n, ... of the loader's sequence; the DataLoader hands them out in
that round-robin order, so training sees exactly what a single-process loader gives. The workers do the
reading and the random draws, which do not depend on the mask rate (`PretrainingLoader.unmasked`); the main
process masks each batch at the rate in force when it is taken (`finish`, a few vectorised operations), so a
mask-rate schedule changes the rate between steps however far the workers have read ahead. Only document
lengths are read to skip the batches of the other workers.

Each batch comes with the loader's position after it, which the main process's loader takes over: its
`state_dict()` is then exactly that of a single-process loader after the same batches, and loading a state
restarts the workers from there.
"""

from __future__ import annotations

import contextlib
import pickle
import signal
import threading
import traceback
from collections.abc import Iterator
from typing import Any

import torch

from neobert.data.loader import PretrainingLoader, build_loader
from neobert.data.mixture import MixtureLoader


class _WorkerShare(torch.utils.data.IterableDataset):
    """One worker's batches: those whose number, counted from `position`, is its id modulo the workers."""

    def __init__(self, loader: PretrainingLoader | MixtureLoader, position: dict[str, Any]):
        self.loader, self.position = loader, position

    def __getstate__(self) -> dict[str, Any]:
        # Pickled only when workers are spawned rather than forked: the loader is rebuilt from its
        # configuration there, which maps the corpus afresh instead of copying its memory maps into the pickle.
        loader = self.loader
        return {"recipe": (loader.config, loader.rank, loader.world_size), "position": self.position}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.loader, self.position = build_loader(*state["recipe"]), state["position"]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        loader = self.loader  # each worker process holds its own copy
        try:
            loader.set_position(self.position)
            loader.skip(worker)
            while True:
                try:
                    unmasked = loader.next_unmasked()
                except StopIteration:
                    return
                yield {"unmasked": unmasked, "position": loader.position()}
                loader.skip(workers - 1)
        except Exception as error:  # handed to the main process as it is: the same named error as without workers
            yield {"error": _portable(error, worker)}


def _portable(error: Exception, worker: int) -> Exception:
    """`error` with the worker's traceback as a note (shown by an uncaught error, not by str()), or a
    RuntimeError naming it when it cannot be pickled."""
    where = f"in DataLoader worker {worker}:\n{''.join(traceback.format_exception(error))}"
    try:
        error.add_note(where)
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error} ({where})")


def _keep_on_interrupt(worker: int) -> None:
    """Ctrl-C reaches the whole process group; the main process then saves at the next step boundary and
    needs its workers until then. Shutting them down is the main process's job (SIGTERM is left as it is:
    that is how the main process, and Python at exit, end a worker that does not stop)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _interrupts_ignored_while_forking() -> Iterator[None]:
    """A forked worker inherits the parent's signal dispositions, so starting the workers while SIGINT is
    ignored leaves no moment, before `worker_init_fn` runs, in which a Ctrl-C kills a starting worker."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _as_is(item: dict[str, Any]) -> dict[str, Any]:
    return item  # numpy arrays stay numpy arrays: the main process's `finish` takes them


class MultiWorkerLoader:
    """An iterator over a loader's batches built in `num_workers` DataLoader processes (started at the first
    batch asked for); `state_dict()` and `load_state_dict()` are the loader's own, so resuming works as with
    the loader itself. `close()` stops the workers (the trainer calls it at the end, on success or error)."""

    def __init__(
        self,
        loader: PretrainingLoader | MixtureLoader,
        num_workers: int = 2,
        prefetch_factor: int = 2,
        multiprocessing_context: str | None = None,
    ):
        if num_workers < 1:
            raise ValueError(f"MultiWorkerLoader needs at least one worker process, got {num_workers}")
        self.loader, self.num_workers, self.prefetch_factor = loader, num_workers, prefetch_factor
        self.multiprocessing_context = multiprocessing_context
        self._batches: Iterator[dict[str, Any]] | None = None
        self._ended = False

    def _start(self) -> Iterator[dict[str, Any]]:
        data = torch.utils.data.DataLoader(
            _WorkerShare(self.loader, self.loader.position()),
            batch_size=None,
            collate_fn=_as_is,
            num_workers=self.num_workers,
            prefetch_factor=self.prefetch_factor,
            worker_init_fn=_keep_on_interrupt,
            multiprocessing_context=self.multiprocessing_context,
            # The DataLoader draws its workers' seeds from this generator, not from the global RNG, whose
            # state is part of a checkpoint; the batches use no seed of theirs.
            generator=torch.Generator().manual_seed(0),
        )
        with _interrupts_ignored_while_forking():
            return iter(data)

    def __iter__(self) -> MultiWorkerLoader:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._ended:
            raise StopIteration
        if self._batches is None:
            self._batches = self._start()
        try:
            item = next(self._batches)
        except StopIteration:
            self._ended = True
            self.close()
            self.loader.skip(1)  # over the incomplete end, as a single-process loader's last call moves
            raise
        except BaseException:
            self.close()
            raise
        if "error" in item:
            self.close()
            raise item["error"]
        self.loader.set_position(item["position"])
        return self.loader.finish(item["unmasked"])

    def set_mlm_probability(self, rate: float) -> None:
        """Mask the batches taken from now on at `rate` (the workers' draws do not depend on it)."""
        self.loader.set_mlm_probability(rate)

    @property
    def packing_efficiency(self) -> float:
        return self.loader.packing_efficiency  # an AttributeError for a mixture, as without workers

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state`: the workers, which read ahead from the old position, start again from it."""
        self.close()
        self.loader.load_state_dict(state)
        self._ended = False

    def close(self) -> None:
        """Stop the worker processes now (the next batch asked for starts them again, from the position)."""
        batches, self._batches = self._batches, None
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            # The DataLoader's iterator stops its workers when freed, but a traceback may hold it for a while.
            shutdown()
