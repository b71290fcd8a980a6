"""`neobert <command>`: one small module per command. Building the parser imports only the light part of
each (its `add_arguments`), never torch or transformers, so `--help`, `--version` and usage errors answer at
once; a command's heavy imports happen inside its `run`."""

from __future__ import annotations

import argparse
import importlib
import sys

from neobert.commands.options import CONVENTION, CommandParser
from neobert.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    WRITE_FAULTS,
    UserError,
    write_failure,
)

# name -> (module, one-line help). Each module defines `add_arguments(parser)` and `run(args) -> int`, and may
# name the built-in exceptions that are the user's to fix in `USER_ERRORS` (see `exit_code_of`).
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
    "export-onnx": ("neobert.commands.export_onnx", "deprecated: use `export --onnx` (ONNX of a model folder)"),
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
        prog="neobert",
        description="NeoBERT: model, pre-training, evaluation",
        epilog=f"Conventions: {CONVENTION}.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CommandParser)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        command.set_defaults(_module=module_name)
        importlib.import_module(module_name).add_arguments(command)
    return parser


def exit_code_of(error: BaseException, module) -> tuple[int, str] | None:
    """The exit code and message of an error the user can act on; None for a bug (it stays a traceback).
    One place for every command: `UserError` and its kinds (the library's own errors among them), then the built-in
    exceptions the command names in `USER_ERRORS` (e.g. ValueError for a bad value read from a file), then
    I/O faults a user can fix (a full disk: 4; no permission: 2)."""
    if isinstance(error, UserError):
        return error.exit_code, str(error)
    if isinstance(error, getattr(module, "USER_ERRORS", ())):
        return EXIT_BAD_INPUT, str(error)
    if isinstance(error, OSError) and error.errno in WRITE_FAULTS:
        failure = write_failure(error)
        return failure.exit_code, str(failure)
    if isinstance(error, KeyboardInterrupt) and hasattr(module, "ON_INTERRUPT"):
        return EXIT_INTERRUPTED, module.ON_INTERRUPT
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from neobert.runtime import tune_cpu_allocator

    tune_cpu_allocator()
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except (Exception, KeyboardInterrupt) as error:
        known = exit_code_of(error, module)
        if known is None:
            raise
        code, message = known
        print(f"neobert {args.command}: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
