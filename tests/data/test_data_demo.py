"""The demo corpus: text read out of pip archives, and the fixed split that keeps every text the
evaluation suite scores on out of the pre-training shards."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.data import tokenizer
from helpers.demo_archives import LONG_RESERVED_SENTENCE, SHORT_RESERVED_SENTENCE, SHORT_RESERVED_TWEET, make_archives
from neobert.data.prepare import PrepareConfig, prepare
from neobert.data.sequences import TokenCorpus
from neobert.demo import corpus as demo_corpus
from neobert.demo.contamination import ContaminationGuard, normalise


def decoded_documents(folder) -> list[str]:
    docs = []
    for split in ("train", "heldout"):
        corpus = TokenCorpus(folder, split)
        docs += tokenizer().batch_decode([corpus.document(i).tolist() for i in range(len(corpus))])
    return docs


def assert_no_reserved_text(folder, archives) -> int:
    """No prepared document equals, contains (6+ words) or shares 13 words with a reserved text. Both
    sides are compared as the tokenizer gives them back (lower case, accents stripped)."""
    reserved = list(demo_corpus.reserved_texts(archives))
    ids = tokenizer()(reserved, add_special_tokens=False)["input_ids"]
    guard = ContaminationGuard(tokenizer().batch_decode(ids))
    docs = decoded_documents(folder)
    flags = guard.flags(docs)
    assert not flags.any(), [docs[i][:300] for i in np.flatnonzero(flags)[:3]]
    return len(docs)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    archives = make_archives(folder / "archives")
    source = demo_corpus.DemoSource(archives)
    summary = prepare([source], folder / "out", tokenizer(), PrepareConfig(workers=1, progress=False))
    return archives, source, summary, folder / "out"


def test_demo_corpus_reads_every_pretraining_dataset_out_of_the_archives(demo):
    _, source, summary, _ = demo
    counts = source.dataset_counts
    pretraining = [d.name for d in demo_corpus.DATASETS if d.use != "evaluation"]
    assert sorted(counts) == sorted(pretraining)
    assert all(counts[name].documents > 0 for name in pretraining)
    assert counts["presidential_debates"].documents == 2  # one transcript per debate
    assert counts["hamlet"].documents == 3  # the title page and two acts
    total = sum(c.documents for c in counts.values())
    assert (
        summary.manifest["splits"]["train"]["documents"] + summary.manifest["splits"]["heldout"]["documents"] == total
    )
    assert summary.manifest["sources"][0]["datasets"]["news_articles"]["reserved"] == counts["news_articles"].reserved


def test_no_reserved_text_enters_the_shards(demo):
    archives, source, _, out = demo
    assert assert_no_reserved_text(out, archives) > 100
    counts = source.dataset_counts
    # The planted overlaps were caught by the guard, not by luck.
    assert counts["movie_reviews"].contaminated == 1
    assert counts["guardian_headlines"].contaminated == 1
    assert demo_corpus.is_reserved_for_evaluation("health_tweets", SHORT_RESERVED_TWEET)
    assert counts["commons_speeches"].contaminated == 1
    text = " ".join(decoded_documents(out))
    for planted in (LONG_RESERVED_SENTENCE, SHORT_RESERVED_SENTENCE, SHORT_RESERVED_TWEET):
        assert normalise(planted) not in normalise(text)


def test_split_datasets_are_partitioned_by_text(demo):
    archives = demo[0]
    news = demo_corpus.records("news_articles", archives)
    reserved = demo_corpus.evaluation_records("news_articles", archives)
    assert 8 <= len(reserved) <= 32  # about half of 40
    assert all(demo_corpus.is_reserved_for_evaluation("news_articles", r["text"]) for r in reserved)
    assert news[0]["text"] == news[39]["text"]
    assert (news[0] in reserved) == (news[39] in reserved)
    assert {r["source"] for r in news} == {"bbc.co.uk", "tass.com", "cnn.com"}
    assert '"?' not in " ".join(r["text"] for r in news)
    tweets = demo_corpus.evaluation_records("health_tweets", archives)
    assert tweets and all("http" not in t["text"] for t in tweets)
    assert len(demo_corpus.evaluation_texts("polarity_sentences", archives)) == 21


def test_the_split_never_changes_silently():
    # Pinned answers: if these change, SPLIT_VERSION must change and the evaluation suite be told.
    assert demo_corpus.SPLIT_VERSION == 1
    assert demo_corpus.is_reserved_for_evaluation("polarity_sentences", "anything")
    assert not demo_corpus.is_reserved_for_evaluation("movie_reviews", "anything")
    answers = [demo_corpus.is_reserved_for_evaluation("news_articles", f"article {i}") for i in range(12)]
    assert answers == PINNED_NEWS_ANSWERS
    with pytest.raises(KeyError, match="unknown demo dataset"):
        demo_corpus.is_reserved_for_evaluation("imdb", "text")


PINNED_NEWS_ANSWERS = [True, False, True, True, False, False, True, False, False, True, True, True]


@pytest.mark.slow
def test_real_demo_corpus_fetch_prepare_and_split(tmp_path):
    archives = demo_corpus.fetch_archives()
    sizes = {name: len(demo_corpus.evaluation_records(name, archives)) for name in demo_corpus.EVALUATION_SETS}
    assert sizes["polarity_sentences"] == 4000 and sizes["uncertainty"] == 3000
    assert sizes["rotten_tomatoes"] == 13905
    assert 1700 < sizes["news_articles"] < 2100 and 14000 < sizes["health_tweets"] < 17500
    source = demo_corpus.DemoSource(archives)
    summary = prepare([source], tmp_path / "demo", tokenizer(), PrepareConfig(progress=False))
    assert summary.manifest["splits"]["train"]["tokens"] > 3_000_000
    # Every document holds exactly the tokenizer's ids (the word path included).
    texts = list(demo_corpus.pretraining_documents(archives))
    expected = sorted(map(tuple, tokenizer()(texts, add_special_tokens=False)["input_ids"]))
    stored = [TokenCorpus(tmp_path / "demo", split) for split in ("train", "heldout")]
    assert sorted(tuple(c.document(i).tolist()) for c in stored for i in range(len(c))) == expected
    assert assert_no_reserved_text(tmp_path / "demo", archives) > 50_000
