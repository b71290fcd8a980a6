"""OpenVINO as an `encode` backend: the folder's exported ONNX graph (`neobert export --onnx`), read and
compiled for the CPU by OpenVINO, behind the same `run(output_names, feed)` call as an onnxruntime session.

"openvino" compiles onnx/model.onnx with fp32 inference forced: on CPUs with bf16 units OpenVINO's default
is bf16, which moves vectors by about 1e-2 (measured on a tiny model) instead of fp32's 1e-6.
"openvino-bf16" compiles the same graph asking for bf16 matrix products (fp32 accumulation), the faster
route on CPUs with bf16 instructions (AVX512-BF16, AMX); where the CPU has none, OpenVINO computes in fp32
and the route equals "openvino". "openvino-int8" compiles onnx/model_qint8.onnx, the int8 graph `--int8`
writes (no calibration data: its weights carry their own scales). Shapes stay dynamic, so one compilation
serves every batch size and length; compilations are kept per graph file and precision (while the file is
unchanged) so that repeated `encode(folder, ...)` calls compile once.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from neobert.errors import UserError
from neobert.export.onnx_files import onnx_path

# Each backend's ONNX graph and the precision OpenVINO is asked to compute in.
OPENVINO_BACKENDS = {
    "openvino": ("onnx", "f32"),
    "openvino-bf16": ("onnx", "bf16"),
    "openvino-int8": ("onnx-int8", "f32"),
}
_CACHE_SIZE = 4
_compiled: OrderedDict[tuple, Any] = OrderedDict()


class OpenVINOMissing(UserError, ImportError):
    """An openvino backend was asked for where the `openvino` package is not installed."""


class OpenVINOSession:
    """A compiled OpenVINO model answering onnxruntime's `run(output_names, feed)`."""

    def __init__(self, compiled: Any, path: Path):
        self.compiled = compiled
        self.path = path
        self._request = compiled.create_infer_request()

    def run(self, output_names: list[str], feed: dict[str, Any]) -> list[Any]:
        results = self._request.infer(feed)  # share_outputs=False: arrays of their own, not the request's
        return [results[name] for name in output_names]  # an output has several names; any of them finds it


def import_openvino():
    try:
        import openvino
    except ImportError as error:
        raise OpenVINOMissing(
            "the openvino backends need OpenVINO: pip install 'neobert[openvino]' (or pip install openvino)"
        ) from error
    return openvino


def openvino_session(folder: str | Path, backend: str = "openvino", threads: int | None = None) -> OpenVINOSession:
    """The folder's ONNX graph for `backend` compiled by OpenVINO for the CPU (from the cache when the same
    graph file, unchanged, was compiled before in the same precision with the same `threads`)."""
    if backend not in OPENVINO_BACKENDS:
        raise ValueError(f"unknown OpenVINO backend {backend!r}; choose one of {tuple(OPENVINO_BACKENDS)}")
    graph, precision = OPENVINO_BACKENDS[backend]
    path = onnx_path(folder, graph)
    if not path.is_file():
        flag = " --int8" if backend == "openvino-int8" else ""
        raise FileNotFoundError(
            f"{path} does not exist; the {backend} backend reads the exported ONNX graph: write it with "
            f"`neobert export --model {folder} --onnx{flag}` (or with --out DIR, into a new folder)"
        )
    openvino = import_openvino()
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, precision, threads)
    if key in _compiled:
        _compiled.move_to_end(key)
        return OpenVINOSession(_compiled[key], path)
    core = openvino.Core()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    _compiled[key] = compiled
    while len(_compiled) > _CACHE_SIZE:
        _compiled.popitem(last=False)
    return OpenVINOSession(compiled, path)
