import pytest
import torch

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
