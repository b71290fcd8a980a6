"""Write a trained model as a folder that transformers, sentence-transformers and the official remote code
all load: the masked-LM weights in the released layout, the tokenizer, sentence-transformers' modules and,
by default, the model code itself (neobert.model.remote_code), so that it loads where neobert is not installed."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from transformers import AutoModelForMaskedLM

from neobert.config import NeoBERTConfig
from neobert.errors import os_error_within
from neobert.files import follow_umask
from neobert.pooling import POOLINGS
from neobert.run_lock import check_output_folder, hold_beside, holding
from neobert.tokenizer import load_tokenizer
from neobert.train.checkpoint import verify_model_folder


@holding(hold_beside, lambda arguments: arguments["out"])  # one writer at a time
def export_model(
    source: str | Path,
    out: str | Path,
    pooling: str = "mean",
    tokenizer: str | None = None,
    overwrite: bool = False,
    prompts: dict[str, str] | None = None,
    with_code: bool = True,
) -> Path:
    """`source`: a training checkpoint or any NeoBERT folder `from_pretrained` reads. Written to a temporary
    folder first and renamed, so `out` is either complete or untouched. `prompts` (e.g. {"query": "query: ",
    "document": ""}) are stored for sentence-transformers' `prompt_name=` and `neobert.embed.encode`.
    `with_code`: write the model code too (`trust_remote_code=True` then loads the folder without neobert);
    without it the folder loads only where neobert is imported."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    source, out = Path(source), Path(out)
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"{source} holds no model (no config.json)")
    verify_model_folder(source)
    check_output_folder(out, "--out")  # a file in the way is the user's, --overwrite or not: refused, never deleted
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--restart) to replace it")
    # The source's own code format does not matter: the folder gets the current code.
    settings, _ = NeoBERTConfig.get_config_dict(source)
    settings.pop("neobert_code_version", None)
    model = AutoModelForMaskedLM.from_pretrained(source, config=NeoBERTConfig.from_dict(settings))
    tok = load_tokenizer(tokenizer if tokenizer is not None else _tokenizer_in(source))
    out.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not mkdtemp (0700): the folder is for sharing; follow_umask below sets what is inside.
    staging = out.parent / f".{out.name}.{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        write_sentence_transformers_files(staging, model.config.hidden_size, model.config.max_length, pooling, prompts)
        if not with_code:
            # The source's auto_map (the released snapshot's `model.NeoBERT`, say) names files not copied here.
            model.config.__dict__.pop("auto_map", None)
        # After sentence-transformers' files: its save writes the backbone alone, this restores the full model.
        model.save_pretrained(staging, self_contained=with_code)
        tok.save_pretrained(staging)
        follow_umask(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        fault = os_error_within(error, str(out))  # safetensors reports a full disk in its message only
        if fault is not None and fault is not error:
            raise fault from error
        raise
    return out


def _tokenizer_in(folder: Path) -> str | None:
    return str(folder) if (folder / "tokenizer_config.json").is_file() else None


def write_sentence_transformers_files(
    folder: Path, hidden_size: int, max_length: int, pooling: str, prompts: dict[str, str] | None = None
) -> None:
    """modules.json, sentence_bert_config.json and the pooling module, via sentence-transformers itself."""
    try:
        from sentence_transformers import models
    except ImportError:
        return  # the [eval] extra is not installed; transformers users are unaffected
    import json

    # The Transformer module needs a loadable model to be built; describe it by its saved files instead.
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ],
            indent=2,
        )
    )
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_length, "do_lower_case": False}, indent=2)
    )
    if prompts:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
            raise ValueError("prompts must map names to strings, e.g. {'query': 'query: '}")
        settings = {"prompts": dict(prompts), "default_prompt_name": None, "similarity_fn_name": "cosine"}
        (folder / "config_sentence_transformers.json").write_text(json.dumps(settings, indent=2))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    models.Pooling(hidden_size, pooling).save(str(folder / "1_Pooling"))
