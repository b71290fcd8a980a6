"""Evaluation: pseudo-perplexity, the offline suite of GLUE-style tasks on available data, retrieval, MTEB."""
