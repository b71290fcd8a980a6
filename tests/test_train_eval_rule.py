"""The held-out rule (data.eval_*): runs trained with other mask rates, lengths, schemes, batch sizes or seeds
are scored on the same sequences and masked positions; unset, it is the training recipe as before."""

import pytest
import torch

from data_helpers import prepare_files, sample_texts, write_jsonl
from neobert.train.config import load_config
from neobert.train.data import make_eval_batches
from neobert.train.distributed import DistributedContext

FIXED = [
    "data.eval_max_length=64",
    "data.eval_sequence=pack",
    "data.eval_mlm_probability=0.2",
    "data.eval_mask_mode=all",
    "data.eval_batch_size=4",
    "data.eval_seed=0",
    "data.eval_batches=3",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval-rule")
    write_jsonl(folder / "in.jsonl", sample_texts(160, seed=5, long_every=4, long_words=200))
    prepare_files([folder / "in.jsonl"], folder / "out", max_length=128, heldout_fraction=0.2, shard_tokens=6000)
    return folder / "out"


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
        "data.eval_max_length=64",
        "data.eval_mask_mode=bert",
        "data.eval_seed=3",
        "data.eval_batch_size=8",
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
    with pytest.raises(ValueError, match="data.eval_mlm_probability must lie in"):
        batches(corpus, "data.eval_mlm_probability=1.5")
    with pytest.raises(ValueError, match="data.eval_batch_size must be positive"):
        batches(corpus, "data.eval_batch_size=0")


def test_identity_scoring_follows_the_training_recipe_unless_the_rule_turns_it_off(corpus):
    plain = batches(corpus, "data.mask_mode=bert")
    widened = batches(corpus, "data.mask_mode=bert", "data.mlm_identity_probability=0.1")
    widened_recipe = ("data.mask_mode=bert", "data.mlm_identity_probability=0.1")
    off = batches(corpus, *widened_recipe, "data.eval_mlm_identity_probability=0")
    assert torch.equal(flat(widened, "input_ids"), flat(plain, "input_ids"))
    scored_plain, scored_widened = (flat(b, "labels") != -100 for b in (plain, widened))
    assert (scored_widened & ~scored_plain).sum() > 0.05 * (flat(plain, "attention_mask") > 0).sum()
    for key in ("input_ids", "labels"):
        assert torch.equal(flat(off, key), flat(plain, key))


def test_an_identity_share_without_room_names_the_key(corpus):
    with pytest.raises(ValueError, match=r"data.mlm_identity_probability must lie in \[0, 1 - mlm_probability\)"):
        batches(corpus, "data.mlm_identity_probability=0.9")
    with pytest.raises(ValueError, match="data.eval_mlm_identity_probability must lie in"):
        batches(corpus, "data.eval_mlm_probability=0.5", "data.eval_mlm_identity_probability=0.6")


def test_the_held_out_order_does_not_follow_the_training_orders_defaults(corpus, monkeypatch):
    from neobert.train.config import DataSection

    reference = batches(corpus, *FIXED)
    monkeypatch.setattr(DataSection, "block_documents", 1)
    monkeypatch.setattr(DataSection, "window_blocks", 1)
    moved = batches(corpus, *FIXED)
    for key in ("input_ids", "labels"):
        assert torch.equal(flat(reference, key), flat(moved, key))
