"""Task heads on the NeoBERT encoder (masked LM, sequence classification, token classification) and `HEADS`,
the registry of every model class "neobert" offers: the one place a new head is declared."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import WeightRenaming
from transformers.modeling_outputs import MaskedLMOutput, SequenceClassifierOutput, TokenClassifierOutput

from neobert.config import NeoBERTConfig
from neobert.model.encoder import NeoBERTModel, NeoBERTPreTrainedModel
from neobert.model.inputs import cu_seqlens_from_positions
from neobert.model.mlm_loss import DEFAULT_CHUNK_ROWS, fused_decoder_cross_entropy

IGNORE_INDEX = -100


def _check_labels(labels: torch.Tensor, shape: tuple[int, ...], what: str) -> None:
    if tuple(labels.shape) != tuple(shape):
        raise ValueError(f"{what} labels have shape {tuple(labels.shape)}, expected {tuple(shape)}")


def _as_output(return_dict: bool | None, config: NeoBERTConfig, output_class, loss, logits, encoded, **extra):
    """The transformers output object, or its tuple: the fields that are set, in order (loss first when
    there is one)."""
    output = output_class(
        loss=loss, logits=logits, hidden_states=encoded.hidden_states, attentions=encoded.attentions, **extra
    )
    return output if (return_dict if return_dict is not None else config.return_dict) else output.to_tuple()


@dataclass
class NeoBERTMaskedLMOutput(MaskedLMOutput):
    """transformers' masked-LM output, plus `predictions`: the top-1 token of each scored row, set (and
    `logits` left None) when the training loss was computed without building the logits."""

    predictions: torch.LongTensor | None = None


class NeoBERTForMaskedLM(NeoBERTPreTrainedModel):
    """The released `NeoBERTLMHead`: an untied linear decoder with bias on the final hidden states
    (`tie_word_embeddings=True` shares its weight with the token embedding; the bias stays its own).

    With `labels` in training mode, the decoder runs only where the label is not -100. When gradients are
    being recorded, the decoder and the loss are fused (`mlm_loss.py`): the logits are never built, `logits`
    is None and `predictions` holds each scored row's top-1 token, in the order of the scored positions.
    Otherwise (no gradients, or `loss_chunk_rows = 0`) `logits` holds just those rows (n_scored, vocab). In
    eval mode the logits are dense (batch, length, vocab).
    """

    _tied_weights_keys = {"decoder.weight": "model.encoder.weight"}
    # Scored rows per chunk of the fused training loss; 0 builds the logits of every scored row instead.
    loss_chunk_rows: int = DEFAULT_CHUNK_ROWS

    def __init__(self, config: NeoBERTConfig):
        super().__init__(config)
        self.model = NeoBERTModel(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=True)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.decoder = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        encoded = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            cu_seqlens=cu_seqlens,
            max_seqlen=max_seqlen,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            **kwargs,
        )
        hidden = encoded.last_hidden_state
        loss = predictions = None
        if labels is not None:
            if labels.dim() == 1 and labels.numel() == hidden.shape[0] * hidden.shape[1]:
                labels = labels.view(hidden.shape[:2])  # packed input given as one flat row
            _check_labels(labels, hidden.shape[:2], "masked-LM")
            labels = labels.to(hidden.device)
            if self.training:
                selected = labels != IGNORE_INDEX
                hidden, labels = hidden[selected], labels[selected]
            # Only a plain linear decoder is fused: one wrapped by an adapter (LoRA) computes more than its weight.
            fusable = type(self.decoder) is nn.Linear and self.loss_chunk_rows
            if self.training and fusable and torch.is_grad_enabled():
                decoder = self.decoder
                loss, predictions = fused_decoder_cross_entropy(
                    hidden, decoder.weight, decoder.bias, labels, self.loss_chunk_rows
                )
                logits = None
            else:
                logits = self.decoder(hidden)
                flat_logits = logits.reshape(-1, logits.shape[-1]).float()
                flat_labels = labels.reshape(-1)
                # Sum over the masked positions divided by their count: a batch without any masked
                # position gives a zero loss rather than NaN.
                total = F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX, reduction="sum")
                loss = total / (flat_labels != IGNORE_INDEX).sum().clamp(min=1)
        else:
            logits = self.decoder(hidden)
        return _as_output(
            return_dict, self.config, NeoBERTMaskedLMOutput, loss, logits, encoded, predictions=predictions
        )


def sequence_classification_loss(config: NeoBERTConfig, logits: torch.Tensor, labels: torch.Tensor):
    """Regression (MSE), single-label (cross-entropy) or multi-label (BCE), chosen as transformers does."""
    num_labels = logits.shape[-1]
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(-1).float(), labels.reshape(-1).float())
        return F.mse_loss(logits.float(), labels.float())
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.reshape(-1, num_labels).float(), labels.reshape(-1).long())
    if labels.shape != logits.shape:
        raise ValueError(f"multi-label labels must have shape {tuple(logits.shape)}, got {tuple(labels.shape)}")
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


# The released checkpoint calls the sequence head's hidden layer `dense`; the model calls it `pre_classifier`, so
# that PEFT's default for sequence classification (keep with the adapter every module whose name ends in
# "classifier") saves it: a LoRA adapter never leaves it at a random initialisation. Files keep the released
# name: transformers renames it on load and back on save, and a raw `load_state_dict` is renamed by a hook.
RELEASED_HEAD_NAME = "dense"
HEAD_NAME = "pre_classifier"
# By class name (transformers 5.9 and later look conversions up so): the other classes have no such layer.
register_checkpoint_conversion_mapping(
    "NeoBERTForSequenceClassification",
    [WeightRenaming(rf"^{RELEASED_HEAD_NAME}\.", f"{HEAD_NAME}.")],
    overwrite=True,
)


def _released_head_names_on_load(module, state_dict, prefix, *args) -> None:
    released = f"{prefix}{RELEASED_HEAD_NAME}."
    for key in [key for key in state_dict if key.startswith(released)]:
        state_dict[f"{prefix}{HEAD_NAME}.{key[len(released) :]}"] = state_dict.pop(key)


class NeoBERTForSequenceClassification(NeoBERTPreTrainedModel):
    """The released head: first token -> dropout -> pre_classifier (the release's `dense`) -> tanh -> dropout
    -> classifier.

    With packed input (`cu_seqlens`), each document gets its own row of logits.
    """

    _keys_to_ignore_on_load_unexpected = [r"^decoder\."]
    head_layers = ("pre_classifier", "classifier")
    # Read by PEFT when it loads an adapter: one saved before the rename names the layer `dense`.
    _checkpoint_conversion_mapping = {rf"^{RELEASED_HEAD_NAME}\.": f"{HEAD_NAME}."}

    def __init__(self, config: NeoBERTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = NeoBERTModel(config)
        self.pre_classifier = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self._register_load_state_dict_pre_hook(_released_head_names_on_load, with_module=True)
        self.post_init()

    @property
    def dense(self) -> nn.Module:
        """The release's name for `pre_classifier`."""
        return self.pre_classifier

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        encoded = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            cu_seqlens=cu_seqlens,
            max_seqlen=max_seqlen,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            **kwargs,
        )
        hidden = encoded.last_hidden_state
        if cu_seqlens is None and position_ids is not None and attention_mask is None:
            # Documents packed as transformers' flattening collator does: positions restart at 0.
            cu_seqlens = cu_seqlens_from_positions(
                position_ids.view(1, -1) if position_ids.dim() == 1 else position_ids
            )
        if cu_seqlens is not None:
            first = hidden[0, cu_seqlens[:-1].long().to(hidden.device)]
        else:
            first = hidden[:, 0]
        pooled = torch.tanh(self.pre_classifier(self.dropout(first)))
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = sequence_classification_loss(self.config, logits, labels.to(logits.device))
        return _as_output(return_dict, self.config, SequenceClassifierOutput, loss, logits, encoded)


