"""Evaluation: pseudo-perplexity, MTEB, score tables. (The offline suites on the demo corpus are neobert.demo's.)"""
