"""A config.json that does not describe its weights is refused: every architecture field must be stated
(a missing `num_hidden_layers` used to load a 2-layer checkpoint as 28 layers, 26 of them random)."""

import json

import pytest
from transformers import AutoModel

from helpers.embed import exported_model
from helpers.model import small_config
from neobert import NeoBERTConfig, NeoBERTForMaskedLM
from neobert.cli import main
from neobert.config import ARCHITECTURE_FIELDS


@pytest.mark.parametrize("field", ARCHITECTURE_FIELDS)
def test_a_config_json_without_an_architecture_field_is_refused_naming_it(tmp_path, field):
    NeoBERTForMaskedLM(small_config()).save_pretrained(tmp_path)
    settings = json.loads((tmp_path / "config.json").read_text())
    AutoModel.from_pretrained(tmp_path)  # complete: loads
    del settings[field]
    (tmp_path / "config.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match=f"config.json does not state {field}: "):
        AutoModel.from_pretrained(tmp_path)


def test_encode_on_such_a_folder_fails_with_one_line(tmp_path, capsys):
    folder = exported_model(tmp_path)
    settings = json.loads((folder / "config.json").read_text())
    del settings["num_hidden_layers"]
    (folder / "config.json").write_text(json.dumps(settings))
    (tmp_path / "texts.txt").write_text("hello\n")
    out = tmp_path / "vectors.npy"
    assert main(["encode", "--model", str(folder), "--input", str(tmp_path / "texts.txt"), "--out", str(out)]) == 2
    assert "config.json does not state num_hidden_layers" in capsys.readouterr().err and not out.exists()


def test_building_a_config_in_code_keeps_its_defaults():
    assert NeoBERTConfig().num_hidden_layers == 28  # only a saved config.json must state every field
    assert NeoBERTConfig.from_dict({**small_config().to_dict()}).num_hidden_layers == 2
