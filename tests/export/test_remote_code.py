"""Exported folders carry the model code: they load with plain transformers where neobert cannot be imported,
and the code is generated from the package's own modules."""

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

import neobert
from helpers.embed import exported_model
from helpers.model import small_config
from neobert.cli import main
from neobert.config import CODE_FORMAT_VERSION
from neobert.embed import encode
from neobert.model.heads import HEADS
from neobert.model.remote_code import CONFIG_FILE, MODEL_FILE, RemoteCodeError, generate, package_root

pytest.importorskip("sentence_transformers")

TEXTS = ["the capital of france is [MASK].", "a second, somewhat longer sentence with more words", "b"]
CHILD = Path(__file__).resolve().parent / "remote_code_child.py"
LIBRARY_CLASSES = {
    "AutoModel": AutoModel,
    "AutoModelForMaskedLM": AutoModelForMaskedLM,
    "AutoModelForSequenceClassification": AutoModelForSequenceClassification,
    "AutoModelForTokenClassification": AutoModelForTokenClassification,
}


def with_code_version(source: Path, folder: Path, version) -> Path:
    """A copy of `source` whose config.json records another code format."""
    shutil.copytree(source, folder)
    settings = json.loads((folder / "config.json").read_text())
    settings["neobert_code_version"] = version
    (folder / "config.json").write_text(json.dumps(settings))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    exported = exported_model(root)
    torch.manual_seed(1)
    sequence = root / "sequence"
    neobert.NeoBERTForSequenceClassification(small_config(num_labels=3)).save_pretrained(sequence, self_contained=True)
    torch.manual_seed(2)
    neobert.NeoBERTForTokenClassification(small_config(num_labels=5)).save_pretrained(
        root / "token", self_contained=True
    )
    return {
        "encoder": (exported, "AutoModel"),
        "masked_lm": (exported, "AutoModelForMaskedLM"),
        "sequence": (sequence, "AutoModelForSequenceClassification"),
        "token": (root / "token", "AutoModelForTokenClassification"),
    }


@pytest.fixture(scope="module")
def batch(tokenizer):
    return dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))


