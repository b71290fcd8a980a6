"""ONNX export of the NeoBERT encoder in the layout serving engines read, its int8 variant, and an
onnxruntime session for `neobert.embed.encode(..., backend="onnx" or "onnx-int8")`.

The layout is sentence-transformers' and Text Embeddings Inference's: `onnx/model.onnx` beside the model
folder's config, tokenizer and sentence-transformers files (modules.json, sentence_bert_config.json,
1_Pooling/config.json); graph inputs exactly `input_ids` and `attention_mask` (padded, dynamic batch and
length), outputs `last_hidden_state` and `sentence_embedding` (the folder's pooling, not normalised). The
int8 variants are `onnx/model_qint8.onnx` (sentence-transformers names its quantised files
`model_q<weights>_<target>.onnx`; this one has no target: its 7-bit weights suit every x86 CPU) and
`onnx/model_qint8_avx512_vnni.onnx` (full-range weights for VNNI CPUs, onnxruntime only). Folders written
before this layout (`model.onnx` / `model_int8.onnx` at the top) are still read."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from neobert.export.onnx_files import LEGACY_ONNX_FILES, ONNX_FILE, ONNX_INT8_FILE, ONNX_INT8_VNNI_FILE
from neobert.export.onnx_fused import UnfusableGraph, fuse_for_onnxruntime
from neobert.files import publish, write_bytes_atomically
from neobert.pooling import POOLINGS, stored_pooling
from neobert.run_lock import hold_beside, holding
from neobert.train.checkpoint import MANIFEST, verify_model_folder

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("last_hidden_state", "sentence_embedding")
OPSET = 17


class _ExportableEncoder(torch.nn.Module):
    """The encoder with its rotary (cos, sin) table computed in the graph from the input's length: ONNX has
    no complex type, the model's own table is built lazily in Python, and a constant table would cap the
    length. The angles are formed as `RotaryTable` forms them (float32 position times inverse frequency)."""

    def __init__(self, encoder, pooling: str):
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return hidden, pool_in_graph(hidden, attention_mask, self.pooling)


def pool_in_graph(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """sentence-transformers' Pooling (mean, cls or max over the unpadded tokens) in traceable operations."""
    if pooling == "cls":
        return hidden[:, 0]
    keep = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "mean":
        return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)
    return hidden.masked_fill(keep == 0, float("-inf")).amax(1)


def _explicit_rms_norm(self, x: torch.Tensor) -> torch.Tensor:
    """nn.RMSNorm written out: the ONNX exporter has no symbolic for aten::rms_norm below opset 23."""
    eps = self.eps if self.eps is not None else torch.finfo(x.dtype).eps
    normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return normed * self.weight if self.weight is not None else normed


@holding(hold_beside, lambda arguments: arguments["out"] or arguments["model_dir"])  # one writer at a time
def export_onnx(model_dir: str | Path, out: str | Path | None = None, int8: bool = False) -> Path:
    """Write `onnx/model.onnx` into `out` (default: the model folder itself), any length accepted (as the
    PyTorch model, rotary positions have no limit), and with `int8` also `onnx/model_qint8.onnx` and
    `onnx/model_qint8_avx512_vnni.onnx` (see `quantize_onnx`). When `out` is another folder, the model folder's
    other files are copied there too, so that it serves alone (`encode(out, texts, backend="onnx")`, Text
    Embeddings Inference). Without `int8`, int8 graphs of an earlier export in `out` are removed, with a
    warning: they belong to another graph. Returns the path of onnx/model.onnx."""
    from transformers import AutoModel

    import neobert.model  # noqa: F401  (registers "neobert" with the Auto classes)

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} holds no model (no config.json)")
    verify_model_folder(model_dir)
    pooling = stored_pooling(model_dir) or "mean"
    if pooling not in POOLINGS:
        raise ValueError(f"{model_dir}: pooling {pooling!r} has no ONNX form here; choose one of {POOLINGS}")
    out = Path(out) if out is not None else model_dir
    encoder = AutoModel.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    if not encoder.config.rope:
        raise ValueError("ONNX export covers rotary-position models (every NeoBERT preset but bert-like-m0)")
    wrapper = _ExportableEncoder(encoder, pooling).eval()
    created = out != model_dir and not out.exists()
    try:
        path = _export_into(wrapper, model_dir, out, int8)
        if not (out / MANIFEST).exists():  # a training checkpoint's files are checksummed: left as they are
            write_serving_files(out, encoder.config, pooling)
        return path
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)  # a failed export leaves no folder that blocks the next one
        raise


def _export_into(wrapper: torch.nn.Module, model_dir: Path, out: Path, int8: bool) -> Path:
    if out != model_dir:
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(f"{out} exists and is not empty")
        # The source's own graphs are not copied: this export writes the folder's graphs anew.
        shutil.copytree(model_dir, out, dirs_exist_ok=True, ignore=_source_graphs(model_dir))
    example = torch.tensor([[101, 2023, 2003, 102], [101, 2178, 102, 0]])
    mask = (example != 0).long()
    target = out / ONNX_FILE
    target.parent.mkdir(exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".model.", suffix=".onnx", delete=False) as tmp:
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
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "length"},
                    "attention_mask": {0: "batch", 1: "length"},
                    "last_hidden_state": {0: "batch", 1: "length"},
                    "sentence_embedding": {0: "batch"},
                },
                opset_version=OPSET,
                dynamo=False,
            )
        publish(tmp.name, target)  # the umask's permissions, not the temporary file's 0600
    finally:
        if os.path.exists(tmp.name):
            os.remove(tmp.name)
    if int8:
        quantize_onnx(out)
    else:
        _drop_stale_int8(out)
    return target


