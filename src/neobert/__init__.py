"""NeoBERT: the model, its pre-training, fine-tuning and evaluation.

Importing the package registers model type "neobert" with transformers' Auto classes. The public names
below load on first use (PEP 562), so that `import neobert` and the command line's `--help` do not pay for
torch and transformers: the registration happens at once when transformers is already imported, else as
soon as transformers is (or when a name of the model is first used).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute in it). The model classes are public names too, without a line here:
# whatever `neobert.model` exports (the head registry, neobert.model.heads.HEADS) is looked up there on use.
_LAZY: dict[str, tuple[str, str]] = {
    "PRESETS": ("neobert.config", "PRESETS"),
    "NeoBERTConfig": ("neobert.config", "NeoBERTConfig"),
    "encode": ("neobert.embed", "encode"),
    "load_embedder": ("neobert.embed", "load_embedder"),
    "load_tokenizer": ("neobert.tokenizer", "load_tokenizer"),
    # The released remote code's class names, for users coming from `trust_remote_code`.
    "NeoBERT": ("neobert.model", "NeoBERTModel"),
    "NeoBERTLMHead": ("neobert.model", "NeoBERTForMaskedLM"),
}
# Every model class is named so: another missing name fails without importing torch to look for it.
_MODEL_CLASS_PREFIX = "NeoBERT"

if TYPE_CHECKING:  # what type checkers see of `_LAZY` (the model classes reach them through `__getattr__`)
    from neobert.config import PRESETS as PRESETS
    from neobert.config import NeoBERTConfig as NeoBERTConfig
    from neobert.embed import encode as encode
    from neobert.embed import load_embedder as load_embedder
    from neobert.model import NeoBERTForMaskedLM as NeoBERTLMHead  # noqa: F401
    from neobert.model import NeoBERTModel as NeoBERT  # noqa: F401
    from neobert.tokenizer import load_tokenizer as load_tokenizer


def register_auto_classes() -> None:
    """Registers "neobert" with transformers' Auto classes (idempotent; imports torch and the model)."""
    importlib.import_module("neobert.model.hf").register()
    for finder in [f for f in sys.meta_path if isinstance(f, _RegisterAfterTransformers)]:
        sys.meta_path.remove(finder)  # its work is done


def __getattr__(name: str) -> Any:
    if name == "__all__":  # the public names, the model classes included
        value = [*_LAZY, *_model_classes().__all__]
    elif name in _LAZY:
        module_name, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attribute)
    elif name.startswith(_MODEL_CLASS_PREFIX) and name in _model_classes().__all__:
        value = getattr(_model_classes(), name)
    else:
        raise AttributeError(f"module 'neobert' has no attribute {name!r}")
    register_auto_classes()
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__getattr__("__all__")})


def _model_classes():
    return importlib.import_module("neobert.model")


# The modules registration imports. While one of them is half-way through its own import, registering
# would import it again, half-built (a submodule of neobert.model is only imported half-way while the
# package is, or after the package registered at its end).
_REGISTRATION_MODULES = ("neobert.config", "neobert.model.remote_code", "neobert.model")


def _registration_would_reenter() -> bool:
    """CPython's own test of a module in progress, on the modules registration imports."""
    return any(
        getattr(getattr(sys.modules.get(name), "__spec__", None), "_initializing", False)
        for name in _REGISTRATION_MODULES
    )


class _RegisterAfterTransformers:
    """A meta path finder that waits for `import transformers`, lets it finish and registers. When that
    import came from one of the modules registration needs (neobert.config, say), registering waits for the
    next import of a new module after it (transformers' Auto classes are such imports), then happens."""

    def __init__(self) -> None:
        self.pending = False
        self.registering = False

    def find_spec(self, name, path=None, target=None):
        if self.pending:
            self.register_when_safe()
            return None
        if name != "transformers":
            return None
        spec = self.spec_without_me(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        load = spec.loader.exec_module

        def load_then_register(module):
            load(module)
            self.register_when_safe()

        spec.loader.exec_module = load_then_register
        return spec

    def spec_without_me(self, name):
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        try:
            return importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)

    def register_when_safe(self) -> None:
        if self.registering:
            return
        if _registration_would_reenter():
            self.pending = True
            return
        self.pending, self.registering = False, True
        try:
            register_auto_classes()
        finally:
            self.registering = False


if "transformers" in sys.modules:
    register_auto_classes()
elif not any(isinstance(finder, _RegisterAfterTransformers) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterTransformers())
