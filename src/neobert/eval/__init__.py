"""Evaluation: task metrics, pseudo-perplexity, the offline suite of GLUE-style tasks on available data."""