def _source_graphs(model_dir: Path):
    """`copytree`'s ignore: the model folder's onnx/ and the older layout's top-level graphs."""
    top_level = {Path(ONNX_FILE).parent.name, *LEGACY_ONNX_FILES.values()}

    def ignore(directory: str, names: list[str]) -> set[str]:
        return top_level & set(names) if Path(directory) == model_dir else set()

    return ignore


def _drop_stale_int8(folder: Path) -> None:
    # An earlier `--int8` export's graphs hold the previous graph's weights; backend="onnx-int8" would serve
    # them beside the new float graph, so they go (the same export with --int8 writes them again).
    stale = [folder / name for name in (ONNX_INT8_FILE, ONNX_INT8_VNNI_FILE, LEGACY_ONNX_FILES["onnx-int8"])]
    stale = [path for path in stale if path.is_file()]
    for path in stale:
        path.unlink()
    if stale:
        names = ", ".join(str(path.relative_to(folder)) for path in stale)
        warnings.warn(
            f"removed {names} from {folder}: an earlier int8 export of another graph; add --int8 to write it "
            "again from this one",
            stacklevel=3,
        )


def write_serving_files(folder: Path, config, pooling: str) -> None:
    """What Text Embeddings Inference needs beside the graph: the sentence-transformers files (written when
    the folder has none), the pooling also as the older per-mode flags TEI parses (sentence-transformers
    reads `pooling_mode` first), and `max_position_embeddings` in config.json (TEI refuses a config without
    it; NeoBERT's rotary positions have no table, so it is the training length, as sentence_bert_config)."""
    if not (folder / "modules.json").is_file():
        from neobert.export.folder import write_sentence_transformers_files

        write_sentence_transformers_files(folder, config.hidden_size, config.max_length, pooling)
    pooling_file = folder / "1_Pooling" / "config.json"
    if pooling_file.is_file():
        settings = json.loads(pooling_file.read_text())
        flags = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens"}
        wanted = {flag: mode == pooling for mode, flag in flags.items()}
        if any(settings.get(flag) != on for flag, on in wanted.items()):
            write_bytes_atomically(pooling_file, (json.dumps({**settings, **wanted}, indent=4) + "\n").encode())
    config_file = folder / "config.json"
    settings = json.loads(config_file.read_text())
    if "max_position_embeddings" not in settings:
        settings["max_position_embeddings"] = int(settings.get("max_length", config.max_length))
        write_bytes_atomically(config_file, (json.dumps(settings, indent=2, sort_keys=True) + "\n").encode())


def quantize_onnx(folder: str | Path) -> Path:
    """The folder's int8 graphs from its `onnx/model.onnx`; returns the path of the portable one,
    `onnx/model_qint8.onnx`. Every matrix product gets int8 weights (one scale per output channel) and
    activations quantised on the fly; the vectors move slightly (measure cosine against float32 on your data).

    onnxruntime multiplies uint8 activations by int8 weights. On x86 CPUs without VNNI (AVX2-only, or AVX-512
    without VNNI) that instruction adds adjacent products into a saturating int16, and with full-range
    weights 255 * 127 * 2 overflows it: vectors there fell to cosine 0.90 against float32 while VNNI hosts
    gave 0.99998. So the portable file has 7-bit weights (-64..64), whose pair sums stay within 32,767: one
    file for every x86 CPU (and OpenVINO), at int8 speed everywhere (uint8 weights would also avoid the
    overflow, but run no faster than float32 on VNNI hosts).

    Beside it, `onnx/model_qint8_avx512_vnni.onnx` keeps the eighth bit (neobert-250m, 256 short texts:
    smallest cosine 0.9995 where 7 bits gave 0.9990) and runs the graph `fuse_for_onnxruntime` rewrites, for
    CPUs with VNNI only; `encode(..., backend="onnx-int8")` chooses between the two by the CPU it runs on."""
    import onnx

    folder = Path(folder)
    source = folder / ONNX_FILE
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist; write it with `neobert export --model {folder} --onnx`")
    _quantize(source, folder / ONNX_INT8_FILE, reduce_range=True)
    heads = json.loads((folder / "config.json").read_text())["num_attention_heads"]
    try:
        fused = fuse_for_onnxruntime(onnx.load(str(source)), heads)
    except UnfusableGraph as error:
        # Another exporter may trace other node patterns. The portable file serves every CPU; an older VNNI
        # file beside it would hold the previous export's weights, so it goes.
        stale = folder / ONNX_INT8_VNNI_FILE
        stale.unlink(missing_ok=True)
        warnings.warn(
            f"{ONNX_INT8_VNNI_FILE} not written: this graph cannot be rewritten for onnxruntime's fused operators "
            f"({error}); backend='onnx-int8' runs {ONNX_INT8_FILE} on every CPU",
            stacklevel=2,
        )
        return folder / ONNX_INT8_FILE
    with tempfile.TemporaryDirectory(dir=source.parent, prefix=".fused.") as scratch:
        fused_path = Path(scratch) / "model.onnx"
        onnx.save(fused, str(fused_path))
        del fused
        _quantize(fused_path, folder / ONNX_INT8_VNNI_FILE, reduce_range=False)
    return folder / ONNX_INT8_FILE


def _quantize(source: Path, target: Path, reduce_range: bool) -> None:
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.stem}.", suffix=".onnx", delete=False) as tmp:
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
            reduce_range=reduce_range,
            op_types_to_quantize=["MatMul"],
            # Shape inference gives the fused operators' outputs no type; every activation here is float32.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        publish(tmp.name, target)
    finally:
        root.setLevel(level)
        if os.path.exists(tmp.name):
            os.remove(tmp.name)
