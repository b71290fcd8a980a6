"""The held-out rule (the data.eval section): runs trained with other mask rates, lengths, sequences, batch sizes
or seeds are scored on the same sequences and masked positions; unset, it is the training recipe as before. The
older flat keys (data.eval.sequence, ...) still work, with a deprecation warning."""

import hashlib
import json

import pytest
import torch

from helpers.data import sample_texts
from neobert.data.loader import build_loader
from neobert.data.shards import DataError
from neobert.train.config import load_config
from neobert.train.data import loader_config, make_eval_batches
from neobert.train.distributed import DistributedContext
from neobert.train.held_out import DeprecatedKey

FIXED = [
    "data.eval.max_length=64",
    "data.eval.sequence=pack",
    "data.eval.mlm_probability=0.2",
    "data.eval.mask_mode=all",
    "data.eval.batch_size=4",
    "data.eval.seed=0",
    "data.eval_batches=3",
]


@pytest.fixture(scope="module")
def corpus(prepared_corpus):
    return prepared_corpus(
        sample_texts(160, seed=5, long_every=4, long_words=200), max_length=128, heldout_fraction=0.2, shard_tokens=6000
    )


def batches(corpus, *overrides):
    config = load_config([], [f"data.path={corpus}", "data.eval_batches=3", *overrides])
    return make_eval_batches(config, 8, DistributedContext())


def flat(batch_list, key):
    return torch.cat([b[key].reshape(-1) for b in batch_list])


def test_different_recipes_share_the_fixed_held_out_positions(corpus):
    reference = batches(corpus, *FIXED)
    other = batches(
        corpus,
        "data.max_length=128",
        "data.sequence=truncate",
        "data.mlm_probability=0.15",
        "data.mask_mode=bert",
        "data.batch_size=16",
        "data.seed=7",
        "data.block_documents=2",
        "data.window_blocks=3",
        *FIXED,
    )
    assert len(reference) == len(other) == 3
    for key in ("input_ids", "labels"):
        assert torch.equal(flat(reference, key), flat(other, key))
    masked = (flat(reference, "labels") != -100).float().mean().item()
    assert 0.15 < masked < 0.25  # 20% of the real tokens, all-[MASK]
    assert torch.equal(
        flat(reference, "input_ids")[flat(reference, "labels") != -100],
        torch.full_like(flat(reference, "input_ids")[flat(reference, "labels") != -100], 103),
    )
    # Four packs of the fixed 64-token budget (best fit leaves a few slots of some packs empty).
    assert 0.9 * 4 * 64 <= reference[0]["input_ids"].numel() <= 4 * 64


def test_unset_rule_follows_the_training_recipe(corpus):
    as_training = batches(corpus, "data.max_length=64", "data.sequence=pack", "data.mask_mode=bert", "data.seed=3")
    explicit = batches(
        corpus,
        "data.max_length=64",
        "data.sequence=pack",
        "data.mask_mode=bert",
        "data.seed=3",
        "data.eval.max_length=64",
        "data.eval.mask_mode=bert",
        "data.eval.seed=3",
        "data.eval.batch_size=8",
    )
    for key in ("input_ids", "labels"):
        assert torch.equal(flat(as_training, key), flat(explicit, key))
    assert not torch.equal(
        flat(as_training, "labels"),
        flat(
            batches(corpus, "data.max_length=64", "data.sequence=pack", "data.mask_mode=bert", "data.seed=4"), "labels"
        ),
    )


def test_bad_held_out_settings_name_the_key(corpus):
    with pytest.raises(ValueError, match="data.eval.mlm_probability must lie in"):
        batches(corpus, "data.eval.mlm_probability=1.5")
    with pytest.raises(ValueError, match="data.eval.batch_size must be positive"):
        batches(corpus, "data.eval.batch_size=0")


def test_identity_scoring_follows_the_training_recipe_unless_the_rule_turns_it_off(corpus):
    plain = batches(corpus, "data.mask_mode=bert")
    widened = batches(corpus, "data.mask_mode=bert", "data.mlm_identity_probability=0.1")
    widened_recipe = ("data.mask_mode=bert", "data.mlm_identity_probability=0.1")
    off = batches(corpus, *widened_recipe, "data.eval.mlm_identity_probability=0")
    assert torch.equal(flat(widened, "input_ids"), flat(plain, "input_ids"))
    scored_plain, scored_widened = (flat(b, "labels") != -100 for b in (plain, widened))
    assert (scored_widened & ~scored_plain).sum() > 0.05 * (flat(plain, "attention_mask") > 0).sum()
    for key in ("input_ids", "labels"):
        assert torch.equal(flat(off, key), flat(plain, key))


def test_an_identity_share_without_room_names_the_key(corpus):
    with pytest.raises(ValueError, match=r"data.mlm_identity_probability must lie in \[0, 1 - mlm_probability\)"):
        batches(corpus, "data.mlm_identity_probability=0.9")
    with pytest.raises(
        ValueError, match=r"data.eval.mlm_identity_probability must lie in \[0, 1 - mlm_probability\) = \[0, 0.5\)"
    ):
        batches(corpus, "data.eval.mlm_probability=0.5", "data.eval.mlm_identity_probability=0.6")


def test_the_held_out_order_does_not_follow_the_training_orders_defaults(corpus, monkeypatch):
    from neobert.train.config import DataSection

    reference = batches(corpus, *FIXED)
    monkeypatch.setattr(DataSection, "block_documents", 1)
    monkeypatch.setattr(DataSection, "window_blocks", 1)
    moved = batches(corpus, *FIXED)
    for key in ("input_ids", "labels"):
        assert torch.equal(flat(reference, key), flat(moved, key))


