import pytest

from helpers.data import sample_texts


@pytest.fixture(scope="module")
def mixed_corpus(prepared_corpus):
    """Documents of mixed lengths (every sixth one long), sequences of 32 tokens, 10% held out: enough
    documents a step for batch-size warm-up and loader workers to matter."""
    return prepared_corpus(sample_texts(240, seed=5, long_every=6, long_words=50), max_length=32, heldout_fraction=0.1)
