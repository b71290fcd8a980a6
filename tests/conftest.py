from pathlib import Path

import pytest
import torch

from helpers.data import prepare_files, sample_texts, write_jsonl
from helpers.model import small_config
from neobert import NeoBERTConfig, load_tokenizer


@pytest.fixture
def config() -> NeoBERTConfig:
    return small_config()


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer()


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared machine a busy core stalls every
    two-thread operation at its barrier (10x slower); one thread keeps such tests fast either way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def prepared_corpus(tmp_path_factory):
    """A factory: `prepared_corpus(texts, **settings)` writes the texts as JSON lines into a fresh folder,
    prepares them there with the settings (`helpers.data.prepare_files`) and returns the prepared folder. Each
    call prepares its own copy, so a test that damages its corpus cannot reach another module's."""

    def prepare(texts: list[str], **settings) -> Path:
        folder = tmp_path_factory.mktemp("corpus")
        prepare_files([write_jsonl(folder / "docs.jsonl", texts)], folder / "prepared", **settings)
        return folder / "prepared"

    return prepare


@pytest.fixture(scope="module")
def corpus(prepared_corpus):
    """The corpus most command tests train on: 300 short documents, sequences of 32 tokens, 10% held out."""
    return prepared_corpus(sample_texts(300, long_every=0), max_length=32, heldout_fraction=0.1)