class NeoBERTForTokenClassification(NeoBERTPreTrainedModel):
    """A per-token linear classifier (for NER and tagging); not part of the release."""

    _keys_to_ignore_on_load_unexpected = [r"^decoder\."]
    head_layers = ("classifier",)

    def __init__(self, config: NeoBERTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = NeoBERTModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        encoded = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            cu_seqlens=cu_seqlens,
            max_seqlen=max_seqlen,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            **kwargs,
        )
        logits = self.classifier(self.dropout(encoded.last_hidden_state))
        loss = None
        if labels is not None:
            _check_labels(labels, logits.shape[:2], "token-classification")
            loss = F.cross_entropy(
                logits.reshape(-1, self.num_labels).float(),
                labels.reshape(-1).to(logits.device),
                ignore_index=IGNORE_INDEX,
            )
        return _as_output(return_dict, self.config, TokenClassifierOutput, loss, logits, encoded)


@dataclass(frozen=True)
class Head:
    """How a model class is reached from outside this file. Its new layers, which start untrained, are the
    class's own `head_layers`."""

    model_class: type[NeoBERTPreTrainedModel]
    auto_class: str  # the name of the transformers Auto class that loads it
    peft_task: str | None  # PEFT's `task_type` for LoRA on it; None where none of PEFT's fits


# Every model class "neobert" offers, by class name (each named NeoBERT...: only such names are looked up here
# by `neobert`). The Auto classes' registration (model/hf.py), the `auto_map` of exported remote code, LoRA's
# task types and saved layers (lora.py) and the public names of `neobert.model` and `neobert` are all read
# from here: a new head is its class above (its new layers named in `head_layers`) and a row here.
HEADS: dict[str, Head] = {
    head.model_class.__name__: head
    for head in (
        Head(NeoBERTModel, "AutoModel", "FEATURE_EXTRACTION"),
        Head(NeoBERTForMaskedLM, "AutoModelForMaskedLM", None),
        Head(NeoBERTForSequenceClassification, "AutoModelForSequenceClassification", "SEQ_CLS"),
        Head(NeoBERTForTokenClassification, "AutoModelForTokenClassification", "TOKEN_CLS"),
    )
}
