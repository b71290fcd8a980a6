"""What `neobert export` and `save_pretrained` write: the model code unless asked not to, config.json
pointing only at files the folder has, and permissions that follow the user's umask."""

import json
import os
import stat

import pytest
from transformers import AutoModelForMaskedLM

from helpers.model import small_config
from neobert import NeoBERTForMaskedLM
from neobert.cli import main
from neobert.config import CODE_FORMAT_VERSION
from neobert.export.folder import export_model
from neobert.model.remote_code import CONFIG_FILE, MODEL_FILE, generate

CODE_KEYS = ("auto_map", "neobert_code_version")


@pytest.fixture
def raw(tmp_path, tokenizer):
    folder = tmp_path / "raw"
    NeoBERTForMaskedLM(small_config()).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def settings(folder):
    return json.loads((folder / "config.json").read_text())


def has_code(folder) -> bool:
    return (folder / CONFIG_FILE).is_file() and (folder / MODEL_FILE).is_file()


def test_a_plain_save_carries_no_code(raw):
    assert not has_code(raw) and not set(CODE_KEYS) & set(settings(raw))


def test_export_without_code_points_at_no_code(raw, tmp_path):
    out = tmp_path / "bare"
    assert main(["export", "--model", str(raw), "--out", str(out), "--without-code"]) == 0
    assert not has_code(out) and not set(CODE_KEYS) & set(settings(out))
    assert type(AutoModelForMaskedLM.from_pretrained(out)) is NeoBERTForMaskedLM


def test_a_model_loaded_from_an_export_saves_its_code_again_unless_told_not_to(raw, tmp_path):
    exported = export_model(raw, tmp_path / "exported")
    model = AutoModelForMaskedLM.from_pretrained(exported)
    model.save_pretrained(tmp_path / "again")
    assert has_code(tmp_path / "again") and settings(tmp_path / "again")["neobert_code_version"] == CODE_FORMAT_VERSION
    assert (tmp_path / "again" / MODEL_FILE).read_text() == generate()[MODEL_FILE]

    model.save_pretrained(tmp_path / "plain", self_contained=False)
    assert not has_code(tmp_path / "plain") and not set(CODE_KEYS) & set(settings(tmp_path / "plain"))
    assert model.config.neobert_code_version == CODE_FORMAT_VERSION  # the model itself is unchanged
    assert type(AutoModelForMaskedLM.from_pretrained(tmp_path / "plain")) is NeoBERTForMaskedLM


@pytest.fixture
def umask():
    def set_mask(mask):
        os.umask(mask)

    previous = os.umask(0o022)
    yield set_mask
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o002, 0o027])
def test_export_follows_the_umask(raw, tmp_path, umask, mask):
    umask(mask)
    out = export_model(raw, tmp_path / f"out{mask:o}")
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask
    for name in ("config.json", "model.safetensors", MODEL_FILE, "tokenizer.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~mask, name
