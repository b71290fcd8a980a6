"""The NeoBERT encoder: token embedding -> pre-norm blocks (RoPE attention, SwiGLU) -> final norm.

Module and parameter names are those of the released checkpoint (`encoder`, `transformer_encoder.N.qkv`,
`.wo`, `.ffn.w12`, `.ffn.w3`, `.attention_norm`, `.ffn_norm`, `layer_norm`), so hub weights load as they
are and what we save loads into the official code.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput

from neobert.config import NeoBERTConfig
from neobert.model.attention import attention, known_only_here
from neobert.model.inputs import AttentionLayout, build_layout
from neobert.model.layers import RotaryTable, apply_rotary, make_ffn, make_norm


class EncoderBlock(GradientCheckpointingLayer):
    """x + Wo(Attention(RoPE(qkv(norm(x))))), then h + FFN(norm(h)).

    The block is the `module` its attention function receives (transformers' attention interface): it
    carries `is_causal`, `layer_idx` (serving engines such as vLLM find their per-layer state by it) and
    `scaling`. `model.activation_checkpointing_enable()` recomputes each block in the backward pass.
    """

    is_causal = False

    def __init__(self, config: NeoBERTConfig, layer_idx: int = 0):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = 1 / math.sqrt(self.head_dim)
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.wo = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.ffn = make_ffn(config)
        self.attention_norm = make_norm(config)
        self.ffn_norm = make_norm(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        layout: AttentionLayout,
        rotary: torch.Tensor | None,
        need_weights: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, hidden = x.shape
        # Rows of qkv.weight are grouped per head as [q, k, v] (spec A.3), hence this view.
        qkv = self.qkv(self.attention_norm(x)).view(batch, length, self.num_heads, 3, self.head_dim)
        if rotary is not None:
            q, k = apply_rotary(qkv[..., :2, :], rotary).unbind(dim=-2)
        else:
            q, k = qkv[..., 0, :], qkv[..., 1, :]
        out, weights = attention(self, q, k, qkv[..., 2, :], layout, need_weights=need_weights, **kwargs)
        x = x + self.dropout(self.wo(out.reshape(batch, length, hidden)))
        x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        return x, weights


class NeoBERTPreTrainedModel(PreTrainedModel):
    config_class = NeoBERTConfig
    config: NeoBERTConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["EncoderBlock"]
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_flash_attn = True
    # Attention goes through transformers' attention interface with keyword arguments passed down (vLLM's
    # Transformers backend and any function registered with `AttentionInterface` can run the model).
    _supports_attention_backend = True
    # Writes this model's code into a folder as remote code and points the config at it; installed by
    # `import neobert` (neobert.model.remote_code). The generated remote code has none: transformers copies it.
    code_writer = None
    # The layers a task head adds on the pre-trained model: they start untrained (initialised as a classifier),
    # and under LoRA they are trained whole and saved beside the adapter (PEFT's `modules_to_save`).
    head_layers: tuple[str, ...] = ()

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False) -> str:
        # transformers refuses a name it has no function for; a backend of this model's own registry is valid.
        if known_only_here(requested_attention):
            return requested_attention
        return super().get_correct_attn_implementation(requested_attention, is_init_check)

    def save_pretrained(self, save_directory, *args, self_contained: bool | None = None, **kwargs) -> None:
        """`self_contained=True` also writes the model code into the folder (transformers remote code), so it
        loads with `trust_remote_code=True` where neobert is not installed. By default a model loaded from
        such a folder writes the code again, and other models do not."""
        carried = getattr(self.config, "neobert_code_version", None) is not None
        self_contained = carried if self_contained is None else self_contained
        if self._auto_class is not None:  # running as remote code: transformers copies the files itself
            return super().save_pretrained(save_directory, *args, **kwargs)
        if self_contained and kwargs.get("is_main_process", True):
            if self.code_writer is None:
                raise ValueError("self_contained=True needs neobert installed: `neobert export` writes the code")
            self.code_writer(save_directory, self.config)
            return super().save_pretrained(save_directory, *args, **kwargs)
        # Not writing the code: the saved config.json must not point at files the folder lacks.
        keys = ("auto_map", "neobert_code_version") if carried else ()
        stashed = {key: self.config.__dict__.pop(key) for key in keys if key in self.config.__dict__}
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.config.__dict__.update(stashed)

    def _init_weights(self, module: nn.Module) -> None:
        # The released recipe (spec A.9): every encoder and decoder matrix uniform(-r, r), biases zero,
        # the embedding uniform too (its padding row included), norms at one; task heads normal(0, r_cls).
        config = self.config
        # transformers calls this with `self` the innermost PreTrainedModel owning `module`, so a task
        # head's layers (`pre_classifier` / `classifier`) are recognised as attributes of `self`.
        is_task_head = any(module is getattr(self, name, None) for name in self.head_layers)
        if isinstance(module, nn.Linear):
            if is_task_head:
                init.normal_(module.weight, 0.0, config.classifier_init_range)
            else:
                init.uniform_(module.weight, -config.decoder_init_range, config.decoder_init_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.uniform_(module.weight, -config.embedding_init_range, config.embedding_init_range)
        elif isinstance(module, (nn.RMSNorm, nn.LayerNorm)):
            if module.weight is not None:
                init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)


class NeoBERTModel(NeoBERTPreTrainedModel):
    """The bare encoder (`AutoModel`); `last_hidden_state` is after the final norm."""

    # Loading the backbone out of a masked-LM checkpoint leaves its decoder behind, as intended.
    _keys_to_ignore_on_load_unexpected = [r"^decoder\."]

    def __init__(self, config: NeoBERTConfig):
        super().__init__(config)
        self.encoder = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        if not config.rope:
            self.positional_embedding = nn.Embedding(config.max_length, config.hidden_size)
        self.transformer_encoder = nn.ModuleList(EncoderBlock(config, i) for i in range(config.num_hidden_layers))
        self.layer_norm = make_norm(config)
        self.rotary = RotaryTable(config.hidden_size // config.num_attention_heads, config.rope_theta)
        # Validate input values (token ids, mask values, positions) on every call. Training loops may turn
        # this off: the checks read values back from the device, a sync per step on a GPU. It is off by
        # itself under torch.compile.
        self.check_inputs = True
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.encoder = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        token_type_ids: torch.Tensor | None = None,  # accepted for tokenizer compatibility; NeoBERT has none
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutput | tuple:
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        hidden, layout = self.embed(input_ids, inputs_embeds, attention_mask, position_ids, cu_seqlens, max_seqlen)
        rotary = self._rotary(layout, hidden.device) if self.config.rope else None

        all_hidden = (hidden,) if output_hidden_states else None
        all_weights = () if output_attentions else None
        for i, block in enumerate(self.transformer_encoder):
            hidden, weights = block(hidden, layout, rotary, need_weights=output_attentions, **kwargs)
            if output_attentions:
                all_weights += (weights,)
            if output_hidden_states and i < len(self.transformer_encoder) - 1:
                all_hidden += (hidden,)
        hidden = self.layer_norm(hidden)
        if output_hidden_states:
            # As in BERT, the last entry is `last_hidden_state` itself (here after the final norm).
            all_hidden += (hidden,)
        if not return_dict:
            return tuple(t for t in (hidden, all_hidden, all_weights) if t is not None)
        return BaseModelOutput(last_hidden_state=hidden, hidden_states=all_hidden, attentions=all_weights)

    def embed(self, input_ids, inputs_embeds, attention_mask, position_ids, cu_seqlens, max_seqlen):
        """Checks the inputs and returns (embeddings, layout); packed 1-D input becomes one row."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            if input_ids.dim() == 1 and cu_seqlens is not None:
                input_ids = input_ids.unsqueeze(0)
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
            if input_ids.is_floating_point():
                raise ValueError("input_ids must be integers")
            shape, device = tuple(input_ids.shape), input_ids.device
        else:
            if inputs_embeds.dim() == 2 and cu_seqlens is not None:
                inputs_embeds = inputs_embeds.unsqueeze(0)
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
                raise ValueError(
                    f"inputs_embeds must be (batch, length, {self.config.hidden_size}), "
                    f"got shape {tuple(inputs_embeds.shape)}"
                )
            shape, device = tuple(inputs_embeds.shape[:2]), inputs_embeds.device
        check = self.check_inputs and not torch.compiler.is_compiling()
        layout = build_layout(shape, device, attention_mask, position_ids, cu_seqlens, max_seqlen, check)
        if input_ids is not None:
            low, high = torch.aminmax(input_ids) if check else (0, 0)
            if int(low) < 0 or int(high) >= self.config.vocab_size:
                raise ValueError(
                    f"input_ids must lie in [0, {self.config.vocab_size}) (the vocabulary); "
                    f"got values from {int(low)} to {int(high)}"
                )
            inputs_embeds = self.encoder(input_ids)
        if not self.config.rope:
            positions = layout.position_ids
            if positions is None:
                positions = torch.arange(layout.length, device=device)[None]
            if check and int(positions.max()) >= self.config.max_length:
                raise ValueError(
                    f"learned position embeddings cover {self.config.max_length} positions; "
                    f"the input reaches position {int(positions.max())}"
                )
            inputs_embeds = inputs_embeds + self.positional_embedding(positions)
        return inputs_embeds, layout

    def _rotary(self, layout: AttentionLayout, device: torch.device) -> torch.Tensor:
        """(cos, sin) pairs shaped (batch or 1, length, 1, 1, head_dim / 2, 2): they broadcast over heads
        and over the q/k pair."""
        if layout.position_ids is None:
            table = self.rotary.get(layout.length, device)[: layout.length][None, :, None, None]
            return torch.view_as_real(table)
        positions = layout.position_ids
        if self.check_inputs and not torch.compiler.is_compiling():
            needed = int(positions.max()) + 1
        else:  # no read-back: packed positions stay below the length, user positions below max_length
            needed = max(layout.length, self.config.max_length)
        return torch.view_as_real(self.rotary.get(needed, device)[positions][:, :, None, None])
