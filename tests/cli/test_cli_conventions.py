"""One spelling for the options every command shares (`--model`, `--out`, `--restart`), the older spellings
still working with one line of deprecation on stderr, and every user error mapped to its exit code in one
place (`neobert.cli.exit_code_of`)."""

import argparse
import errno
import types

import numpy as np
import pytest

from neobert.cli import COMMANDS, build_parser, exit_code_of, main
from neobert.errors import CheckpointError, Interrupted, UsageError, UserError

DEPRECATED_SPELLINGS = {"--output": "--out", "--overwrite": "--restart"}


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_command_spells_model_out_and_restart_one_way():
    for name, parser in command_parsers().items():
        for action in parser._actions:
            new, *old = action.option_strings or [None]
            if action.dest in ("model", "out", "restart") and new is not None:
                assert new == f"--{action.dest}", (name, action.option_strings)
                # An older spelling lives only beside the new one, as its deprecated alias.
                assert all(DEPRECATED_SPELLINGS[spelling] == new for spelling in old), (name, old)
            assert new not in DEPRECATED_SPELLINGS, (name, new)
    # The commands that read a model take --model; those that write a folder or file take --out.
    parsers = command_parsers()
    readers = ("export", "export-onnx", "finetune", "glue", "evaluate", "encode", "mteb", "contrastive")
    writers = ("demo", "prepare", "export", "export-onnx", "finetune", "glue", "evaluate", "encode", "mteb")
    for name in readers:
        assert "--model" in parsers[name]._option_string_actions, name
    for name in (*writers, "contrastive", "ablate"):
        assert "--out" in parsers[name]._option_string_actions, name


