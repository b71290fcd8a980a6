"""ONNX export of the NeoBERT encoder (padded input_ids + attention_mask -> last_hidden_state, dynamic batch
and length), its int8 variant (onnxruntime dynamic quantisation: int8 weights, activations quantised per
call), and an onnxruntime session for `neobert.embed.encode(..., backend="onnx" or "onnx-int8")`."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from neobert.run_lock import hold_beside, holding
from neobert.train.checkpoint import verify_model_folder

ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model_int8.onnx"
ONNX_FILES = {"onnx": ONNX_FILE, "onnx-int8": ONNX_INT8_FILE}
OPSET = 17


class _ExportableEncoder(torch.nn.Module):
    """The encoder with its rotary (cos, sin) table computed in the graph from the input's length: ONNX has
    no complex type, the model's own table is built lazily in Python, and a constant table would cap the
    length. The angles are formed as `RotaryTable` forms them (float32 position times inverse frequency)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        rotary = encoder.rotary
        exponents = torch.arange(0, rotary.head_dim, 2, dtype=torch.float32) / rotary.head_dim
        self.register_buffer("inv_freq", 1.0 / (rotary.theta**exponents), persistent=False)

        def real_rotary(layout, device):
            positions = torch.arange(layout.length, dtype=torch.float32, device=device)
            angles = positions[:, None] * self.inv_freq[None, :]
            return torch.stack((angles.cos(), angles.sin()), dim=-1)[None, :, None, None]

        # The padded path of NeoBERTModel asks `_rotary` for (1, L, 1, 1, head_dim/2, 2): same shape here.
        encoder._rotary = real_rotary
        encoder.check_inputs = False  # value checks read tensors back into Python, which a trace cannot keep

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _explicit_rms_norm(self, x: torch.Tensor) -> torch.Tensor:
    """nn.RMSNorm written out: the ONNX exporter has no symbolic for aten::rms_norm below opset 23."""
    eps = self.eps if self.eps is not None else torch.finfo(x.dtype).eps
    normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return normed * self.weight if self.weight is not None else normed


@holding(hold_beside, lambda arguments: arguments["out"] or arguments["model_dir"])  # one writer at a time
def export_onnx(model_dir: str | Path, out: str | Path | None = None, int8: bool = False) -> Path:
    """Write `model.onnx` into `out` (default: next to the model, in `model_dir`), any length accepted (as
    the PyTorch model, rotary positions have no limit), and with `int8` also
    `model_int8.onnx` (see `quantize_onnx`). When `out` is another folder, the model folder's other files
    (tokenizer, sentence-transformers config) are copied there too, so that `encode(out, texts,
    backend="onnx")` works from it alone. Returns the path of model.onnx."""
    from transformers import AutoModel

    import neobert  # noqa: F401  (registers the model type)

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} holds no model (no config.json)")
    verify_model_folder(model_dir)
    out = Path(out) if out is not None else model_dir
    encoder = AutoModel.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    if not encoder.config.rope:
        raise ValueError("ONNX export covers rotary-position models (every NeoBERT preset but bert-like-m0)")
    wrapper = _ExportableEncoder(encoder).eval()
    created = out != model_dir and not out.exists()
    try:
        return _export_into(wrapper, model_dir, out, int8)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)  # a failed export leaves no folder that blocks the next one
        raise


def _export_into(wrapper: torch.nn.Module, model_dir: Path, out: Path, int8: bool) -> Path:
    if out != model_dir:
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(f"{out} exists and is not empty")
        shutil.copytree(model_dir, out, dirs_exist_ok=True)
    example = torch.tensor([[101, 2023, 2003, 102], [101, 2178, 102, 0]])
    mask = (example != 0).long()
    with tempfile.NamedTemporaryFile(dir=out, prefix=".model.", suffix=".onnx", delete=False) as tmp:
        pass
    try:
        from unittest import mock

        with (
            torch.no_grad(),
            mock.patch.object(torch.nn.RMSNorm, "forward", _explicit_rms_norm),
        ):
            torch.onnx.export(
                wrapper,
                (example, mask),
                tmp.name,
                input_names=["input_ids", "attention_mask"],
                output_names=["last_hidden_state"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "length"},
                    "attention_mask": {0: "batch", 1: "length"},
                    "last_hidden_state": {0: "batch", 1: "length"},
                },
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(tmp.name, out / ONNX_FILE)
    finally:
        if os.path.exists(tmp.name):
            os.remove(tmp.name)
    if int8:
        quantize_onnx(out)
    return out / ONNX_FILE


def quantize_onnx(folder: str | Path) -> Path:
    """`model_int8.onnx` from the folder's `model.onnx`: every matrix product with int8 weights (one scale
    per output channel) and activations quantised on the fly; the vectors move slightly (measure cosine
    against float32 on your data).

    The weights use 7 bits (-64..64). onnxruntime multiplies uint8 activations by int8 weights; on x86 CPUs
    without VNNI (AVX2-only, or AVX-512 without VNNI) that instruction adds adjacent products into a
    saturating int16, and with full-range weights 255 * 127 * 2 overflows it: vectors there fell to cosine
    0.90 against float32 while VNNI hosts gave 0.99998. With 7 bits the pair sum stays within 32,767, so
    one file keeps its accuracy on every x86 CPU (0.9999 on both kinds), at int8 speed everywhere; uint8
    weights would also avoid the overflow, but run no faster than float32 on VNNI hosts."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder = Path(folder)
    source = folder / ONNX_FILE
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist; write it with `neobert export-onnx {folder}`")
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".model_int8.", suffix=".onnx", delete=False) as tmp:
        pass
    root = logging.getLogger()
    level = root.level
    try:
        # The quantiser logs a generic "consider pre-processing" hint on the root logger at every call.
        root.setLevel(logging.ERROR)
        quantize_dynamic(
            str(source),
            tmp.name,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            op_types_to_quantize=["MatMul"],
        )
        os.replace(tmp.name, folder / ONNX_INT8_FILE)
    finally:
        root.setLevel(level)
        if os.path.exists(tmp.name):
            os.remove(tmp.name)
    return folder / ONNX_INT8_FILE


def onnx_session(folder: str | Path, threads: int | None = None, backend: str = "onnx"):
    """An onnxruntime CPU session over the folder's model.onnx ("onnx") or model_int8.onnx ("onnx-int8")."""
    import onnxruntime

    if backend not in ONNX_FILES:
        raise ValueError(f"unknown ONNX backend {backend!r}; choose one of {tuple(ONNX_FILES)}")
    path = Path(folder) / ONNX_FILES[backend]
    if not path.is_file():
        flag = " --int8" if backend == "onnx-int8" else ""
        raise FileNotFoundError(f"{path} does not exist; write it with `neobert export-onnx {folder}{flag}`")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
