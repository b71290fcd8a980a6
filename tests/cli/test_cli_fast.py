"""The command line answers `--help`, `--version` and usage errors without importing torch or transformers,
documents every option, and states each default."""

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from neobert.cli import COMMANDS, HelpFormatter, build_parser, main

SRC = str(Path(__file__).resolve().parents[2] / "src")
HEAVY = ("torch", "transformers", "numpy", "neobert.model")


def imported_after(code: str) -> dict:
    """Runs `code` in a fresh interpreter and returns its exit and which heavy modules it imported."""
    program = textwrap.dedent(
        f"""
        import json, sys
        code = 0
        try:
{textwrap.indent(textwrap.dedent(code), " " * 12)}
        except SystemExit as stop:
            code = stop.code
        print(json.dumps({{"code": code, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    import json

    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--version"], ["smoke", "--help"], ["encode", "--help"], ["nonsense"], ["encode"], []],
    ids=repr,
)
def test_help_version_and_usage_errors_import_nothing_heavy(argv):
    result = imported_after(f"import neobert.cli; neobert.cli.main({argv!r})")
    assert result["heavy"] == []
    assert result["code"] == (0 if argv and argv[-1] in ("--help", "--version") else 2)


def test_every_command_help_imports_nothing_heavy():
    argvs = [[name, "--help"] for name in COMMANDS]
    result = imported_after(
        f"""
        import neobert.cli
        for argv in {argvs!r}:
            try:
                neobert.cli.main(argv)
            except SystemExit:
                pass
        """
    )
    assert result["heavy"] == []


def test_importing_the_package_imports_nothing_heavy_and_keeps_every_public_name():
    result = imported_after("import neobert")
    assert result["heavy"] == []
    import neobert

    for name in neobert.__all__:
        assert getattr(neobert, name) is not None
    assert neobert.NeoBERT is neobert.NeoBERTModel and neobert.NeoBERTLMHead is neobert.NeoBERTForMaskedLM
    with pytest.raises(AttributeError):
        neobert.no_such_name  # noqa: B018


@pytest.mark.parametrize(
    "first",
    ["import neobert", "import neobert.config", "import neobert.export.folder", "import neobert.model.encoder"],
)
def test_whichever_import_comes_first_registers_the_model_type(first):
    # `neobert export` once met a folder's remote code instead of the registered classes: transformers was
    # first imported by neobert.export.folder itself.
    program = f"""
        {first}
        from transformers import AutoConfig, AutoModel
        config = AutoConfig.for_model("neobert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64, vocab_size=100)
        assert type(AutoModel.from_config(config)).__name__ == "NeoBERTModel"
    """
    result = imported_after(program)
    assert result["code"] == 0


def test_version_is_the_installed_package_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"neobert {version('neobert')}"


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_option_of_every_command_has_help_and_shows_its_default():
    missing, no_default = [], []
    for name, parser in subparsers().items():
        assert parser.formatter_class is HelpFormatter
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not (action.help or "").strip():
                missing.append(label)
                continue
            shown = formatter._get_help_string(action) % {"default": action.default}
            flag = action.nargs == 0
            if not flag and action.default not in (None, [], argparse.SUPPRESS) and "default" not in shown.lower():
                no_default.append(label)
    assert missing == []
    assert no_default == []


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["encode", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 64)" in out and "(default: torch)" in out


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    from helpers.embed import exported_model

    return exported_model(tmp_path_factory.mktemp("model"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["smoke", "--preset", "typo"], "neobert smoke: --preset: unknown NeoBERT preset 'typo'"),
        (["smoke", "--text", "no mask here"], "neobert smoke: --text must contain [MASK]"),
        (["evaluate", "--model", "{model}", "--pseudo-perplexity", "{text}", "--lengths", "a,b"], "--lengths takes"),
        (["evaluate", "--model", "{model}", "--pseudo-perplexity", "{text}", "--lengths", "0"], "at least 3 tokens"),
        (["evaluate", "--model", "{model}", "--mlm-data", "{text}", "--mlm-batches", "0"], "--mlm-batches must"),
        (["mteb", "--model", "{model}", "--tasks", "X", "--pooling", "typo"], "--pooling must be mean, cls or max"),
        (["mteb", "--model", "{model}", "--tasks", "X", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["prepare", "{text}", "--out", "{out}", "--max-length", "-5"], "neobert prepare: --max-length must leave"),
        (["prepare", "{text}", "--out", "{out}", "--heldout-fraction", "7"], "--heldout-fraction must lie in"),
        (
            [
                "finetune",
                "--model",
                "{model}",
                "--train",
                "{csv}",
                "--validation",
                "{csv}",
                "--out",
                "{out}",
                "--metric",
                "typo",
            ],
            "--metric 'typo' is not a metric of this task; choose one of accuracy",
        ),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_a_bad_value_is_one_line_and_exit_2(argv, message, model_folder, tmp_path, capsys):
    text, csv = tmp_path / "texts.txt", tmp_path / "data.csv"
    text.write_text("hello world\nanother line\n")
    csv.write_text("text,label\na b,0\nc d,1\n")
    names = {"model": model_folder, "text": text, "csv": csv, "out": tmp_path / "out"}
    assert main([item.format(**names) for item in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_score_table_aligns_names_and_numbers():
    from neobert.eval.score_table import score_table

    table = score_table(("model", "recall@1"), [("a", 0.5), ("longer name", 0.25)])
    assert table.splitlines() == [
        "model        recall@1",
        "-----------  --------",
        "a              0.5000",
        "longer name    0.2500",
    ]


def test_evaluate_retrieval_suite_prints_its_scores_as_a_table(model_folder, tmp_path, capsys, monkeypatch):
    import neobert.demo.retrieval_offline as retrieval

    monkeypatch.setattr(
        retrieval, "headline_article_pairs", lambda records=None, max_articles=None: (["a b", "c d"], ["a b", "c d"])
    )
    args = ["evaluate", "--model", str(model_folder), "--suite", "retrieval-offline", "--no-baseline"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(out) if line.split()[:2] == ["model", "recall@1"])
    assert out[header + 2].split()[0] == str(model_folder) and len(out[header + 2].split()) == 4
