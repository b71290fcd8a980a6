"""transformers' own common model tests, for the installed transformers version, importable as a package.

The files come from that version's source distribution on the package index (`pip download`), extracted
once into the running environment (`<venv>/transformers-tests-<version>/hf_tests/`), never committed.
The distribution ships the top-level `tests/*.py` files but not the packages they import relatively; those
are provided here as the smallest modules that let the files import (see `_MISSING_MODULES`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

PACKAGE = "hf_tests"
NEEDED = ("test_modeling_common.py", "test_configuration_common.py")

# Relative imports of the shipped files whose targets the source distribution leaves out.
_MISSING_MODULES = {
    # torch.export tests: their module is not distributed, so ModelTesterMixin runs without them.
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    # Only generative models inherit it; an encoder's tester must not (the mixin checks this).
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    # ConfigTester.check_config_arguments_init passes these to the config and reads them back: every
    # PreTrainedConfig-level field, each set away from its default.
    "utils/test_configuration_utils.py": (
        "config_common_kwargs = {\n"
        '    "return_dict": False,\n'
        '    "output_hidden_states": True,\n'
        '    "dtype": "float16",\n'
        '    "chunk_size_feed_forward": 5,\n'
        '    "architectures": ["NeoBERTForMaskedLM"],\n'
        '    "id2label": {0: "negative", 1: "positive"},\n'
        '    "label2id": {"negative": 0, "positive": 1},\n'
        '    "problem_type": "regression",\n'
        "}\n"
    ),
}


def suite_root() -> Path:
    """Inside the running virtual environment (`.venv` under `make test`); a system Python's prefix is not
    writable, so there the temporary folder is used instead."""
    home = Path(sys.prefix) if os.access(sys.prefix, os.W_OK) else Path(tempfile.gettempdir())
    return home / f"transformers-tests-{transformers.__version__}"


def ensure_suite() -> Path:
    """The folder to put on sys.path (it holds the `hf_tests` package); downloads on first use.

    Raises RuntimeError with pip's message when the source distribution cannot be fetched."""
    root = suite_root()
    if (root / PACKAGE / "__init__.py").is_file():
        return root
    version = transformers.__version__
    with tempfile.TemporaryDirectory() as scratch:
        download = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--dest", scratch]
            + ["--disable-pip-version-check", "--retries", "2", "--timeout", "20", f"transformers=={version}"],
            capture_output=True,
            text=True,
        )
        archives = list(Path(scratch).glob("transformers-*.tar.gz"))
        if download.returncode != 0 or not archives:
            last_line = (download.stderr.strip().splitlines() or ["no message"])[-1]
            raise RuntimeError(f"pip could not download transformers=={version}'s sources: {last_line}")
        staging = Path(tempfile.mkdtemp(prefix=".transformers-tests.", dir=root.parent))
        try:
            package = staging / PACKAGE
            package.mkdir()
            with tarfile.open(archives[0]) as archive:
                for name in NEEDED:
                    member = archive.extractfile(f"{archives[0].name.removesuffix('.tar.gz')}/tests/{name}")
                    (package / name).write_bytes(member.read())
            (package / "__init__.py").write_text("")
            for relative, text in _MISSING_MODULES.items():
                target = package / relative
                target.parent.mkdir(exist_ok=True)
                (target.parent / "__init__.py").touch()
                target.write_text(text)
            if (root / PACKAGE / "__init__.py").is_file():  # another test process finished first
                shutil.rmtree(staging)
                return root
            if root.exists():  # a partial folder from an interrupted run
                shutil.rmtree(root)
            staging.rename(root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return root
