"""A few-second check that the installation works end to end: tokenizer, model, fill-mask, save/load."""

from __future__ import annotations

import argparse
import tempfile
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="tiny", help="model preset (default: tiny)")
    parser.add_argument("--text", default="Paris is the [MASK] of France.", help="a sentence with one [MASK]")


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForMaskedLM

    from neobert import NeoBERTConfig, NeoBERTForMaskedLM, load_tokenizer
    from neobert.errors import UsageError

    torch.manual_seed(0)
    tokenizer = load_tokenizer()
    try:
        config = NeoBERTConfig.from_preset(args.preset)
    except ValueError as error:
        raise UsageError(f"--preset: {error}") from error  # named: the preset is the only input here
    model = NeoBERTForMaskedLM(config).eval()
    batch = tokenizer([args.text], return_tensors="pt")
    if tokenizer.mask_token_id not in batch["input_ids"][0].tolist():
        raise UsageError(f"--text must contain {tokenizer.mask_token}")
    start = time.perf_counter()
    with torch.inference_mode():
        logits = model(**batch).logits
    elapsed = time.perf_counter() - start
    position = batch["input_ids"][0].tolist().index(tokenizer.mask_token_id)
    top = logits[0, position].topk(5).indices.tolist()
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        reloaded = AutoModelForMaskedLM.from_pretrained(folder).eval()
        with torch.inference_mode():
            same = torch.equal(reloaded(**batch).logits, logits)
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"preset {args.preset}: {parameters:,} parameters, {len(batch['input_ids'][0])} tokens, "
        f"forward {elapsed * 1000:.1f} ms"
    )
    print(f"top predictions for {tokenizer.mask_token} (random weights): {tokenizer.convert_ids_to_tokens(top)}")
    print(f"save_pretrained -> AutoModelForMaskedLM.from_pretrained gives identical logits: {same}")
    return 0 if same else 1
