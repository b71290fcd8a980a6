"""NeoBERT as an MTEB (v2) encoder: `mteb.evaluate(NeoBERTEncoder("my-embedder"), tasks)`.

Prompts are chosen the MTEB way (task name, then task type, each with or without the query/document
side); the defaults below give retrieval-style tasks a query-side instruction, and prompts stored with the
model (`neobert export --prompt`) override them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from mteb.models import ModelMeta
from mteb.models.abs_encoder import AbsEncoder

from neobert.embed import encode, load_embedder
from neobert.run_settings import digest_of, model_digest

# Query-side instructions for asymmetric task types; documents and symmetric tasks are left as they are.
PROMPTS_BY_TASK_TYPE = {
    "Retrieval-query": "Given a search query, find the passages that answer it. Query: ",
    "Reranking-query": "Given a search query, rank the passages by how well they answer it. Query: ",
    "InstructionRetrieval-query": "Query: ",
}


def local_revision(path: str | Path, pooling: str | None, prompts: dict[str, str]) -> str:
    """What mteb's result cache keys a local model by, beside its name: a digest of the weights and of what
    changes the vectors (pooling, prompts). A fixed "local" let a retrained model, or another one in a
    folder of the same name, read back the scores cached for the first."""
    digest = digest_of({"model": model_digest(path), "pooling": pooling, "prompts": prompts})
    return f"local-{digest[:16]}"


def neobert_model_meta(path: str | Path, embedder, revision: str = "local") -> ModelMeta:
    model = embedder.model
    return ModelMeta(
        loader=None,
        name=f"neobert/{Path(path).name}",
        revision=revision,
        release_date=None,
        languages=["eng-Latn"],
        n_parameters=sum(p.numel() for p in model.parameters()) if model is not None else None,
        memory_usage_mb=None,
        max_tokens=embedder.max_length,
        embed_dim=model.config.hidden_size if model is not None else None,
        license="mit",
        open_weights=True,
        public_training_code=None,
        public_training_data=None,
        framework=["PyTorch", "Sentence Transformers"],
        reference="https://arxiv.org/abs/2502.19587",
        similarity_fn_name="cosine",
        use_instructions=True,
        training_datasets=None,
    )


class NeoBERTEncoder(AbsEncoder):
    """MTEB's encoder protocol over `neobert.embed.encode` (length-sorted, packed, normalised); `pooling`
    None uses the folder's stored pooling, as `encode` does."""

    def __init__(
        self,
        model_name: str,
        revision: str | None = None,
        *,
        device: str | None = None,
        pooling: str | None = None,
        batch_size: int = 64,
        use_default_prompts: bool = True,
        prompts: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.embedder = load_embedder(model_name)
        if device is not None:
            self.embedder.model.to(device)
        self.pooling, self.batch_size = pooling, batch_size
        self.model_prompts = {
            **(PROMPTS_BY_TASK_TYPE if use_default_prompts else {}),
            **self.embedder.prompts,
            **(prompts or {}),
        }
        revision = local_revision(model_name, pooling, self.model_prompts)
        self.mteb_model_meta = neobert_model_meta(model_name, self.embedder, revision)

    def prompt_for(self, task_metadata, prompt_type) -> str:
        name = self.get_prompt_name(task_metadata, prompt_type)
        return self.model_prompts.get(name, "") if name else ""

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str, prompt_type=None, **kwargs) -> np.ndarray:
        texts = [text for batch in inputs for text in batch["text"]]
        return encode(
            self.embedder,
            texts,
            pooling=self.pooling,
            prompt=self.prompt_for(task_metadata, prompt_type),
            batch_size=self.batch_size,
            show_progress=False,
        )
