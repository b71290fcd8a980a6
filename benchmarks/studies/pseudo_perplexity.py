"""Pseudo-perplexity batched (masked copies stacked, one forward per batch) against the naive loop (one
forward per position), on the same sequences, with the largest difference in values; and fine-tuning tokens/s.

    python benchmarks/studies/pseudo_perplexity.py [--model DIR] [--length 128] [--sequences 2] [--out results/x.json]

Without --model it uses a random `tiny` NeoBERT (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench_common, one folder up

from bench_common import git
from neobert import NeoBERTConfig, NeoBERTForMaskedLM, load_tokenizer
from neobert.eval.pseudo_perplexity import masked_losses, masked_losses_naive, pseudo_perplexity, scored_positions
from neobert.finetune.data import Examples, LabelSpace, encode
from neobert.finetune.model import load_task_model
from neobert.finetune.trainer import FinetuneSettings, TaskData, finetune

WORDS = [
    "the",
    "a",
    "film",
    "story",
    "actor",
    "plot",
    "scene",
    "good",
    "bad",
    "long",
    "short",
    "funny",
    "dull",
    "music",
    "city",
    "night",
    "day",
]


def random_sequence(tokenizer, length: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    text = " ".join(rng.choice(WORDS) for _ in range(length * 2))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: length - 2]
    return [tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]


def bench_pseudo_perplexity(model, tokenizer, length: int, sequences: int, batch_size: int) -> dict:
    special = set(tokenizer.all_special_ids)
    rows = []
    for seed in range(sequences):
        ids = random_sequence(tokenizer, length, seed)
        positions = scored_positions(ids, special)
        started = time.perf_counter()
        naive = masked_losses_naive(model, ids, tokenizer.mask_token_id, positions)
        naive_s = time.perf_counter() - started
        started = time.perf_counter()
        batched = masked_losses(model, ids, tokenizer.mask_token_id, positions, batch_size)
        batched_s = time.perf_counter() - started
        rows.append(
            {
                "positions": len(positions),
                "naive_s": naive_s,
                "batched_s": batched_s,
                "speedup": naive_s / batched_s,
                "ppl_naive": pseudo_perplexity(naive),
                "ppl_batched": pseudo_perplexity(batched),
                "max_abs_loss_difference": float((naive - batched).abs().max()),
            }
        )
    total_naive = sum(r["naive_s"] for r in rows)
    total_batched = sum(r["batched_s"] for r in rows)
    return {"length": length, "batch_size": batch_size, "sequences": rows, "speedup": total_naive / total_batched}


def bench_finetune(folder: Path, tokenizer, steps: int, batch_size: int) -> dict:
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) for _ in range(512)]
    labels = [int("good" in t) for t in texts]
    space = LabelSpace(problem="single", names=["0", "1"])
    train = encode(Examples(texts, labels), tokenizer, 128, labels)
    data = TaskData(train=train, validation={"validation": train}, space=space, pad_id=tokenizer.pad_token_id)
    data.validation["validation"] = encode(Examples(texts[:64], labels[:64]), tokenizer, 128, labels[:64])
    settings = FinetuneSettings(
        lr=1e-4, batch_size=batch_size, max_steps=steps, eval_every=steps, progress=False, keep_checkpoints=False
    )
    with tempfile.TemporaryDirectory() as out:
        finetune(lambda: load_task_model(folder, space), data, settings, out)
        results = json.loads((Path(out) / "results.json").read_text())
    return {"steps": steps, "batch_size": batch_size, "tokens_per_second": results["train_tokens_per_second"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--sequences", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--finetune-steps", type=int, default=20)
    parser.add_argument("--out", default="results/pseudo_perplexity.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    tokenizer = load_tokenizer()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.model) if args.model else Path(scratch)
        if not args.model:
            NeoBERTForMaskedLM(NeoBERTConfig.from_preset("tiny")).save_pretrained(folder)
        model = NeoBERTForMaskedLM.from_pretrained(folder).eval()
        report = {
            "commit": git("rev-parse", "--short", "HEAD"),
            "threads": torch.get_num_threads(),
            "model": args.model or "random tiny",
            "pseudo_perplexity": bench_pseudo_perplexity(
                model, tokenizer, args.length, args.sequences, args.batch_size
            ),
            "finetune": bench_finetune(folder, tokenizer, args.finetune_steps, 16),
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    ppl = report["pseudo_perplexity"]
    worst = max(r["max_abs_loss_difference"] for r in ppl["sequences"])
    print(f"pseudo-perplexity, length {args.length}: batched {ppl['speedup']:.1f}x the naive loop; ", end="")
    print(f"largest per-position loss difference {worst:.2e}")
    for r in ppl["sequences"]:
        print(
            f"  {r['positions']} positions: naive {r['naive_s']:.2f} s, batched {r['batched_s']:.2f} s, "
            f"PPL {r['ppl_naive']:.4f} vs {r['ppl_batched']:.4f}"
        )
    print(
        f"fine-tuning: {report['finetune']['tokens_per_second']:.0f} tokens/s (batch 16, {args.finetune_steps} steps)"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
