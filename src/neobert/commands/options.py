"""The options every command spells the same way, and the older spellings that still work with a one-line
note on stderr:

- `--model DIR`: the model or checkpoint a command reads (`export` and `export-onnx` once took it as their
  first argument);
- `--out PATH`: what a command writes (`encode` once said `--output`);
- `--restart`: throw away what `--out` holds and start afresh (`export`, `prepare` and `contrastive` once
  said `--overwrite`); `--resume` is kept only by `pretrain`, where it names the checkpoint to continue from.

Light: no torch, so that building the parser stays instant."""

from __future__ import annotations

import argparse
import sys

CONVENTION = (
    "every command names its model --model and its output --out; --restart replaces what --out holds, "
    "`pretrain --resume` continues a run"
)


def deprecated(prog: str, old: str, new: str) -> None:
    """The one line an older spelling prints; the command then runs as with the new one."""
    print(f"{prog}: {old} is deprecated, use {new}", file=sys.stderr)


class _OldSpellingNoted(argparse.Action):
    """Stores the value (or True, for a flag) and notes on stderr when an older spelling was used."""

    def __init__(self, option_strings, dest, old_spellings=(), flag=False, **kwargs):
        if flag:
            kwargs.update(nargs=0, const=True, default=False)
        super().__init__(option_strings, dest, **kwargs)
        self.old_spellings = tuple(old_spellings)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.old_spellings:
            deprecated(parser.prog, option_string, self.option_strings[0])
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_out_option(parser: argparse.ArgumentParser, help: str, old_spellings: tuple[str, ...] = (), **kwargs) -> None:
    """`--out PATH` (older spellings, e.g. `--output`, still accepted with a note)."""
    spelled = ["--out", *old_spellings]
    if old_spellings:
        help = f"{help} ({', '.join(old_spellings)}: deprecated spelling)"
    parser.add_argument(
        *spelled, dest="out", action=_OldSpellingNoted, old_spellings=old_spellings, help=help, **kwargs
    )


def add_restart_option(parser: argparse.ArgumentParser, help: str, old_spellings: tuple[str, ...] = ()) -> None:
    """`--restart` (args.restart); older spellings, e.g. `--overwrite`, still accepted with a note."""
    if old_spellings:
        help = f"{help} ({', '.join(old_spellings)}: deprecated spelling)"
    parser.add_argument(
        "--restart",
        *old_spellings,
        dest="restart",
        action=_OldSpellingNoted,
        old_spellings=old_spellings,
        flag=True,
        help=help,
    )


POSITIONAL_MODEL = "_model_given_first"


def add_model_option(parser: argparse.ArgumentParser, help: str, positional_too: bool = False) -> None:
    """`--model DIR`, required. With `positional_too` the older form, the model as the first argument, still
    works with a note; `settle_model` (called by the parser after parsing) decides which was given."""
    if not positional_too:
        parser.add_argument("--model", required=True, help=help)
        return
    parser.add_argument("--model", default=None, help=f"{help} (required)")
    parser.add_argument(POSITIONAL_MODEL, nargs="?", default=None, metavar="MODEL", help="deprecated: use --model")


def settle_model(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The model of a command that also takes it positionally: exactly one of the two forms."""
    if not hasattr(args, POSITIONAL_MODEL):
        return
    given_first = getattr(args, POSITIONAL_MODEL)
    delattr(args, POSITIONAL_MODEL)
    if given_first is None:
        if args.model is None:
            parser.error("the following arguments are required: --model")
        return
    if args.model is not None:
        parser.error(f"the model is given twice ({given_first} and --model {args.model}); give only --model")
    deprecated(parser.prog, "the model as the first argument", f"--model {given_first}")
    args.model = given_first


class CommandParser(argparse.ArgumentParser):
    """A command's parser: settles the older spellings that argparse cannot check alone."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        settle_model(self, namespace)
        return namespace, extras
