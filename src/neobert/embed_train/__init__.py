"""Contrastive fine-tuning of NeoBERT into a sentence embedder (spec D.3): InfoNCE on cosine similarity,
in-batch and hard negatives, one dataset per batch, datasets sampled in proportion to n^alpha."""