def test_top_level_help_states_the_convention(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--model" in out and "--out" in out and "--restart" in out and "pretrain --resume" in out


@pytest.mark.parametrize(
    ("argv", "attribute", "value", "note"),
    [
        (["encode", "--model", "m", "--input", "t.txt", "--output", "v.npy"], "out", "v.npy", "--output"),
        (["export", "ckpt", "--out", "x"], "model", "ckpt", "the model as the first argument"),
        (["export", "--model", "m", "--out", "x", "--overwrite"], "restart", True, "--overwrite"),
        (["export-onnx", "m"], "model", "m", "the model as the first argument"),
        (["prepare", "a.txt", "--out", "x", "--overwrite"], "restart", True, "--overwrite"),
        (["contrastive", "--model", "m", "--data", "p", "--out", "x", "--overwrite"], "restart", True, "--overwrite"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_an_older_spelling_works_with_one_line_of_deprecation(argv, attribute, value, note, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, attribute) == value
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"neobert {argv[0]}: {note} is deprecated, use" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["encode", "--model", "m", "--input", "t.txt", "--out", "v.npy"],
        ["export", "--model", "ckpt", "--out", "x", "--restart"],
        ["export-onnx", "--model", "m"],
        ["prepare", "a.txt", "--out", "x", "--restart"],
    ],
    ids=" ".join,
)
def test_the_new_spelling_prints_nothing(argv, capsys):
    build_parser().parse_args(argv)
    assert capsys.readouterr().err == ""


def test_a_model_given_twice_or_not_at_all_is_a_usage_error(capsys):
    for argv, message in (
        (["export", "a", "--model", "b", "--out", "x"], "the model is given twice (a and --model b)"),
        (["export", "--out", "x"], "the following arguments are required: --model"),
        (["export-onnx"], "the following arguments are required: --model"),
    ):
        with pytest.raises(SystemExit) as stop:
            build_parser().parse_args(argv)
        assert stop.value.code == 2
        assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    from helpers.embed import exported_model

    return exported_model(tmp_path_factory.mktemp("model"))


def test_encode_output_and_out_write_the_same_vectors(model_folder, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("hello world\nanother line\n")
    command = ["encode", "--model", str(model_folder), "--input", str(texts)]
    assert main([*command, "--out", str(tmp_path / "new.npy")]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert main([*command, "--output", str(tmp_path / "old.npy")]) == 0
    assert "neobert encode: --output is deprecated, use --out" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(tmp_path / "old.npy"), np.load(tmp_path / "new.npy"))


def test_export_model_first_and_overwrite_still_work(model_folder, tmp_path, capsys):
    new, old = tmp_path / "new", tmp_path / "old"
    assert main(["export", "--model", str(model_folder), "--out", str(new)]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert main(["export", str(model_folder), "--out", str(old)]) == 0
    assert main(["export", str(model_folder), "--out", str(old), "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert err.count("the model as the first argument is deprecated, use --model") == 2
    assert "--overwrite is deprecated, use --restart" in err
    assert (old / "model.safetensors").read_bytes() == (new / "model.safetensors").read_bytes()
    # --restart replaces; without it an existing --out is refused, one line, exit 2.
    assert main(["export", "--model", str(model_folder), "--out", str(new)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", "--model", str(model_folder), "--out", str(new), "--restart"]) == 0


def test_export_options_that_shape_a_new_folder_need_out(model_folder, capsys):
    assert main(["export", "--model", str(model_folder)]) == 2
    assert "--out is required" in capsys.readouterr().err
    assert main(["export", "--model", str(model_folder), "--onnx", "--pooling", "cls"]) == 2
    assert "--pooling shape a new folder: give --out" in capsys.readouterr().err


def test_export_onnx_is_export_onnx_with_a_deprecation(model_folder, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import shutil

    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(model_folder, old)
    shutil.copytree(model_folder, new)
    assert main(["export-onnx", str(old)]) == 0  # into the folder itself, as before
    err = capsys.readouterr().err
    assert "neobert: export-onnx is deprecated, use export --model MODEL --onnx" in err
    assert main(["export", "--model", str(new), "--onnx"]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert sorted(p.relative_to(old).as_posix() for p in old.rglob("*")) == sorted(
        p.relative_to(new).as_posix() for p in new.rglob("*")
    )


def module_with(**names) -> types.ModuleType:
    module = types.ModuleType("command")
    module.__dict__.update(names)
    return module


def test_user_errors_map_to_their_exit_codes_in_one_place():
    bare = module_with()
    assert exit_code_of(UsageError("--steps must be positive"), bare) == (2, "--steps must be positive")
    assert exit_code_of(CheckpointError("damaged"), bare) == (3, "damaged")
    assert exit_code_of(Interrupted("stopped"), bare) == (130, "stopped")
    assert exit_code_of(UserError("evaluation failed", exit_code=1), bare) == (1, "evaluation failed")
    assert isinstance(UsageError("x"), ValueError)  # callers that catch ValueError still do
    # A built-in exception is the user's only where the command says so; otherwise it is a bug (a traceback).
    assert exit_code_of(ValueError("bad value"), bare) is None
    assert exit_code_of(ValueError("bad value"), module_with(USER_ERRORS=(ValueError,))) == (2, "bad value")
    assert exit_code_of(KeyboardInterrupt(), bare) is None
    assert exit_code_of(KeyboardInterrupt(), module_with(ON_INTERRUPT="again")) == (130, "again")
    full = OSError(errno.ENOSPC, "No space left on device", "/disk/f")
    assert exit_code_of(full, bare) == (4, "/disk/f: No space left on device")
    assert exit_code_of(OSError(errno.EACCES, "Permission denied"), bare) == (2, "Permission denied")
    assert exit_code_of(OSError(errno.EIO, "I/O error"), bare) is None


def test_library_errors_keep_their_exit_codes():
    from neobert.train.checkpoint import DiskFullError
    from neobert.train.pretrain import TrainingDiverged

    bare = module_with()
    assert exit_code_of(DiskFullError("disk full while saving"), bare) == (4, "disk full while saving")
    assert exit_code_of(TrainingDiverged("loss is nan"), bare) == (5, "loss is nan")


def test_a_bug_stays_a_traceback(monkeypatch):
    import neobert.commands.smoke as smoke

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(smoke, "run", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["smoke"])


def test_every_command_module_names_only_exception_classes():
    import importlib

    for module_name, _ in COMMANDS.values():
        module = importlib.import_module(module_name)
        for error in getattr(module, "USER_ERRORS", ()):
            assert issubclass(error, Exception), (module_name, error)
