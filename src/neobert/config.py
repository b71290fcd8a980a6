"""NeoBERTConfig: reads the released checkpoint's config.json as it is, and names the presets."""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import PretrainedConfig

# Keys that the released remote code writes into config.json as artefacts of its `**kwargs` handling;
# they carry no model information, so they are dropped on load instead of being saved again.
_STRAY_KEYS = ("kwargs", "trust_remote_code", "pretrained_model_name_or_path")

HIDDEN_ACTS = ("swiglu", "gelu")
# What a saved config.json must state: a missing one would silently take the class default (28 layers),
# and weights of another shape would then load around it with the rest left random.
ARCHITECTURE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")

# The layout of the model code that `neobert export` writes into a folder (neobert.model.remote_code). Raise it
# when code written before can no longer be read the same way; config.json records it.
CODE_FORMAT_VERSION = 1

# The released checkpoint (spec A.1) and the paper's sizes. `tiny` is for tests and the demo.
PRESETS: dict[str, dict[str, Any]] = {
    "neobert-250m": dict(hidden_size=768, num_hidden_layers=28, num_attention_heads=12, intermediate_size=3072),
    "neobert-120m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    # The paper's M7 width is 1056; the released repo's 250M.yaml says 1008. We follow the paper.
    "neobert-m7": dict(hidden_size=1056, num_hidden_layers=16, num_attention_heads=12, intermediate_size=4224),
    "tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512, max_length=1024),
    # The BERT-like baseline M0 of the ablation: learned positions, LayerNorm (eps 1e-8), GELU.
    "bert-like-m0": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_length=512,
        rope=False,
        rms_norm=False,
        hidden_act="gelu",
        norm_eps=1e-8,
    ),
}


def swiglu_hidden_size(intermediate_size: int) -> int:
    """The released rule: two thirds of `intermediate_size`, rounded up to a multiple of 8."""
    hidden = int(2 * intermediate_size / 3)
    return (hidden + 7) // 8 * 8


def _check_code_format(version: Any) -> None:
    """A folder's recorded code format must be the one this code reads (None: the folder carries no code)."""
    if version is None or version == CODE_FORMAT_VERSION:
        return
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"config.json: neobert_code_version must be an integer, got {version!r}")
    older = version < CODE_FORMAT_VERSION
    fix = (
        "`neobert export FOLDER --out NEW_FOLDER` writes the current code next to the same weights"
        if older
        else "upgrade neobert, or load the folder with the code it carries (trust_remote_code=True where "
        "neobert is not installed), or re-export it with `neobert export`"
    )
    raise ValueError(
        f"this NeoBERT folder records model code format {version}, {'older' if older else 'newer'} than "
        f"format {CODE_FORMAT_VERSION} that the loading code reads: {fix}"
    )


class NeoBERTConfig(PretrainedConfig):
    """Configuration of a NeoBERT encoder.

    Field names follow the released `config.json` (`max_length`, `norm_eps`, `*_init_range`), so a hub
    snapshot loads unchanged and what we save loads into the official remote code. The switches `rope`,
    `rms_norm` and `hidden_act` express the paper's ablations (M0 is `rope=False, rms_norm=False,
    hidden_act="gelu"`).
    """

    model_type: ClassVar[str] = "neobert"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 28
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    # Declared as a field so transformers 5 does not take it for a generation parameter on save.
    max_length: int = 4096
    pad_token_id: int | None = 0
    norm_eps: float = 1e-5
    embedding_init_range: float = 0.02
    decoder_init_range: float = 0.02
    classifier_init_range: float = 0.02
    classifier_dropout: float = 0.1
    dropout: float = 0.0
    rope: bool = True
    rope_theta: float = 10000.0
    rms_norm: bool = True
    hidden_act: str = "swiglu"
    dim_head: int | None = None
    # The release's decoder is its own matrix (untied); True shares the token embedding with it, which
    # small models trained briefly can afford better than 30,522 x hidden parameters of their own.
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        for key in _STRAY_KEYS:
            kwargs.pop(key, None)
        _check_code_format(kwargs.get("neobert_code_version"))
        self.hidden_act = str(self.hidden_act).lower()
        self._validate_shapes()
        self.dim_head = self.hidden_size // self.num_attention_heads
        super().__post_init__(**kwargs)

    def _validate_shapes(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"NeoBERTConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        head_dim = self.hidden_size // self.num_attention_heads
        if self.dim_head is not None and self.dim_head != head_dim:
            raise ValueError(f"dim_head ({self.dim_head}) must equal hidden_size / num_attention_heads ({head_dim})")
        if self.rope and head_dim % 2:
            raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
        if self.hidden_act not in HIDDEN_ACTS:
            raise ValueError(f"hidden_act must be one of {HIDDEN_ACTS}, got {self.hidden_act!r}")
        if self.max_length <= 0:
            raise ValueError(f"max_length must be positive, got {self.max_length}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id {self.pad_token_id} is outside the vocabulary (size {self.vocab_size})")

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> NeoBERTConfig:
        """What `from_pretrained` builds a saved config.json with: every architecture field must be stated."""
        missing = [name for name in ARCHITECTURE_FIELDS if name not in config_dict and name not in kwargs]
        if missing:
            raise ValueError(
                f"config.json does not state {', '.join(missing)}: a NeoBERT config.json must give every "
                f"architecture field ({', '.join(ARCHITECTURE_FIELDS)}), or the weights would load into a model "
                "of another shape"
            )
        return super().from_dict(config_dict, **kwargs)

    @property
    def ffn_hidden_size(self) -> int:
        if self.hidden_act == "swiglu":
            return swiglu_hidden_size(self.intermediate_size)
        return self.intermediate_size

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> NeoBERTConfig:
        """A named preset (`neobert-250m`, `neobert-120m`, `tiny`, ...) with optional field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown NeoBERT preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})
