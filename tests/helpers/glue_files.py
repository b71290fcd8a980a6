"""Tiny GLUE folders in each task's real file format (the original GLUE distribution's TSV layouts)."""

from __future__ import annotations

from pathlib import Path

WORDS = ["good", "bad"]


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_glue_folder(root: Path, rows: int = 12) -> Path:
    """CoLA has no header (source, label, original mark, sentence); the others have their real headers."""
    for split in ("train", "dev"):
        n = rows if split == "train" else rows // 2
        cue = [WORDS[i % 2] for i in range(n)]
        _write(root / "CoLA" / f"{split}.tsv", [f"gj04\t{i % 2}\t\tthe {cue[i]} sentence {i}" for i in range(n)])
        _write(root / "SST-2" / f"{split}.tsv", ["sentence\tlabel"] + [f"a {cue[i]} film\t{i % 2}" for i in range(n)])
        _write(
            root / "MRPC" / f"{split}.tsv",
            ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
            + [f'{i % 2}\t{100 + i}\t{200 + i}\tHe said "{cue[i]}" .\tShe said {cue[i]} .' for i in range(n)],
        )
        _write(
            root / "STS-B" / f"{split}.tsv",
            ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
            + [
                f"{i}\tmain-news\tx\t2012\t{i}\tnone\tnone\tA {cue[i]} cat .\tA cat .\t{(i % 5) + 0.5:.3f}"
                for i in range(n)
            ],
        )
        _write(
            root / "QQP" / f"{split}.tsv",
            ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"]
            + [f"{i}\t{2 * i}\t{2 * i + 1}\tWhy {cue[i]}?\tHow {cue[i]}?\t{i % 2}" for i in range(n)],
        )
        for name in ("QNLI", "RTE", "WNLI"):
            label = (lambda i: ("entailment", "not_entailment")[i % 2]) if name != "WNLI" else (lambda i: str(i % 2))
            first, second = ("question", "sentence") if name == "QNLI" else ("sentence1", "sentence2")
            _write(
                root / name / f"{split}.tsv",
                [f"index\t{first}\t{second}\tlabel"]
                + [f"{i}\tIs it {cue[i]}?\tIt is {cue[i]}.\t{label(i)}" for i in range(n)],
            )
    nli = ("entailment", "neutral", "contradiction")
    header = "\t".join(
        ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse"]
        + ["sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
    )
    parses = "( a )\t( b )\t(ROOT a)\t(ROOT b)"
    _write(
        root / "MNLI" / "train.tsv",
        [header + "\tlabel1\tgold_label"]
        + [
            f"{i}\t{i}\t{i}n\tfiction\t{parses}\tThe cat sat {i}.\tA cat {WORDS[i % 2]}.\t{nli[i % 3]}\t{nli[i % 3]}"
            for i in range(rows)
        ],
    )
    for name in ("dev_matched", "dev_mismatched"):
        _write(
            root / "MNLI" / f"{name}.tsv",
            [header + "\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label"]
            + [
                f"{i}\t{i}\t{i}n\tslate\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tA dog ran {i}.\tA dog.\t"
                + "\t".join([nli[i % 3]] * 6)
                for i in range(rows // 2)
            ],
        )
    return root
