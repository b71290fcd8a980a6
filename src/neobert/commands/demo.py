"""`neobert demo`: the main job on a fresh clone. Prepares the offline demo corpus (cached after the first run),
pre-trains the demo model for about ten minutes, evaluates held-out masked-LM loss and accuracy against
the unigram baseline, probes the frozen embeddings of the trained model and of its random initialisation on
the offline suite (a linear probe and cosine retrieval), prints a table and writes a report (JSON) with the
loss curve."""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from neobert.commands.pretrain import split_items
from neobert.files import write_json_atomically

# A bad override or corpus: exit 2, as `neobert pretrain` (see neobert.cli.exit_code_of for the other codes).
USER_ERRORS = (ValueError, FileNotFoundError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from neobert.commands.options import add_out_option

    parser.add_argument(
        "overrides", nargs="*", metavar="OVERRIDE", help="dotted overrides of the demo preset, e.g. budget.hours=0.05"
    )
    parser.add_argument("--corpus", default=None, help="prepared corpus folder (default: the cached demo corpus)")
    add_out_option(parser, "run folder (default: runs/demo-<date>-<time>)", default=None)
    parser.add_argument(
        "--recipe",
        choices=("auto", "standard", "short"),
        default="auto",
        help="the preset: `standard` (demo), `short` (demo-short, batch 16 and WSD, for hosts that get few steps), "
        f"or `auto` (the default): time a few train steps and take `short` when the hours budget allows fewer than "
        f"{SHORT_RECIPE_BELOW_STEPS} (a steps or tokens budget takes `standard`)",
    )
    parser.add_argument(
        "--no-probe",
        action="store_true",
        help="skip the frozen-embedding probe and retrieval of the trained model and its random initialisation",
    )


def run(args: argparse.Namespace) -> int:
    from neobert.errors import UsageError
    from neobert.train.config import load_config, preset_path

    paths, overrides = split_items(args.overrides)
    if paths:
        raise UsageError(f"takes only key=value overrides, not {paths}")
    started = time.time()
    corpus = Path(args.corpus) if args.corpus else prepare_demo_corpus()
    out = args.out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"
    settings = [f"data.path={corpus}", f"system.output_dir={out}", *overrides]
    config = load_config([preset_path("demo")], settings)
    # Timing the standard preset's steps reads the corpus: the same bad input as training itself.
    recipe = choose_recipe(args.recipe, config, settings)
    if recipe["preset"] != "demo":
        config = load_config([preset_path(recipe["preset"])], settings)
    print(f"recipe: {recipe['preset']} ({recipe['reason']})")
    from neobert.train.data import make_eval_batches, make_loader
    from neobert.train.pretrain import pretrain

    # The same exit codes as `neobert pretrain`: a full disk 4, a diverged loss 5 (neobert.cli maps them).
    result = pretrain(config, make_loader, make_eval_batches)
    report = summarise(config, result, corpus, time.time() - started)
    report["recipe"] = recipe
    if not args.no_probe and result.checkpoint is not None:
        report["probe"] = probe_against_random_init(config, result.checkpoint)
    print(table(report))
    path = Path(out) / "report.json"
    write_json_atomically(path, report, indent=2)
    print(f"\nreport: {path}\nloss curve: {Path(out) / 'loss_curve.png'}")
    beats = report["model"]["accuracy"] > report["unigram"]["accuracy"]
    return 0 if beats else 1


# `--recipe auto` takes the short-budget preset below this many predicted steps: an AVX2-only host in fp32 gets
# about 530, a host with bf16 matrix instructions about 1,350 with the standard preset (docs/speedrun.md).
SHORT_RECIPE_BELOW_STEPS = 800
TIMED_STEPS, TIMED_WARMUP_STEPS = 4, 2


def choose_recipe(asked: str, config, settings: list[str]) -> dict:
    """Which preset the demo trains: asked for, or chosen from the standard preset's measured step time."""
    if asked != "auto":
        preset = "demo" if asked == "standard" else "demo-short"
        return {"preset": preset, "reason": f"asked for (--recipe {asked})"}
    hours = config.budget.hours
    if hours is None:
        return {"preset": "demo", "reason": "a steps or tokens budget: the standard preset"}
    seconds = time_train_steps(settings)
    steps = hours * 3600 / seconds
    short = steps < SHORT_RECIPE_BELOW_STEPS
    return {
        "preset": "demo-short" if short else "demo",
        "reason": (
            f"auto: the standard preset's step took {seconds:.3f} s here, about {steps:,.0f} steps in the budget, "
            f"{'below' if short else 'at or above'} {SHORT_RECIPE_BELOW_STEPS:,}"
        ),
        "timed_seconds_per_step": round(seconds, 4),
        "predicted_steps": round(steps),
    }


def time_train_steps(settings: list[str]) -> float:
    """The median wall time of a few of the standard preset's own train steps (after warm-up ones), on a
    throwaway trainer in a scratch folder. The precision probe's answer is cached, so the run does not pay
    for it twice."""
    import torch

    from neobert.train.config import load_config, preset_path
    from neobert.train.data import make_loader
    from neobert.train.distributed import DistributedContext, resolve_device
    from neobert.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as scratch:
        config = load_config([preset_path("demo")], [*settings, f"system.output_dir={scratch}", "system.log_sinks=[]"])
        device = resolve_device(config.system.device, 0, "system.device")
        rng = torch.get_rng_state()
        trainer = Trainer(config, make_loader, None, DistributedContext(device=device))
        walls = []
        for index in range(TIMED_WARMUP_STEPS + TIMED_STEPS):
            started = time.perf_counter()
            trainer.train_step()
            if index >= TIMED_WARMUP_STEPS:
                walls.append(time.perf_counter() - started)
        torch.set_rng_state(rng)
        del trainer
    return statistics.median(walls)


def prepare_demo_corpus() -> Path:
    """The demo corpus in the cache, prepared once; later runs find it finished and skip the work."""
    from neobert.data.prepare import PrepareConfig, prepare
    from neobert.demo.corpus import demo_source
    from neobert.tokenizer import cache_dir, load_tokenizer

    folder = cache_dir() / "demo-corpus"
    summary = prepare([demo_source()], folder, load_tokenizer(), PrepareConfig(max_length=128))
    print(summary.describe())
    return folder


def probe_against_random_init(config, checkpoint: Path) -> dict:
    """The offline suite's linear probe on frozen mean-pooled embeddings, and its headline -> article retrieval
    by cosine of the same embeddings, for the trained encoder and for the very initialisation the run started
    from (same seed): whether training helped the representations."""
    from transformers import AutoModel

    from neobert.demo.offline_suite import SuiteBudget, probe_suite
    from neobert.demo.retrieval_offline import frozen_retrieval
    from neobert.tokenizer import load_tokenizer
    from neobert.train.trainer import initial_model

    started = time.time()
    encoders = {"trained": AutoModel.from_pretrained(checkpoint), "random init": initial_model(config).model}
    tokenizer = load_tokenizer(config.data.tokenizer)
    budget = SuiteBudget(max_train=1000, max_test=400, max_length=config.data.max_length)
    return {
        "budget": {"max_train": 1000, "max_test": 400, "retrieval_articles": 1000},
        "scores": probe_suite(encoders, tokenizer, budget),
        "retrieval": frozen_retrieval(encoders, tokenizer, config.data.max_length),
        "seconds": round(time.time() - started, 1),
    }


def summarise(config, result, corpus: Path, seconds: float) -> dict:
    from neobert.data.sequences import TokenCorpus
    from neobert.train.baselines import token_counts, unigram_baseline
    from neobert.train.data import make_eval_batches
    from neobert.train.distributed import DistributedContext

    if not result.last_eval:
        raise RuntimeError("the run ended without a held-out evaluation")
    context = DistributedContext()
    batches = make_eval_batches(config, config.data.batch_size, context)
    unigram = unigram_baseline(token_counts(TokenCorpus(corpus, config.data.train_split)), batches)
    model = {
        "loss": result.last_eval["eval/loss"],
        "accuracy": result.last_eval["eval/accuracy"],
        "perplexity": math.exp(result.last_eval["eval/loss"]),
        "masked_tokens": int(result.last_eval["eval/masked_tokens"]),
    }
    shape = config.model.neobert_config()
    return {
        "model_label": f"NeoBERT {shape.num_hidden_layers}x{shape.hidden_size}",
        "status": result.status,
        "steps": result.step,
        "seconds": round(seconds, 1),
        "checkpoint": str(result.checkpoint),
        "corpus": str(corpus),
        "model": model,
        "unigram": unigram,
        "schedule_fraction": result.schedule_fraction,
        "final_lr": result.final_lr,
        "precision": result.precision,
        "last_train_metrics": result.last_metrics,
        "config": config.resolved(),
        "git_commit": _git_commit(),
    }


def table(report: dict) -> str:
    model, unigram = report["model"], report["unigram"]
    rows = [
        ("", "held-out MLM loss", "accuracy", "perplexity"),
        (report["model_label"], f"{model['loss']:.3f}", f"{model['accuracy']:.3f}", f"{model['perplexity']:.1f}"),
        ("unigram baseline", f"{unigram['loss']:.3f}", f"{unigram['accuracy']:.3f}", f"{unigram['perplexity']:.1f}"),
    ]
    lines = [f"{a:18s} {b:>18s} {c:>9s} {d:>11s}" for a, b, c, d in rows]
    lines.append(
        f"{report['steps']} steps in {report['seconds'] / 60:.1f} min ({report['schedule_fraction']:.0%} of the "
        f"schedule, {report['precision']['dtype']}); {model['masked_tokens']:,} masked held-out tokens (the unigram "
        "baseline always predicts the most frequent training token)"
    )
    probe = report.get("probe")
    if probe:
        trained, initial = probe["scores"]["trained"], probe["scores"]["random init"]
        tasks = [name for name in trained if name != "mean"]
        lines.append("\nfrozen-embedding linear probe (offline suite, mean-pooled, accuracy on fixed test splits):")
        lines.append(f"{'':14s}" + "".join(f"{name:>17s}" for name in [*tasks, "mean"]))
        for label, scores in (("trained", trained), ("random init", initial)):
            lines.append(f"{label:14s}" + "".join(f"{scores[name]:17.3f}" for name in [*tasks, "mean"]))
        lines.append("\nfrozen-embedding retrieval (each reserved headline among the articles, cosine, mean-pooled):")
        lines.append(f"{'':14s}{'recall@1':>17s}{'MRR@10':>17s}{'nDCG@10':>17s}")
        for label, scores in probe["retrieval"].items():
            lines.append(
                f"{label:14s}" + "".join(f"{scores[key]:17.3f}" for key in ("recall_at_1", "mrr_at_10", "ndcg_at_10"))
            )
    return "\n".join(lines)


def _git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None
