"""Pseudo-perplexity: the batched computation equals the one-position-at-a-time definition; the command."""

import json
import math

import pytest
import torch

from helpers.finetune import tiny_model_folder
from helpers.model import small_config
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


def pseudo_perplexity_by_hand(model, tokenizer, lines: list[str], length: int, count: int, scored: int) -> float:
    """The definition, step by step: the lines' tokens end to end, cut into [CLS] + (length - 2) + [SEP]
    windows, `scored` positions evenly spaced over each window's body, each masked alone."""
    stream = [t for line in lines for t in tokenizer(line, add_special_tokens=False)["input_ids"]]
    body = length - 2
    losses = []
    for start in range(0, body * count, body):
        ids = torch.tensor([tokenizer.cls_token_id, *stream[start : start + body], tokenizer.sep_token_id])
        for position in [1 + int(i * body / scored) for i in range(scored)]:
            masked = ids.clone()
            masked[position] = tokenizer.mask_token_id
            with torch.no_grad():
                logits = model(input_ids=masked[None]).logits[0, position]
            losses.append(-torch.log_softmax(logits.double(), -1)[ids[position]].item())
    return math.exp(sum(losses) / len(losses))


def test_the_command_writes_a_table_and_a_plot_beyond_the_training_length(tmp_path, tokenizer):
    model = tiny_model_folder(tmp_path / "model", max_length=32)
    text = tmp_path / "held-out.txt"
    lines = [f"line {i} of some held out english text about cats and dogs." for i in range(20)]
    text.write_text("\n".join(lines))
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(model), "--pseudo-perplexity", str(text), "--out", str(out)]
    assert main([*args, "--lengths", "16,64", "--sequences", "2", "--max-positions", "8"]) == 0
    report = json.loads((out / "evaluate.json").read_text())["pseudo_perplexity"]
    assert [r["length"] for r in report["results"]] == [16, 64]
    assert [r["beyond_training_length"] for r in report["results"]] == [False, True]
    assert [r["scored_tokens"] for r in report["results"]] == [16, 16]  # 2 sequences x 8 positions
    loaded = NeoBERTForMaskedLM.from_pretrained(model).eval()
    for result in report["results"]:
        expected = pseudo_perplexity_by_hand(loaded, tokenizer, lines, result["length"], count=2, scored=8)
        assert result["pseudo_perplexity"] == pytest.approx(expected, rel=1e-5)
    assert (out / "pseudo_perplexity.png").stat().st_size > 1000
    assert "| 64 | 2 | 16 |" in (out / "pseudo_perplexity.md").read_text()
    assert main(["evaluate", "--model", str(tmp_path), "--pseudo-perplexity", str(text)]) == 2
