"""One benchmark number (``Row``), its target, and the ratio table the suite prints and writes.

A row is a measured value with its unit; a ratio row may carry a target (``<= 1.1``) and says whether it
is met. ``detail`` keeps the raw numbers behind the value (medians, counts) for ``bench.json``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

Value = Union[float, int, str]

_COMPARE = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, ">": lambda a, b: a > b,
            "==": lambda a, b: a == b}


@dataclass
class Row:
    """One line of the benchmark table: what was measured on which case, the value and its target."""

    bench: str
    case: str
    measure: str
    value: Value
    unit: str = ""
    target: Optional[Tuple[str, Value]] = None
    note: str = ""
    detail: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.target is not None and self.target[0] not in _COMPARE:
            raise ValueError(f"target comparison must be one of {list(_COMPARE)}, got {self.target[0]!r}")

    @property
    def met(self) -> Optional[bool]:
        """Whether the value meets the target (None without a target or without a number)."""
        if self.target is None:
            return None
        op, bound = self.target
        if isinstance(self.value, float) and math.isnan(self.value):
            return None
        if isinstance(self.value, str) != isinstance(bound, str):
            return None
        return bool(_COMPARE[op](self.value, bound))

    def formatted_value(self) -> str:
        """The value as printed in the table (3 significant digits, unit appended)."""
        return format_value(self.value, self.unit)

    def formatted_target(self) -> str:
        """The target as printed (``<= 1.1x``), empty without one."""
        if self.target is None:
            return ""
        op, bound = self.target
        if isinstance(bound, float):
            return f"{op} {bound:g}{self.unit if self.unit in ('x', '%') else ' ' + self.unit}".rstrip()
        return f"{op} {format_value(bound, self.unit)}"

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict (nan becomes None)."""
        data = asdict(self)
        data["target"] = list(self.target) if self.target is not None else None
        data["met"] = self.met
        return _jsonable(data)


def format_value(value: Value, unit: str = "") -> str:
    """A number with 3 significant digits (ratios with 3 decimals, integers as they are) and its unit."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if isinstance(value, int):
        text = f"{value:,}"
    elif unit == "x" and 0.1 <= abs(value) < 10:
        text = f"{value:.3f}"  # ratios: enough digits to see which side of a target they fall
    elif value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        text = f"{value:.3g}"
    else:
        text = f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if not unit:
        return text
    return f"{text}{unit}" if unit in ("x", "%") else f"{text} {unit}"


def met_mark(met: Optional[bool]) -> str:
    """'yes', 'NO' or '' for a row's target column."""
    if met is None:
        return ""
    return "yes" if met else "NO"


def ratio_table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table: bench | case | measure | value | target | met | note."""
    header = ["bench", "case", "measure", "value", "target", "met", "note"]
    lines = [header]
    for row in rows:
        lines.append([row.bench, row.case, row.measure, row.formatted_value(), row.formatted_target(),
                      met_mark(row.met), row.note])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for number, line in enumerate(lines):
        out.append("| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths)) + " |")
        if number == 0:
            out.append("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(out)


def targets_summary(rows: Iterable[Row]) -> Tuple[int, int, List[Row]]:
    """(targets met, targets checked, rows that missed theirs)."""
    checked = [row for row in rows if row.met is not None]
    missed = [row for row in checked if not row.met]
    return len(checked) - len(missed), len(checked), missed


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
