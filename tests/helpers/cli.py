"""What the round-three hardening tests share: the one-line error a command must print, and small runs."""

from neobert.cli import main
from test_commands import TINY

FAST_FINETUNE = ["--no-progress", "--max-steps", "4", "--eval-every", "2", "--batch-size", "8", "--max-length", "16"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def last_error_line(capsys) -> str:
    """The error of a command that failed after some work (whose progress bars come first): no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def pretrain(corpus, out, *extra):
    return main(["pretrain", "demo", *TINY, f"data.path={corpus}", f"system.output_dir={out}", *extra])
