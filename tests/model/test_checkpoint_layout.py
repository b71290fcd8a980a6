"""Weight compatibility with the released checkpoint, both ways, proven on checkpoints built from
explicit tensors and an independent re-statement of the released maths (helpers/official_reference.py)."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

from helpers.model import random_ids, small_config
from helpers.official_reference import pack_official, random_semantic_weights, reference_forward, unpack_official
from neobert import NeoBERTConfig, NeoBERTForMaskedLM, NeoBERTModel

RELEASED_AUTO_MAP = {
    "AutoConfig": "model.NeoBERTConfig",
    "AutoModel": "model.NeoBERT",
    "AutoModelForMaskedLM": "model.NeoBERTLMHead",
    "AutoModelForSequenceClassification": "model.NeoBERTForSequenceClassification",
}


def released_config_json(cfg) -> dict:
    """config.json as the hub snapshot has it (spec A.1), resized to `cfg`."""
    return {
        "architectures": ["NeoBERTLMHead"],
        "auto_map": RELEASED_AUTO_MAP,
        "classifier_init_range": 0.02,
        "decoder_init_range": 0.02,
        "dim_head": cfg.hidden_size // cfg.num_attention_heads,
        "embedding_init_range": 0.02,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "kwargs": {
            "classifier_init_range": 0.02,
            "pretrained_model_name_or_path": "google-bert/bert-base-uncased",
            "trust_remote_code": True,
        },
        "max_length": 4096,
        "model_type": "neobert",
        "norm_eps": 1e-05,
        "num_attention_heads": cfg.num_attention_heads,
        "num_hidden_layers": cfg.num_hidden_layers,
        "pad_token_id": 0,
        "pretrained_model_name_or_path": "google-bert/bert-base-uncased",
        "torch_dtype": "float32",
        "transformers_version": "4.48.2",
        "trust_remote_code": True,
        "vocab_size": cfg.vocab_size,
    }


@pytest.fixture
def hub_snapshot(tmp_path, tokenizer):
    """A folder laid out like a download of chandar-lab/NeoBERT, with known weights."""
    cfg = small_config()
    weights = random_semantic_weights(cfg)
    (tmp_path / "config.json").write_text(json.dumps(released_config_json(cfg), indent=2))
    save_file(pack_official(weights, cfg), str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(tmp_path)
    return tmp_path, weights, cfg


def test_released_key_names_and_shapes_for_the_250m_preset():
    with torch.device("meta"):
        model = NeoBERTForMaskedLM(NeoBERTConfig.from_preset("neobert-250m"))
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    expected = {"model.encoder.weight": (30522, 768), "model.layer_norm.weight": (768,)}
    for n in range(28):
        p = f"model.transformer_encoder.{n}."
        expected.update(
            {
                p + "qkv.weight": (2304, 768),
                p + "wo.weight": (768, 768),
                p + "ffn.w12.weight": (4096, 768),
                p + "ffn.w3.weight": (768, 2048),
                p + "attention_norm.weight": (768,),
                p + "ffn_norm.weight": (768,),
            }
        )
    expected.update({"decoder.weight": (30522, 768), "decoder.bias": (30522,)})
    assert shapes == expected
    assert len(shapes) == 172


def test_parameter_counts_of_the_250m_preset():
    with torch.device("meta"):
        model = NeoBERTForMaskedLM(NeoBERTConfig.from_preset("neobert-250m"))
    assert sum(p.numel() for p in model.model.parameters()) == 221_665_536
    assert sum(p.numel() for p in model.parameters()) == 245_136_954


def test_hub_snapshot_loads_without_remote_code_and_matches_the_released_maths(hub_snapshot, tokenizer):
    folder, weights, cfg = hub_snapshot
    model = AutoModelForMaskedLM.from_pretrained(folder).eval()
    assert type(model) is NeoBERTForMaskedLM
    assert model.config.max_length == 4096 and model.config.norm_eps == 1e-5
    batch = tokenizer(
        ["the quick brown fox", "jumps over the lazy dog near the river"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**batch).logits
    _, expected = reference_forward(weights, cfg, batch["input_ids"], batch["attention_mask"])
    real = batch["attention_mask"].bool()
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits[real].double(), expected[real], atol=2e-4, rtol=1e-4)


def test_backbone_and_classifier_load_from_the_masked_lm_snapshot(hub_snapshot):
    folder, weights, cfg = hub_snapshot
    backbone = AutoModel.from_pretrained(folder).eval()
    assert type(backbone) is NeoBERTModel
    ids = random_ids(2, 12)
    with torch.no_grad():
        hidden = backbone(input_ids=ids).last_hidden_state
    expected, _ = reference_forward(weights, cfg, ids)
    torch.testing.assert_close(hidden.double(), expected, atol=2e-4, rtol=1e-4)
    classifier = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3)
    torch.testing.assert_close(classifier.model.encoder.weight, backbone.encoder.weight)
    assert classifier.classifier.weight.shape == (3, cfg.hidden_size)


@pytest.mark.parametrize("wrong", ["qkv_blocks", "w12_swapped"])
def test_the_layout_rules_are_load_bearing(hub_snapshot, wrong):
    """Negative control: the common [Wq; Wk; Wv] layout or an up-first SwiGLU gives other outputs,
    so the agreement above really checks the per-head and gate-first rules."""
    folder, weights, cfg = hub_snapshot
    state = pack_official(weights, cfg)
    key = "model.transformer_encoder.0." + ("qkv.weight" if wrong == "qkv_blocks" else "ffn.w12.weight")
    layer = weights["layers"][0]
    if wrong == "qkv_blocks":
        state[key] = torch.cat([layer["wq"], layer["wk"], layer["wv"]]).float()
    else:
        state[key] = torch.cat([layer["up"], layer["gate"]]).float()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    model = AutoModelForMaskedLM.from_pretrained(folder).eval()
    ids = random_ids(1, 10)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    _, expected = reference_forward(weights, cfg, ids)
    assert (logits.double() - expected).abs().max() > 1e-2


def test_saved_checkpoint_is_in_the_official_format(tmp_path):
    cfg = small_config()
    model = NeoBERTForMaskedLM(cfg).eval()
    model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    assert set(state) == set(pack_official(random_semantic_weights(cfg), cfg))
    saved = json.loads((tmp_path / "config.json").read_text())
    # The fields the official NeoBERTConfig reads, with the values the official code needs.
    for key in (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "vocab_size",
        "pad_token_id",
        "max_length",
        "norm_eps",
        "embedding_init_range",
        "decoder_init_range",
    ):
        assert saved[key] == getattr(cfg, key), key
    assert saved["model_type"] == "neobert"
    # Read back by the independent reference: the saved tensors mean what the official code expects.
    ids = random_ids(2, 9)
    with torch.no_grad():
        hidden = model.model(input_ids=ids).last_hidden_state
        logits = model(input_ids=ids).logits
    ref_hidden, ref_logits = reference_forward(unpack_official(state, cfg), cfg, ids)
    torch.testing.assert_close(hidden.double(), ref_hidden, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits.double(), ref_logits, atol=1e-4, rtol=1e-4)


def test_released_config_reads_as_it_is_and_saves_max_length(tmp_path):
    cfg = small_config()
    (tmp_path / "config.json").write_text(json.dumps(released_config_json(cfg)))
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, NeoBERTConfig)
    assert loaded.max_length == 4096 and loaded.dim_head == 16 and loaded.auto_map == RELEASED_AUTO_MAP
    assert not hasattr(loaded, "trust_remote_code") and not hasattr(loaded, "kwargs")
    loaded.save_pretrained(tmp_path / "again")  # transformers 5 refuses a stray generation `max_length`
    saved = json.loads((tmp_path / "again" / "config.json").read_text())
    assert saved["max_length"] == 4096 and saved["auto_map"] == RELEASED_AUTO_MAP
    assert "trust_remote_code" not in saved and "kwargs" not in saved


def test_save_and_reload_round_trip_is_exact(tmp_path):
    model = NeoBERTForMaskedLM(small_config()).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    again = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    ids = random_ids(2, 7)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)
