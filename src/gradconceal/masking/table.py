"""The audit as a plain-text table (check, measured, threshold, result, meaning) for the terminal and docs.

Formatting only: this module imports nothing from the audit, so ``result`` (the report) can import it and
the imports point one way. What a table needs from a report is written down as the protocols below.
"""

from __future__ import annotations

import math
import textwrap
from typing import List, Optional, Protocol, Sequence


class TableRow(Protocol):
    """What one check must offer to be a row of the table (``CheckResult`` does)."""

    @property
    def title(self) -> str: ...

    @property
    def summary(self) -> str: ...

    @property
    def threshold(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def meaning(self) -> str: ...


class TableReport(Protocol):
    """What a report must offer to be printed as a table (``AuditReport`` does)."""

    @property
    def checks(self) -> Sequence[TableRow]: ...

    @property
    def model(self) -> str: ...

    @property
    def defense(self) -> str: ...

    @property
    def data(self) -> str: ...

    @property
    def images(self) -> int: ...

    @property
    def quick(self) -> bool: ...

    @property
    def seconds(self) -> float: ...

    def verdict_line(self) -> str: ...


_RESULT_WORDS = {"pass": "pass", "flag": "FLAG", "skip": "skip", "info": "info"}


def fmt(value: Optional[float], digits: int = 2) -> str:
    """Compact number for tables: about 3 significant digits, scientific outside [1e-3, 1e4)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value != 0 and not (1e-3 <= abs(value) < 1e4):
        return f"{value:.1e}"
    return f"{value:.{digits + 1}g}"


def format_table(report: TableReport, width: int = 40) -> str:
    """Rows of the report's checks; long cells wrap inside their column so the table stays readable."""
    header = ["check", "measured", "threshold", "result", "meaning"]
    rows = [[c.title, c.summary, c.threshold, _RESULT_WORDS[c.status], c.meaning] for c in report.checks]
    limits = [24, width, 30, 6, 52]
    wrapped = [[textwrap.wrap(cell, limit) or [""] for cell, limit in zip(row, limits)] for row in rows]
    widths = [max([len(header[i])] + [len(line) for row in wrapped for line in row[i]]) for i in range(len(header))]
    lines: List[str] = [_join(header, widths), _join(["-" * w for w in widths], widths)]
    for row in wrapped:
        for k in range(max(len(cell) for cell in row)):
            lines.append(_join([cell[k] if k < len(cell) else "" for cell in row], widths))
    title = (f"gradient-masking audit: {report.model}, defense {report.defense}, {report.images} images of "
             f"{report.data}{' (quick)' if report.quick else ''}, {report.seconds:.1f} s")
    return "\n".join([title] + lines)


def _join(cells: List[str], widths: List[int]) -> str:
    return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths)).rstrip()


def format_markdown(report: TableReport) -> str:
    """The same table as Markdown (for READMEs and reports), with the verdict line under it."""
    lines = ["| check | measured | threshold | result | meaning |", "|---|---|---|---|---|"]
    for c in report.checks:
        cells = [c.title, c.summary, c.threshold, _RESULT_WORDS[c.status], c.meaning]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines + ["", f"**{report.verdict_line()}**"])
