"""Token classification data: CoNLL-style files and labels aligned to word pieces.

A CoNLL file has one word per line with its tag in the last column (`EU B-ORG`, or CoNLL-2003's four
columns), a blank line between sentences, and optional `-DOCSTART-` lines, which are skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from neobert.finetune.data import Encoded, FinetuneDataError, LabelSpace
from neobert.text_files import TextEncodingError, check_utf8

IGNORE_INDEX = -100


@dataclass
class TaggedSentences:
    words: list[list[str]]
    tags: list[list[str]]
    source: str = ""

    def __len__(self) -> int:
        return len(self.words)


def read_conll(path: str | os.PathLike) -> TaggedSentences:
    path = Path(path)
    if not path.is_file():
        raise FinetuneDataError(f"{path}: no such file")
    words: list[list[str]] = []
    tags: list[list[str]] = []
    sentence_words: list[str] = []
    sentence_tags: list[str] = []

    def close_sentence() -> None:
        if sentence_words:
            words.append(list(sentence_words))
            tags.append(list(sentence_tags))
            sentence_words.clear()
            sentence_tags.clear()

    try:
        text = check_utf8(path, path.read_bytes())
    except TextEncodingError as error:
        raise FinetuneDataError(str(error)) from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("-DOCSTART-"):
            close_sentence()
            continue
        parts = line.split()
        if len(parts) < 2:
            raise FinetuneDataError(f"{path}:{number}: a word but no tag: {line!r}")
        sentence_words.append(parts[0])
        sentence_tags.append(parts[-1])
    close_sentence()
    if not words:
        raise FinetuneDataError(f"{path}: no tagged sentences")
    return TaggedSentences(words=words, tags=tags, source=str(path))


def tag_space(train: TaggedSentences) -> LabelSpace:
    names = sorted({tag for sentence in train.tags for tag in sentence}, key=lambda t: (t != "O", t))
    return LabelSpace(problem="token", names=names)


def align_labels(sentences: TaggedSentences, space: LabelSpace, tokenizer, max_length: int) -> Encoded:
    """Word pieces of each sentence between [CLS] and [SEP]; a word's tag goes on its first piece, the other
    pieces and the special tokens get -100 (not scored). Sentences longer than `max_length` are cut."""
    index = {name: i for i, name in enumerate(space.names)}
    all_words = [word for sentence in sentences.words for word in sentence]
    pieces = tokenizer(all_words, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    unk = tokenizer.unk_token_id
    ids_out, labels_out = [], []
    cursor = 0
    for number, tags in enumerate(sentences.tags, start=1):
        ids, labels = [tokenizer.cls_token_id], [IGNORE_INDEX]
        for tag in tags:
            if tag not in index:
                raise FinetuneDataError(
                    f"{sentences.source}: sentence {number}: tag {tag!r} never occurs in the training data"
                )
            word_pieces = pieces[cursor] or [unk]  # a word the tokenizer drops entirely still gets a slot
            cursor += 1
            ids.extend(word_pieces)
            labels.extend([index[tag]] + [IGNORE_INDEX] * (len(word_pieces) - 1))
        ids, labels = ids[: max_length - 1], labels[: max_length - 1]
        ids.append(tokenizer.sep_token_id)
        labels.append(IGNORE_INDEX)
        ids_out.append(ids)
        labels_out.append(labels)
    return Encoded(input_ids=ids_out, targets=labels_out)