def digest(batch_list) -> str:
    hashed = hashlib.sha256()
    for batch in batch_list:
        for key in ("input_ids", "labels"):
            hashed.update(batch[key].to(torch.int64).numpy().tobytes())
    return hashed.hexdigest()[:16]


# Held-out batches of this module's corpus, computed before the loader took the data section's words (at
# 7aa349a, with the flat data.eval_* keys): (batches, masked positions, digest of input_ids and labels). The
# rule must go on giving these very batches: every earlier figure was scored on them.
DEMO_RULE = [
    "data.eval.max_length=128",
    "data.eval.sequence=pack",
    "data.eval.mlm_probability=0.2",
    "data.eval.mask_mode=all",
    "data.eval.mlm_identity_probability=0.0",
    "data.eval.batch_size=32",
    "data.eval.seed=0",
]
AS_TRAINING = [
    "data.max_length=64",
    "data.sequence=pack_naive",
    "data.mask_mode=bert",
    "data.mlm_identity_probability=0.1",
    "data.seed=3",
]
PINNED = {
    "demo": (DEMO_RULE, (1, 547, "8f41acd70fd6d003")),
    "fixed": (FIXED, (3, 124, "5f43acacf635cd2d")),
    "as_training": (AS_TRAINING, (3, 447, "c16c7cd8a1525018")),
    "truncate": (
        ["data.max_length=128", "data.eval.mask_mode=bert", "data.eval.seed=2"],
        (3, 376, "4b8417047ecea4a5"),
    ),
}


@pytest.mark.parametrize("name", PINNED)
def test_the_held_out_batches_are_those_of_before(corpus, name):
    overrides, expected = PINNED[name]
    got = batches(corpus, *overrides)
    assert (len(got), sum(int((b["labels"] != -100).sum()) for b in got), digest(got)) == expected


def test_the_flat_keys_of_before_still_work_and_name_the_new_ones(corpus, tmp_path):
    flat = [key.replace("data.eval.", "data.eval_") for key in DEMO_RULE]
    with pytest.warns(DeprecationWarning, match=r"data.eval_seed is deprecated; write data.eval.seed") as caught:
        old = batches(corpus, *flat)
    assert all(issubclass(w.category, DeprecatedKey) for w in caught)
    assert digest(old) == PINNED["demo"][1][2]
    preset = tmp_path / "old.yaml"
    preset.write_text("data:\n  eval_sequence: pack\n  eval_max_length: 128\n  eval_seed: 0\n", encoding="utf-8")
    with pytest.warns(
        DeprecationWarning, match=r"old.yaml: data.eval_sequence, data.eval_max_length, data.eval_seed are"
    ):
        config = load_config([preset], [f"data.path={corpus}", "data.eval.batch_size=32"])
    assert (config.data.eval.sequence, config.data.eval.max_length, config.data.eval.seed) == ("pack", 128, 0)
    # A later source wins whichever form it uses; one source giving both forms must agree.
    assert load_config([preset], ["data.eval_max_length=64"]).data.eval.max_length == 64
    preset.write_text("data:\n  eval_seed: 1\n  eval: {seed: 2}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="data.eval_seed and data.eval.seed disagree"):
        load_config([preset])


# A loader state saved before the loader took the data section's words (scheme, layout, nested masking), at
# 7aa349a after three batches of AS_TRAINING's training loader (micro-batch 4), and the digest of the next two.
OLD_STATE = {
    "version": 3,
    "position": [0, 0, 12],
    "taken": 12,
    "chunks": 3,
    "boundary": {"position": [0, 0, 12], "taken": 12, "chunks": 3},
    "placement": {"rank": 0, "world_size": 1, "batch_size": 4},
    "identity": {
        "config": {
            "split": "train",
            "scheme": "pack",
            "layout": "rows",
            "max_length": 64,
            "pad_to_multiple_of": 8,
            "block_documents": 8,
            "window_blocks": 256,
            "min_document_tokens": 0,
            "length_mixture": [],
            "masking": {"rate": 0.2, "strategy": "80_10_10", "identity_rate": 0.1},
            "seed": 3,
        },
        "max_length": 64,
        "documents": 129,
        "shards": 3,
        "stream": 0,
    },
}


def test_a_loader_state_saved_in_the_old_words_resumes_where_it_stood(corpus):
    config = load_config([], [f"data.path={corpus}", *AS_TRAINING])
    loader = build_loader(loader_config(config, "train", 4), 0, 1)
    loader.load_state_dict(json.loads(json.dumps(OLD_STATE)))
    assert digest([next(loader) for _ in range(2)]) == "c8e85b34b38c1681"
    # It names the same setup as a state saved now, and another setup is still refused.
    fresh = build_loader(loader_config(config, "train", 4), 0, 1)
    for _ in range(3):
        next(fresh)
    assert fresh.state_dict()["position"] == OLD_STATE["position"]
    other = load_config([], [f"data.path={corpus}", *AS_TRAINING, "data.sequence=pack"])
    with pytest.raises(DataError, match="differs in: config"):
        build_loader(loader_config(other, "train", 4), 0, 1).load_state_dict(OLD_STATE)


def test_the_data_section_the_held_out_rule_and_the_loader_share_their_names():
    from dataclasses import fields

    from neobert.data.loader import LoaderConfig
    from neobert.train.config import DataSection
    from neobert.train.held_out import SAMPLE_SETTINGS, HeldOutSection

    names = set(SAMPLE_SETTINGS)
    assert names <= {f.name for f in fields(DataSection)} and names <= {f.name for f in fields(LoaderConfig)}
    assert {f.name for f in fields(HeldOutSection)} == names | {"batch_size"}