@pytest.fixture(scope="module")
def child(folders, batch, tmp_path_factory):
    """What the folders compute in a Python without neobert (one run for all the tests below)."""
    work = tmp_path_factory.mktemp("child")
    exported = folders["masked_lm"][0]
    torch.save(batch, work / "inputs.pt")
    spec = {
        "folders": {name: [str(folder), auto] for name, (folder, auto) in folders.items()},
        "inputs": str(work / "inputs.pt"),
        "fill_mask_folder": str(exported),
        "fill_mask_text": TEXTS[0],
        "texts": TEXTS,
        "bad_folders": {
            "older": str(with_code_version(exported, work / "older", CODE_FORMAT_VERSION - 1)),
            "newer": str(with_code_version(exported, work / "newer", CODE_FORMAT_VERSION + 1)),
        },
        "out": str(work / "results.pt"),
    }
    (work / "spec.json").write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    # Remote code is copied into HF_MODULES_CACHE; keep it out of the user's cache. -I: no PYTHONPATH, no cwd.
    env.update(HF_MODULES_CACHE=str(work / "modules"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-I", str(CHILD), str(work / "spec.json")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return torch.load(work / "results.pt", weights_only=False)


def test_the_child_runs_the_folders_code_without_neobert(child):
    assert child["neobert_importable"] is False and child["neobert_loaded"] is False
    assert all(module.startswith("transformers_modules.") for module in child["modules"].values())
    assert all(module.endswith(".modeling_neobert") for module in child["modules"].values())


@pytest.mark.parametrize("name", ["encoder", "masked_lm", "sequence", "token"])
def test_every_head_computes_what_the_library_computes(child, folders, batch, name):
    folder, auto = folders[name]
    model = LIBRARY_CLASSES[auto].from_pretrained(folder).eval()
    assert type(model).__module__.startswith("neobert.")  # after `import neobert`: the registered classes
    with torch.no_grad():
        output = model(**batch)
    ours = output.last_hidden_state if auto == "AutoModel" else output.logits
    assert child["outputs"][name].shape == ours.shape
    torch.testing.assert_close(child["outputs"][name], ours, atol=1e-6, rtol=0)


def test_a_function_registered_with_transformers_runs_the_remote_code(child, folders, batch):
    """The folder's code calls attention through transformers' interface, as in the library."""
    probe = child["probe"]
    assert probe["module"].startswith("transformers_modules.") and probe["implementation"] == "probe"
    assert probe["supports_attention_backend"] is True
    layers = small_config().num_hidden_layers
    assert probe["calls"] == [dict(layer=i, causal=False, engine_state=7) for i in range(layers)]
    model = AutoModel.from_pretrained(folders["encoder"][0], attn_implementation="sdpa").eval()
    with torch.no_grad():
        ours = model(**batch).last_hidden_state
    torch.testing.assert_close(probe["output"], ours, atol=1e-5, rtol=1e-5)


def test_fill_mask_pipeline_runs_on_the_remote_code(child, folders, tokenizer):
    model = AutoModelForMaskedLM.from_pretrained(folders["masked_lm"][0]).eval()
    ids = tokenizer(TEXTS[0], return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits[0, ids["input_ids"][0].tolist().index(tokenizer.mask_token_id)]
    assert child["fill_mask"] == logits.topk(5).indices.tolist()


def test_sentence_transformers_with_remote_code_gives_the_library_vectors(child, folders):
    ours = encode(folders["encoder"][0], TEXTS, show_progress=False)
    torch.testing.assert_close(child["sentence_vectors"].cpu(), torch.from_numpy(ours), atol=1e-5, rtol=0)


def test_remote_code_refuses_a_config_of_another_code_format(child):
    assert "format 0, older than format 1" in child["errors"]["older"]
    assert "format 2, newer than format 1" in child["errors"]["newer"]
    assert all("neobert export" in message for message in child["errors"].values())
    assert "upgrade neobert" in child["errors"]["newer"]


@pytest.mark.parametrize(
    "version, message",
    [(0, "format 0, older than format 1"), (2, "format 2, newer than format 1"), ("1", "must be an integer")],
)
def test_the_library_refuses_a_folder_of_another_code_format(folders, tmp_path, version, message):
    folder = with_code_version(folders["masked_lm"][0], tmp_path / "bad", version)
    with pytest.raises(ValueError, match=message):
        AutoConfig.from_pretrained(folder)


def test_re_exporting_an_older_folder_gives_it_the_current_code(folders, tmp_path):
    older = with_code_version(folders["masked_lm"][0], tmp_path / "older", CODE_FORMAT_VERSION - 1)
    assert main(["export", "--model", str(older), "--out", str(tmp_path / "new")]) == 0
    assert json.loads((tmp_path / "new" / "config.json").read_text())["neobert_code_version"] == CODE_FORMAT_VERSION
    assert (tmp_path / "new" / MODEL_FILE).read_text() == generate()[MODEL_FILE]
    original = AutoModelForMaskedLM.from_pretrained(folders["masked_lm"][0]).state_dict()
    rewritten = AutoModelForMaskedLM.from_pretrained(tmp_path / "new").state_dict()
    assert original.keys() == rewritten.keys()
    assert all(torch.equal(original[key], rewritten[key]) for key in original)


def test_every_registered_class_is_loaded_through_the_remote_code(folders):
    """The folders above exercise each row of the head registry: a new head must be added to them."""
    assert sorted(auto for _, auto in folders.values()) == sorted(head.auto_class for head in HEADS.values())
    assert set(LIBRARY_CLASSES) == {auto for _, auto in folders.values()}


def test_the_folder_keeps_the_released_layout(folders):
    settings = json.loads((folders["masked_lm"][0] / "config.json").read_text())
    assert settings["model_type"] == "neobert" and settings["neobert_code_version"] == CODE_FORMAT_VERSION
    assert settings["auto_map"]["AutoConfig"] == "configuration_neobert.NeoBERTConfig"
    assert settings["auto_map"]["AutoModelForTokenClassification"] == "modeling_neobert.NeoBERTForTokenClassification"
    assert {"max_length", "norm_eps", "embedding_init_range", "decoder_init_range"} <= set(settings)
    model = AutoModelForMaskedLM.from_pretrained(folders["masked_lm"][0])
    keys = set(model.state_dict())
    assert {"decoder.weight", "decoder.bias", "model.encoder.weight", "model.layer_norm.weight"} <= keys
    assert "model.transformer_encoder.0.qkv.weight" in keys and "model.transformer_encoder.1.ffn.w12.weight" in keys


def test_the_folders_code_is_generated_from_the_current_sources(folders):
    generated = generate()
    assert generate() == generated
    for folder, _ in folders.values():
        assert {name: (folder / name).read_text() for name in generated} == generated


def test_a_change_in_a_source_module_reaches_the_generated_code(tmp_path):
    copy = tmp_path / "neobert"
    shutil.copytree(package_root(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    layers = copy / "model" / "layers.py"
    marker = "SWIGLU_MARKER_FOR_THE_TEST = 7"
    layers.write_text(layers.read_text().replace("class SwiGLU(", marker + "\n\n\nclass SwiGLU(", 1))
    before, after = generate(), generate(copy)
    assert after[CONFIG_FILE] == before[CONFIG_FILE]
    assert marker not in before[MODEL_FILE]
    assert after[MODEL_FILE].replace(marker + "\n\n\n", "", 1) == before[MODEL_FILE]


def _imports(tree: ast.Module):
    """(module, level, inside a try block) of every import in the file."""
    guarded = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) for b in t.body for n in ast.walk(b)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, 0, id(node) in guarded) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level, id(node) in guarded


def test_the_generated_code_needs_only_torch_and_transformers():
    for name, text in generate().items():
        tree = ast.parse(text)
        compile(tree, name, "exec")
        for module, level, guarded in _imports(tree):
            top = module.split(".")[0]
            assert top != "neobert", f"{name} imports {module}"
            if level:
                assert (name, module, level) == (MODEL_FILE, "configuration_neobert", 1)
            elif guarded:
                assert top == "flash_attn"  # the optional backend, imported on use
            else:
                assert top in sys.stdlib_module_names or top in ("torch", "transformers"), f"{name}: {module}"


@pytest.mark.parametrize(
    "edit, message",
    [
        ("def helper():\n    from neobert.files import publish\n", "inside a function"),
        ("from neobert.files import publish\n", "not part of the generated remote code"),
        ("import numpy\n", "needs a package besides"),
        ("def make_norm():\n    pass\n", "make_norm is defined in both"),
    ],
)
def test_the_generator_refuses_what_it_cannot_make_self_contained(tmp_path, edit, message):
    copy = tmp_path / "neobert"
    shutil.copytree(package_root(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    heads = copy / "model" / "heads.py"
    heads.write_text(heads.read_text() + "\n\n" + edit)
    with pytest.raises(RemoteCodeError, match=message):
        generate(copy)
