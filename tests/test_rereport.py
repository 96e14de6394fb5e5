"""Re-reporting committed result folders with today's code gives the same numbers and the same tables.

``gradconceal evaluate docs/results/<spec>.toml --out <copy of the committed folder>`` computes no record (they
are all there) and writes the report again: every number of results.json and every cell of report.md's tables
must be what was committed (run times aside).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, List

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def _table_rows(report: Path) -> List[str]:
    """The data rows of every Markdown table (header rows name columns, not numbers)."""
    rows = []
    for line in report.read_text(encoding="utf-8").splitlines():
        if line.startswith("| ") and not line.startswith(("| Model |", "| model |", "| Attack |", "| attack |")):
            rows.append(line)
    return rows


def _numbers(results: Path) -> Any:
    data = json.loads(results.read_text(encoding="utf-8"))
    return data["rows"], [(a["label"], a["group"], a["origin"], a["settings"]) for a in data["attacks"]]


def _without_new_counts(value: Any) -> Any:
    """The rows without the counts added since the committed folders were written (``non_finite``: 0 there, as
    no committed model gives NaN), so that every number the committed report has is compared."""
    if isinstance(value, dict):
        return {k: _without_new_counts(v) for k, v in value.items() if not (k == "non_finite" and v == 0)}
    if isinstance(value, (list, tuple)):
        return type(value)(_without_new_counts(v) for v in value)
    return value


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lite0-photos", "fashion-mnist"])
def test_committed_folders_rereport_with_the_same_numbers(name: str, tmp_path: Path) -> None:
    from gradconceal.data import load_dataset
    from gradconceal.errors import GradconcealError
    from gradconceal.evaluation.api import evaluate

    if name.startswith("fashion-mnist"):
        try:
            load_dataset("fashion-mnist", limit=1)
        except GradconcealError as error:
            pytest.skip(f"Fashion-MNIST not available: {error}")

    committed = RESULTS / name
    copy = tmp_path / name
    shutil.copytree(committed, copy)
    results = evaluate(RESULTS / f"{name}.toml", copy, quiet=True, plots=False)
    assert results.info["computed_records"] == 0
    assert _without_new_counts(_numbers(copy / "results.json")) == _numbers(committed / "results.json")
    assert _table_rows(copy / "report.md") == _table_rows(committed / "report.md")
