"""Scores as a plain-text table for the end of a long command (the JSON file keeps every detail)."""

from __future__ import annotations

from collections.abc import Sequence


def score_table(header: Sequence[str], rows: Sequence[Sequence[object]], digits: int = 4) -> str:
    """Columns aligned: the first left (names), the others right (numbers, `digits` decimals)."""

    def cell(value: object) -> str:
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    table = [[str(h) for h in header], *[[cell(v) for v in row] for row in rows]]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = []
    for number, line in enumerate(table):
        cells = [line[0].ljust(widths[0])] + [
            text.rjust(width) for text, width in zip(line[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)
