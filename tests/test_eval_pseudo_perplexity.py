"""Pseudo-perplexity: the batched computation equals the one-position-at-a-time definition; the command."""

import json
import math

import torch

from conftest import small_config
from finetune_helpers import tiny_model_folder
from neobert import NeoBERTForMaskedLM
from neobert.cli import main
from neobert.eval.pseudo_perplexity import (
    masked_losses,
    masked_losses_naive,
    pseudo_perplexity,
    scored_positions,
    windows,
)


def test_batched_masking_equals_the_definition(tokenizer):
    model = NeoBERTForMaskedLM(small_config()).eval()
    ids = tokenizer("The quick brown fox jumps over the lazy dog near the river bank.")["input_ids"]
    positions = scored_positions(ids, set(tokenizer.all_special_ids))
    assert positions == list(range(1, len(ids) - 1))
    naive = masked_losses_naive(model, ids, tokenizer.mask_token_id, positions)
    # By hand for one position: mask it, read the true token's log-probability.
    masked = torch.tensor([ids])
    masked[0, 3] = tokenizer.mask_token_id
    by_hand = -torch.log_softmax(model(input_ids=masked).logits[0, 3], -1)[ids[3]]
    torch.testing.assert_close(naive[2], by_hand.detach())
    for batch_size in (1, 4, 64):
        batched = masked_losses(model, ids, tokenizer.mask_token_id, positions, batch_size)
        torch.testing.assert_close(batched, naive, rtol=1e-5, atol=1e-5)
    assert pseudo_perplexity(naive) == math.exp(naive.double().mean().item())


def test_windows_have_the_exact_length():
    chosen = windows(list(range(1000, 1020)), 8, 5, 101, 102)
    assert [len(w) for w in chosen] == [8, 8, 8]
    assert chosen[1] == [101, *range(1006, 1012), 102]


def test_the_command_writes_a_table_and_a_plot_beyond_the_training_length(tmp_path):
    model = tiny_model_folder(tmp_path / "model", max_length=32)
    text = tmp_path / "held-out.txt"
    text.write_text("\n".join(f"line {i} of some held out english text about cats and dogs." for i in range(20)))
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(model), "--pseudo-perplexity", str(text), "--out", str(out)]
    assert main([*args, "--lengths", "16,64", "--sequences", "2", "--max-positions", "8"]) == 0
    report = json.loads((out / "evaluate.json").read_text())["pseudo_perplexity"]
    assert [r["length"] for r in report["results"]] == [16, 64]
    assert [r["beyond_training_length"] for r in report["results"]] == [False, True]
    assert report["results"][1]["scored_tokens"] == 16 and report["results"][0]["pseudo_perplexity"] > 1
    assert (out / "pseudo_perplexity.png").stat().st_size > 1000
    assert "| 64 | 2 | 16 |" in (out / "pseudo_perplexity.md").read_text()
    assert main(["evaluate", "--model", str(tmp_path), "--pseudo-perplexity", str(text)]) == 2
