"""`neobert <command>`: one small module per command. Building the parser imports only the light part of
each (its `add_arguments`), never torch or transformers, so `--help`, `--version` and usage errors answer at
once; a command's heavy imports happen inside its `run`."""

from __future__ import annotations

import argparse
import importlib
import sys

from neobert.errors import EXIT_CHECKPOINT, EXIT_DISK_FULL, WRITE_FAULTS, CheckpointError, io_failure

# name -> (module, one-line help). Each module defines `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "smoke": ("neobert.commands.smoke", "build a tiny model, fill a mask, save and reload it (seconds)"),
    "demo": ("neobert.commands.demo", "prepare the demo corpus, pre-train ~10 min, evaluate, probe, report"),
    "prepare": ("neobert.commands.prepare", "tokenise text (files, datasets, --demo) into token shards"),
    "pretrain": ("neobert.commands.pretrain", "pre-train from YAML presets and dotted overrides (torchrun too)"),
    "export": ("neobert.commands.export", "a checkpoint as a transformers / sentence-transformers folder"),
    "finetune": ("neobert.commands.finetune", "fine-tune on labelled CSV/JSONL/Parquet/datasets or CoNLL files"),
    "glue": ("neobert.commands.glue", "the paper's GLUE protocol: grid, early stopping, MNLI transfer, table"),
    "evaluate": ("neobert.commands.evaluate", "pseudo-perplexity by length, held-out MLM, offline task suite"),
    "encode": ("neobert.commands.encode", "embed texts (.txt / .jsonl) into a .npy array"),
    "export-onnx": ("neobert.commands.export_onnx", "the encoder as ONNX (dynamic batch and length)"),
    "mteb": ("neobert.commands.mteb", "run MTEB (v2) tasks on an embedder through mteb's evaluator"),
    "contrastive": ("neobert.commands.contrastive", "contrastive fine-tuning (InfoNCE) into a sentence embedder"),
    "ablate": ("neobert.commands.ablate", "the paper's ablation ladder (Table 2) at small scale, seeds, table"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default after its help, unless the help already says it, the option is an on/off
    flag, or there is no default (None: the help says what happens instead)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            "default" in text.lower()
            or action.default is None
            or action.default is argparse.SUPPRESS
            or action.nargs == 0  # on/off flags
            or action.default == []
        ):
            return text
        return super()._get_help_string(action)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("neobert")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from neobert import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neobert", description="NeoBERT: model, pre-training, evaluation", formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        command.set_defaults(_module=module_name)
        importlib.import_module(module_name).add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from neobert.runtime import tune_cpu_allocator

    tune_cpu_allocator()
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except CheckpointError as error:  # whichever command read the checkpoint: the same line, the same code
        print(f"neobert {args.command}: {error}", file=sys.stderr)
        from neobert.train.checkpoint import DiskFullError  # loaded already: the error came from there

        return EXIT_DISK_FULL if isinstance(error, DiskFullError) else EXIT_CHECKPOINT
    except OSError as error:
        if error.errno not in WRITE_FAULTS:
            raise
        line, code = io_failure(args.command, error)
        print(line, file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
