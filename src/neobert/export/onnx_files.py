"""Where an exported folder keeps its ONNX graphs: the layout Text Embeddings Inference and
sentence-transformers read, and the one older exports used. Light on purpose (no torch, no onnx): the
onnxruntime and OpenVINO routes of `encode` find their graph, and onnxruntime's session over it, here
without importing the exporter."""

from __future__ import annotations

from pathlib import Path

ONNX_FILE = "onnx/model.onnx"
ONNX_INT8_FILE = "onnx/model_qint8.onnx"
ONNX_FILES = {"onnx": ONNX_FILE, "onnx-int8": ONNX_INT8_FILE}
# Where exports before the serving layout put the graphs; still read.
LEGACY_ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model_int8.onnx"}


def onnx_path(folder: str | Path, backend: str = "onnx") -> Path:
    """The folder's graph for `backend`: onnx/model.onnx ("onnx") or onnx/model_qint8.onnx ("onnx-int8"), else
    the older export's model.onnx / model_int8.onnx; the new path (absent) when there is neither."""
    if backend not in ONNX_FILES:
        raise ValueError(f"unknown ONNX backend {backend!r}; choose one of {tuple(ONNX_FILES)}")
    current, legacy = Path(folder) / ONNX_FILES[backend], Path(folder) / LEGACY_ONNX_FILES[backend]
    return legacy if legacy.is_file() and not current.is_file() else current


def onnx_session(folder: str | Path, threads: int | None = None, backend: str = "onnx"):
    """An onnxruntime CPU session over the folder's graph for `backend` (see `onnx_path`)."""
    import onnxruntime

    path = onnx_path(folder, backend)
    if not path.is_file():
        flag = " --int8" if backend == "onnx-int8" else ""
        raise FileNotFoundError(f"{path} does not exist; write it with `neobert export --model {folder} --onnx{flag}`")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
