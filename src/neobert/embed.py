"""Sentence embeddings from a NeoBERT encoder: `encode(model_or_path, texts)`.

Texts are tokenised once, sorted by length (longest first) into batches, run packed (documents end to end
in one row, delimited by `cu_seqlens`, so no work is spent on padding) or padded, pooled, optionally
truncated to fewer dimensions and normalised, and returned in the caller's order.

Documented results for edge cases: an empty list gives an array of shape (0, dim); a single string gives a
1-D vector; an empty string still gets a vector (of its [CLS] [SEP] tokens). `None` or a non-string item
raises `TypeError` naming its position.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neobert.export.onnx_files import onnx_session
from neobert.openvino_backend import openvino_session
from neobert.pooling import POOLINGS, pool_padded, pooled_packed, stored_pooling

PRECISIONS = ("float32", "int8", "binary")
BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8")
ST_CONFIG = "config_sentence_transformers.json"


@dataclass
class Embedder:
    """An encoder with what `encode` needs beside it: the tokenizer, the prompts stored with the model
    (sentence-transformers' `prompts`, e.g. {"query": "query: "}), the pooling stored with it (its
    sentence-transformers Pooling module; None when there is none) and, for the ONNX and OpenVINO backends, a
    session (onnxruntime's, or `OpenVINOSession` answering the same `run`)."""

    model: Any
    tokenizer: Any
    prompts: dict[str, str] = field(default_factory=dict)
    max_length: int = 4096
    onnx_session: Any = None
    pooling: str | None = None


def load_embedder(path: str | Path, backend: str = "torch") -> Embedder:
    """A model folder (as `neobert export` writes it, or any NeoBERT checkpoint folder) ready for `encode`."""
    from transformers import AutoConfig, AutoModel

    import neobert.model  # noqa: F401  (registers "neobert" with the Auto classes)
    from neobert.tokenizer import load_tokenizer

    path = Path(path)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} holds no model (no config.json)")
    tokenizer = load_tokenizer(str(path) if (path / "tokenizer_config.json").is_file() else None)
    prompts = {}
    if (path / ST_CONFIG).is_file():
        prompts = dict(json.loads((path / ST_CONFIG).read_text()).get("prompts") or {})
    from neobert.train.checkpoint import verify_model_folder

    verify_model_folder(path)
    config = AutoConfig.from_pretrained(path)
    pooling = stored_pooling(path)
    if backend.startswith("openvino"):
        session = openvino_session(path, backend)
        return Embedder(None, tokenizer, prompts, config.max_length, session, pooling)
    if backend != "torch":
        session = onnx_session(path, backend=backend)
        return Embedder(None, tokenizer, prompts, config.max_length, session, pooling)
    model = AutoModel.from_pretrained(path).eval()
    return Embedder(model, tokenizer, prompts, config.max_length, pooling=pooling)


def as_embedder(model_or_path: Any, tokenizer: Any = None, backend: str = "torch") -> Embedder:
    """Accepts an `Embedder`, a folder, a `NeoBERTModel` or any model holding one as `.model`."""
    if isinstance(model_or_path, Embedder):
        return model_or_path
    if isinstance(model_or_path, (str, Path)):
        embedder = load_embedder(model_or_path, backend)
        if tokenizer is not None:
            embedder.tokenizer = tokenizer
        return embedder
    if backend != "torch":
        raise ValueError(f"the {backend} backend needs a model folder holding its .onnx file, not a model object")
    from neobert.model import NeoBERTModel
    from neobert.tokenizer import load_tokenizer

    model = model_or_path
    if not isinstance(model, NeoBERTModel):
        model = getattr(model, "model", None)
        if not isinstance(model, NeoBERTModel):
            raise TypeError(f"expected a model folder, an Embedder or a NeoBERT model, got {type(model_or_path)}")
    return Embedder(model, tokenizer or load_tokenizer(), {}, model.config.max_length)


def check_texts(texts: Any) -> tuple[list[str], bool]:
    """(list of texts, whether one string was given). Raises TypeError on anything but strings."""
    if texts is None:
        raise TypeError("texts is None; pass a string or a list of strings")
    if isinstance(texts, str):
        return [texts], True
    if not isinstance(texts, Sequence) and not hasattr(texts, "__iter__"):
        raise TypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is {type(text).__name__}, not a string")
    return texts, False


def tokenize(embedder: Embedder, texts: list[str], limit: int) -> list[list[int]]:
    """Token ids with [CLS] and [SEP]; longer texts keep their first `limit - 1` tokens and [SEP]."""
    ids = embedder.tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
    too_long = [i for i, row in enumerate(ids) if len(row) > limit]
    if too_long:
        warnings.warn(
            f"{len(too_long)} of {len(texts)} texts exceed {limit} tokens and were truncated "
            f"(the first is texts[{too_long[0]}], {len(ids[too_long[0]])} tokens)",
            stacklevel=3,
        )
        for i in too_long:
            ids[i] = ids[i][: limit - 1] + ids[i][-1:]
    return ids


def _pad(batch: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, batch))
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, tokens in enumerate(batch):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    return ids, mask


def embed_batch(embedder: Embedder, batch: list[list[int]], pooling: str, packed: bool) -> torch.Tensor:
    """Pooled float32 vectors (len(batch), dim) for token-id lists."""
    pad_id = embedder.tokenizer.pad_token_id or 0
    if embedder.onnx_session is not None:
        ids, mask = _pad(batch, pad_id)
        feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        (hidden,) = embedder.onnx_session.run(["last_hidden_state"], feed)  # pooled here: any pooling asked
        return pool_padded(torch.from_numpy(hidden), mask, pooling)
    model = embedder.model
    device = next(model.parameters()).device
    if packed:
        return pooled_packed(model, batch, pooling, device)
    ids, mask = _pad(batch, pad_id)
    hidden = model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
    return pool_padded(hidden.float(), mask.to(device), pooling)


