"""Attention goes through transformers' attention interface: a function registered with transformers under a
new name runs every layer, receives the keyword arguments given to the model, and computes what the library's
sdpa computes; the library's own backends are one registry, which the training configuration reads."""

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

import neobert
from helpers.model import random_ids, small_config
from neobert.model.attention import ATTENTION_FUNCTIONS, BACKENDS
from neobert.train.config import ATTENTION_BACKENDS, ModelSection

pytestmark = pytest.mark.usefixtures("one_thread")

LENGTHS = [9, 3, 14, 6]


class Probe:
    """An attention function as a serving engine registers one: it records each call and hands the work to
    transformers' own sdpa (`per_document`: one call per packed document, from the boundaries it is given,
    as vLLM's kernels do with their own metadata)."""

    def __init__(self, per_document: bool = False):
        self.calls = []
        self.per_document = per_document

    def __call__(self, module, query, key, value, attention_mask, **kwargs):
        self.calls.append(dict(module=module, mask=attention_mask, kwargs=kwargs))
        transformers_sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
        if not self.per_document:
            return transformers_sdpa(module, query, key, value, attention_mask, **kwargs)
        bounds = kwargs["cu_seq_lens_q"].tolist()
        pieces = [
            transformers_sdpa(module, *(t[:, :, a:b] for t in (query, key, value)), None, **kwargs)[0]
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        return torch.cat(pieces, dim=1), None


@pytest.fixture
def register():
    """Registers attention functions (and optionally transformers' sdpa mask) under new names; removes them."""
    names = []

    def add(name, function, with_mask: bool):
        AttentionInterface.register(name, function)
        if with_mask:
            AttentionMaskInterface.register(name, sdpa_mask)
        names.append(name)
        return function

    yield add
    for name in names:
        AttentionInterface._global_mapping.pop(name, None)
        AttentionMaskInterface._global_mapping.pop(name, None)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("interface") / "model"
    neobert.NeoBERTForSequenceClassification(small_config(num_labels=3)).save_pretrained(path)
    return path


def padded_batch():
    torch.manual_seed(1)
    width = max(LENGTHS)
    ids = torch.zeros(len(LENGTHS), width, dtype=torch.long)
    mask = torch.zeros(len(LENGTHS), width, dtype=torch.long)
    for row, n in enumerate(LENGTHS):
        ids[row, :n] = random_ids(1, n)[0]
        mask[row, :n] = 1
    return ids, mask


def library_sdpa(folder, **inputs):
    model = AutoModel.from_pretrained(folder, attn_implementation="sdpa").eval()
    assert model.config._attn_implementation == "sdpa"
    with torch.no_grad():
        return model(**inputs).last_hidden_state


def test_the_configurations_choices_are_the_registrys_keys():
    assert tuple(BACKENDS) == tuple(ATTENTION_FUNCTIONS) == tuple(ATTENTION_BACKENDS)
    assert set(BACKENDS) == {"sdpa", "eager", "flex_attention", "flash_attention_2"}
    with pytest.raises(ValueError, match="model.attention must be one of"):
        ModelSection(attention="bogus")


def test_a_backend_added_to_the_registry_is_a_choice_everywhere(folder, monkeypatch):
    """A new backend is one entry in ATTENTION_FUNCTIONS: the training configuration takes its name, and the
    model takes it at load, at construction and at run time (transformers' own check would refuse a name it
    has no function for), then runs it in every layer."""
    calls = []

    def counted_sdpa(module, *args, **kwargs):
        calls.append(module.layer_idx)
        return ATTENTION_FUNCTIONS["sdpa"](module, *args, **kwargs)

    name = "neobert_counted_sdpa"
    with pytest.raises(ValueError, match="model.attention must be one of"):
        ModelSection(attention=name)
    with pytest.raises(ValueError, match="is not supported"):
        AutoModel.from_pretrained(folder, attn_implementation=name)
    monkeypatch.setitem(ATTENTION_FUNCTIONS, name, counted_sdpa)
    assert name in BACKENDS and name not in ALL_ATTENTION_FUNCTIONS.valid_keys()
    section = ModelSection(preset="tiny", attention=name)
    assert neobert.NeoBERTModel(section.neobert_config()).config._attn_implementation == name
    ids, mask = padded_batch()
    reference = library_sdpa(folder, input_ids=ids, attention_mask=mask)
    switched = AutoModel.from_pretrained(folder).eval()
    switched.set_attn_implementation(name)
    for model in (AutoModel.from_pretrained(folder, attn_implementation=name).eval(), switched):
        assert model.config._attn_implementation == name
        calls.clear()
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        assert calls == list(range(model.config.num_hidden_layers))
        torch.testing.assert_close(hidden, reference, atol=1e-5, rtol=1e-5)


def test_the_model_declares_what_the_transformers_backends_check():
    model = neobert.NeoBERTModel(small_config())
    assert type(model).is_backend_compatible() and type(model)._supports_attention_backend
    assert [block.layer_idx for block in model.transformer_encoder] == list(range(small_config().num_hidden_layers))
    assert all(block.is_causal is False for block in model.transformer_encoder)


def test_a_function_registered_with_transformers_runs_every_layer_and_equals_sdpa(folder, register):
    probe = register("neobert_probe", Probe(), with_mask=True)
    model = AutoModel.from_pretrained(folder, attn_implementation="neobert_probe").eval()
    assert model.config._attn_implementation == "neobert_probe"
    ids, mask = padded_batch()
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    layers = model.config.num_hidden_layers
    assert len(probe.calls) == layers
    assert [call["module"].layer_idx for call in probe.calls] == list(range(layers))
    assert all(call["kwargs"]["is_causal"] is False and call["module"].is_causal is False for call in probe.calls)
    # transformers' own bidirectional padding mask, built once for all layers
    assert probe.calls[0]["mask"].shape == (len(LENGTHS), 1, max(LENGTHS), max(LENGTHS))
    assert probe.calls[0]["mask"] is probe.calls[1]["mask"]
    reference = library_sdpa(folder, input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(hidden, reference, atol=1e-5, rtol=1e-5)


def test_packed_documents_stay_apart_under_a_registered_function(folder, register):
    probe = register("neobert_probe_packed", Probe(), with_mask=True)
    model = AutoModel.from_pretrained(folder, attn_implementation="neobert_probe_packed").eval()
    ids, mask = padded_batch()
    flat = ids[mask.bool()][None]
    cu = torch.tensor([0, *torch.tensor(LENGTHS).cumsum(0).tolist()], dtype=torch.int32)
    with torch.no_grad():
        hidden = model(input_ids=flat, cu_seqlens=cu).last_hidden_state
    assert len(probe.calls) == model.config.num_hidden_layers
    assert probe.calls[0]["kwargs"]["cu_seq_lens_q"].tolist() == cu.tolist()
    reference = library_sdpa(folder, input_ids=ids, attention_mask=mask)[mask.bool()]
    torch.testing.assert_close(hidden[0], reference, atol=1e-5, rtol=1e-5)


def test_a_serving_engines_call_without_a_mask_function(folder, register):
    """As vLLM calls the model: every request's tokens in one row, positions restarting at 0 per request, no
    attention mask, and a function with no mask function registered (transformers builds no mask for it)."""
    probe = register("neobert_probe_engine", Probe(per_document=True), with_mask=False)
    model = AutoModel.from_pretrained(folder, attn_implementation="neobert_probe_engine").eval()
    ids, mask = padded_batch()
    flat = ids[mask.bool()][None]
    positions = torch.cat([torch.arange(n) for n in LENGTHS])[None]
    with torch.no_grad():
        hidden = model(input_ids=flat, position_ids=positions, use_cache=False, return_dict=False)[0]
    assert len(probe.calls) == model.config.num_hidden_layers
    assert all(call["mask"] is None for call in probe.calls)
    reference = library_sdpa(folder, input_ids=ids, attention_mask=mask)[mask.bool()]
    torch.testing.assert_close(hidden[0], reference, atol=1e-5, rtol=1e-5)


def test_keyword_arguments_reach_attention_through_a_head(folder, register):
    probe = register("neobert_probe_kwargs", Probe(), with_mask=True)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    model.set_attn_implementation("neobert_probe_kwargs")
    ids, mask = padded_batch()
    marker = object()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, engine_state=marker).logits
    assert [call["kwargs"]["engine_state"] for call in probe.calls] == [marker] * model.config.num_hidden_layers
    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        torch.testing.assert_close(logits, model(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=1e-5)


def test_the_librarys_names_run_the_librarys_backends(folder, register):
    """ "sdpa" is the library's (no mask built, the packed path kept), not transformers' function of that name."""
    model = AutoModel.from_pretrained(folder, attn_implementation="sdpa").eval()
    seen = []
    original = AttentionInterface._global_mapping["sdpa"]
    AttentionInterface._global_mapping["sdpa"] = lambda *a, **k: seen.append(1) or original(*a, **k)
    try:
        with torch.no_grad():
            model(input_ids=random_ids(2, 5))
    finally:
        AttentionInterface._global_mapping["sdpa"] = original
    assert seen == []
