"""What `neobert export` writes: permissions that follow the user's umask."""

import os
import stat

import pytest

from conftest import small_config
from neobert import NeoBERTForMaskedLM
from neobert.export import export_model


@pytest.fixture
def raw(tmp_path, tokenizer):
    folder = tmp_path / "raw"
    NeoBERTForMaskedLM(small_config()).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


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
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~mask, name