def quantize(vectors: np.ndarray, precision: str) -> np.ndarray:
    """int8: each vector scaled by its own largest magnitude to [-127, 127] (cosine is nearly kept and the
    result never depends on the other texts); binary: sign bits packed 8 per uint8 (dim / 8 bytes)."""
    if precision == "float32":
        return vectors
    if precision == "int8":
        scale = np.abs(vectors).max(axis=-1, keepdims=True)
        scale[scale == 0] = 1.0
        return np.clip(np.rint(vectors / scale * 127), -127, 127).astype(np.int8)
    return np.packbits(vectors > 0, axis=-1)


def _resolve_prompt(embedder: Embedder, prompt: str | None, prompt_name: str | None) -> str:
    if prompt is not None and prompt_name is not None:
        raise ValueError("pass prompt or prompt_name, not both")
    if prompt_name is not None:
        if prompt_name not in embedder.prompts:
            known = ", ".join(embedder.prompts) or "none stored with this model"
            raise ValueError(f"no prompt named {prompt_name!r}; known: {known}")
        return embedder.prompts[prompt_name]
    if prompt is not None and not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    return prompt or ""


def encode(
    model_or_path: Any,
    texts: str | Sequence[str],
    pooling: str | None = None,
    normalize: bool = True,
    prompt: str | None = None,
    prompt_name: str | None = None,
    batch_size: int = 64,
    max_length: int | None = None,
    output_dim: int | None = None,
    precision: str = "float32",
    show_progress: bool = True,
    packed: bool = True,
    backend: str = "torch",
    tokenizer: Any = None,
) -> np.ndarray:
    """Embed `texts` with a NeoBERT encoder; returns a (len(texts), dim) numpy array (dim,) for one string.

    `model_or_path`: a folder, an `Embedder` (from `load_embedder`, to load once) or a NeoBERT model.
    `pooling`: mean, cls or max; by default the folder's own (the Pooling module `neobert export --pooling`
    writes, which sentence-transformers reads too), else mean.
    `prompt` is prepended to every text (e.g. "query: "); `prompt_name` picks one of the prompts stored
    with the model (sentence-transformers' `prompts`, e.g. "query" / "document"), so queries and documents
    can be encoded with their own instruction. `max_length` (default: the model's limit) truncates longer
    texts with a warning. `output_dim` keeps the first dimensions (Matryoshka-style), renormalised when
    `normalize`. `precision`: float32, int8 or binary (see `quantize`). `packed=False` pads instead; the
    vectors agree to float rounding either way and whatever `batch_size`. `backend`: "torch", or "onnx" /
    "onnx-int8" for a folder holding onnx/model.onnx / onnx/model_qint8.onnx (`neobert export --onnx [--int8]`; an
    older export's model.onnx / model_int8.onnx is read too; on CPUs with VNNI "onnx-int8" runs
    onnx/model_qint8_avx512_vnni.onnx where the export wrote it, closer to float32 and faster, see
    `neobert.export.onnx_files`), or "openvino" / "openvino-bf16" / "openvino-int8"
    for the same graphs compiled by OpenVINO (`pip install 'neobert[openvino]'`, see `neobert.openvino_backend`); the
    ONNX and OpenVINO backends pad their length-sorted batches.
    """
    if pooling is not None and pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if output_dim is not None and (not isinstance(output_dim, int) or output_dim < 1):
        raise ValueError(f"output_dim must be a positive integer, got {output_dim!r}")
    if max_length is not None and max_length < 2:  # before the model is loaded
        raise ValueError(f"max_length must leave room for [CLS] and [SEP], got {max_length}")
    texts, single = check_texts(texts)
    embedder = as_embedder(model_or_path, tokenizer, backend)
    if pooling is None:
        pooling = embedder.pooling or "mean"
        if pooling not in POOLINGS:
            raise ValueError(
                f"the model's sentence-transformers Pooling module asks for {pooling!r} pooling, which encode "
                f"does not implement; pass pooling= one of {POOLINGS}"
            )
    hidden_size = embedder.model.config.hidden_size if embedder.model is not None else None
    prefix = _resolve_prompt(embedder, prompt, prompt_name)
    limit = embedder.max_length if max_length is None else max_length  # 0 is refused, not the default
    if limit < 2:
        raise ValueError(f"max_length must leave room for [CLS] and [SEP], got {limit}")

    ids = tokenize(embedder, [prefix + text for text in texts], limit) if texts else []
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    pieces = []
    from tqdm.auto import tqdm

    with torch.inference_mode():
        for batch in tqdm(batches, desc="encode", unit="batch", disable=not show_progress or len(batches) < 2):
            pieces.append(embed_batch(embedder, [ids[i] for i in batch], pooling, packed).cpu())
    if pieces:
        vectors = torch.empty(len(ids), pieces[0].shape[-1])
        vectors[torch.tensor(order)] = torch.cat(pieces)
    else:
        vectors = torch.empty(0, hidden_size or 0)
    if output_dim is not None:
        if output_dim > vectors.shape[-1] and len(ids):
            raise ValueError(f"output_dim {output_dim} exceeds the model's {vectors.shape[-1]} dimensions")
        vectors = vectors[:, :output_dim]
    if normalize and len(ids):
        vectors = torch.nn.functional.normalize(vectors, dim=-1)
    result = quantize(vectors.numpy(), precision)
    return result[0] if single else result
