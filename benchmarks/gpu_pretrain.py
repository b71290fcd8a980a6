"""Pre-training throughput of `neobert-250m` on one GPU: bf16 autocast, 1,024-token sequences, fused AdamW.

Made for a lent H200 (minutes only): builds the model, runs `--warmup` untimed steps (compilation included)
then `--steps` timed ones on synthetic batches (20% of tokens masked, all-[MASK]), and prints tokens/s,
model FLOP/s and MFU against the GPU's dense bf16 peak (989 TFLOP/s for H100/H200). Packed batches use
flash-attn's varlen kernel when it is installed, else SDPA per document; `--layout padded` runs full
(B, 1024) rows through SDPA without a mask. Target: MFU of at least 45%.

    python benchmarks/gpu_pretrain.py                      # 50 timed steps, torch.compile on each block
    python benchmarks/gpu_pretrain.py --no-compile --steps 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

import neobert
from neobert.train.metrics import forward_flops, non_embedding_parameters, peak_flops

MFU_TARGET = 0.45


def synthetic_batch(batch: int, length: int, vocab: int, layout: str, device: torch.device, generator) -> dict:
    ids = torch.randint(1000, vocab, (batch, length), generator=generator)
    ids[:, 0], ids[:, -1] = 101, 102
    masked = torch.rand(ids.shape, generator=generator) < 0.2
    masked[:, 0] = masked[:, -1] = False
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    inputs = torch.where(masked, torch.full_like(ids, 103), ids)
    if layout == "padded":
        return {"input_ids": inputs.to(device), "labels": labels.to(device)}
    cu = torch.arange(0, (batch + 1) * length, length, dtype=torch.int32)
    return {
        "input_ids": inputs.reshape(1, -1).to(device),
        "labels": labels.reshape(1, -1).to(device),
        "cu_seqlens": cu.to(device),
        "max_seqlen": length,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64, help="sequences a step")
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--layout", choices=("packed", "padded"), default="packed")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    parser.add_argument("--preset", default="neobert-250m", help="model preset (tiny: a CPU dry run)")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a dry run of the script itself")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_pretrain.py needs a CUDA GPU (or --device cpu for a dry run)", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True
    config = neobert.NeoBERTConfig.from_preset(args.preset)
    model = neobert.NeoBERTForMaskedLM(config).to(device).train()
    model.model.check_inputs = False  # no device read-back in the step
    try:
        import flash_attn  # noqa: F401

        backend = "flash_attention_2" if args.layout == "packed" else "sdpa"
    except ImportError:
        backend = "sdpa"
    model.config._attn_implementation = backend
    if not args.no_compile:
        for block in model.model.transformer_encoder:
            block.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=True)
    generator = torch.Generator().manual_seed(0)
    batches = [
        synthetic_batch(args.batch, args.length, config.vocab_size, args.layout, device, generator) for _ in range(4)
    ]

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss

    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for i in range(args.warmup):
        step(batches[i % len(batches)])
    synchronize()
    start = time.perf_counter()
    for i in range(args.steps):
        loss = step(batches[i % len(batches)]).detach()
    synchronize()
    seconds = (time.perf_counter() - start) / args.steps

    tokens = args.batch * args.length
    masked = float((batches[0]["labels"] != -100).sum())
    flops = 3 * forward_flops(config, tokens, args.batch * args.length**2, masked, non_embedding_parameters(config))
    peak = peak_flops(device)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "attention": backend,
        "layout": args.layout,
        "compiled": not args.no_compile,
        "batch": args.batch,
        "length": args.length,
        "seconds_per_step": seconds,
        "tokens_per_s": tokens / seconds,
        "model_tflops_per_s": flops / seconds / 1e12,
        "mfu": flops / seconds / peak if peak else None,
        "last_loss": loss.item(),
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2)
    if result["mfu"] is not None:
        print(f"{'PASS' if result['mfu'] >= MFU_TARGET else 'FAIL'} MFU {result['mfu']:.1%} (target >= 45%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
