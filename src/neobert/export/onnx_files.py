"""Where an exported folder keeps its ONNX graphs: the layout Text Embeddings Inference and
sentence-transformers read, and the one older exports used. Light on purpose (numpy, no torch, no onnx): the
onnxruntime and OpenVINO routes of `encode` find their graph, and onnxruntime's session over it, here
without importing the exporter.

`neobert export --onnx --int8` writes two int8 graphs. onnx/model_qint8.onnx has 7-bit weights and standard
operators: it keeps its accuracy on every x86 CPU and OpenVINO reads it. onnx/model_qint8_avx512_vnni.onnx
(sentence-transformers' name for an int8 file meant for VNNI CPUs) has full-range weights, which only CPUs
with VNNI multiply without saturating, and onnxruntime's fused attention and rotary operators, so only
onnxruntime reads it. `backend="onnx-int8"` takes the second where the CPU has VNNI and the folder holds it,
else the first (see `onnx_int8_file`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from neobert.runtime import usable_cores

ONNX_FILE = "onnx/model.onnx"
ONNX_INT8_FILE = "onnx/model_qint8.onnx"
ONNX_INT8_VNNI_FILE = "onnx/model_qint8_avx512_vnni.onnx"
ONNX_FILES = {"onnx": ONNX_FILE, "onnx-int8": ONNX_INT8_FILE}
# Where exports before the serving layout put the graphs; still read.
LEGACY_ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model_int8.onnx"}
# /proc/cpuinfo flags of the int8 dot-product instructions that accumulate in int32 (no int16 saturation).
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def onnx_path(folder: str | Path, backend: str = "onnx") -> Path:
    """The folder's portable graph for `backend`: onnx/model.onnx ("onnx") or onnx/model_qint8.onnx
    ("onnx-int8"), else the older export's model.onnx / model_int8.onnx; the new path (absent) when there is
    neither. The VNNI graph is never returned here: OpenVINO cannot read it (see `onnx_int8_file`)."""
    if backend not in ONNX_FILES:
        raise ValueError(f"unknown ONNX backend {backend!r}; choose one of {tuple(ONNX_FILES)}")
    current, legacy = Path(folder) / ONNX_FILES[backend], Path(folder) / LEGACY_ONNX_FILES[backend]
    return legacy if legacy.is_file() and not current.is_file() else current


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty where /proc/cpuinfo is absent or unreadable)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_vnni() -> bool:
    return bool(VNNI_FLAGS & cpu_flags())


def onnx_int8_file(folder: str | Path, vnni: bool | None = None) -> Path:
    """The int8 graph onnxruntime should run here: onnx/model_qint8_avx512_vnni.onnx when the CPU has VNNI
    (`vnni=None` asks /proc/cpuinfo) and the folder holds it (exports before it have only the 7-bit file),
    else the 7-bit graph of `onnx_path(folder, "onnx-int8")`."""
    vnni_file = Path(folder) / ONNX_INT8_VNNI_FILE
    if (cpu_has_vnni() if vnni is None else vnni) and vnni_file.is_file():
        return vnni_file
    return onnx_path(folder, "onnx-int8")


def onnx_session(folder: str | Path, threads: int | None = None, backend: str = "onnx", vnni: bool | None = None):
    """An onnxruntime CPU session over the folder's graph for `backend` (`onnx_path`'s; for "onnx-int8"
    `onnx_int8_file`'s, `vnni`: None detects the CPU, False forces the 7-bit graph), behind `RowSplitSession`
    with `threads` workers (default: the CPUs this process may use)."""
    import onnxruntime

    path = onnx_int8_file(folder, vnni) if backend == "onnx-int8" else onnx_path(folder, backend)
    if not path.is_file():
        flag = " --int8" if backend == "onnx-int8" else ""
        raise FileNotFoundError(f"{path} does not exist; write it with `neobert export --model {folder} --onnx{flag}`")
    workers = threads or usable_cores()

    def open_session(intra_op_threads: int):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    # The workers are the parallelism (see RowSplitSession); a batch of one text gets all the threads.
    return RowSplitSession(open_session(1), workers, open_threaded=lambda: open_session(workers))


class RowSplitSession:
    """onnxruntime's `run(output_names, feed)` over a padded batch, its rows split into `workers` runs of
    consecutive rows, each cut to its own longest row and computed on one thread, all at once.

    Texts of embedding-sized lengths make matrices too small for onnxruntime's threads to share: each
    operator ends at a barrier where the threads wait for the slowest, and a core busy with anything else
    stalls them all. Whole runs per thread meet only at the end (neobert-250m, 256 short texts on 2 busy
    cores: 1.6x the texts/s of one session on 2 threads), and `encode`'s batches, sorted by length, lose
    padding when cut. Rows are computed independently, so float32 vectors do not change; int8 graphs
    quantise activations per run, so theirs move by the quantisation step. A batch with fewer rows than
    workers (one text: a serving request) runs whole on `open_threaded()`'s session, opened on first use,
    whose operators use every worker's thread, so its latency does not grow."""

    def __init__(self, session, workers: int, open_threaded=None):
        self.session = session
        self.workers = max(1, workers)
        self._open_threaded = open_threaded
        self._threaded = None
        self._pool = None

    def run(self, output_names: list[str], feed: dict):
        ids, mask = feed["input_ids"], feed["attention_mask"]
        if len(ids) < self.workers and self._open_threaded is not None:
            if self._threaded is None:
                self._threaded = self._open_threaded()
            return self._threaded.run(output_names, feed)
        runs = min(self.workers, len(ids))
        if runs == 1:
            return self.session.run(output_names, feed)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="onnx-rows")
        bounds = [len(ids) * part // runs for part in range(runs + 1)]

        def one(start: int, stop: int) -> list:
            used = np.flatnonzero(mask[start:stop].any(0))  # through the last column any row attends to
            width = int(used[-1]) + 1 if used.size else 1
            return self.session.run(
                output_names, {"input_ids": ids[start:stop, :width], "attention_mask": mask[start:stop, :width]}
            )

        parts = list(self._pool.map(one, bounds[:-1], bounds[1:]))
        return [_join([part[index] for part in parts], ids.shape[1]) for index in range(len(output_names))]


def _join(parts: list, length: int):
    """The runs' outputs as one batch: per-token outputs padded back (with zeros) to the batch's length."""
    if parts[0].ndim < 3:
        return np.concatenate(parts)
    joined = np.zeros((sum(len(part) for part in parts), length, *parts[0].shape[2:]), dtype=parts[0].dtype)
    row = 0
    for part in parts:
        joined[row : row + len(part), : part.shape[1]] = part
        row += len(part)
    return joined
