"""Re-reporting committed result folders with today's code gives the same numbers and the same tables.

``gradconceal evaluate docs/results/<spec>.toml --out <copy of the committed folder>`` computes no record (they
are all there) and writes the report again: every number of results.json and every cell of report.md's tables
must be what was committed (run times aside), and the masking audits must be re-reported, not recomputed. A
change to the audit's or the defences' code recomputes them (``audit.json`` keeps a digest of that code): then
re-report every current folder in place with the same command (``--out docs/results/<spec>``) and commit its
audit.json and report.
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


FOLDERS = sorted(p.parent.name for p in RESULTS.glob("*/results.json"))
STALE_HEADING = "## Not yet regenerated"


def _current(name: str) -> bool:
    from gradconceal.evaluation.provenance import by_current_attack_code

    return by_current_attack_code(json.loads((RESULTS / name / "results.json").read_text(encoding="utf-8")))


def _declared_stale() -> List[str]:
    """The folders docs/results/README.md lists under its 'Not yet regenerated' heading (`name` items)."""
    text = (RESULTS / "README.md").read_text(encoding="utf-8")
    if STALE_HEADING not in text:
        return []
    section = text.split(STALE_HEADING, 1)[1].split("\n## ", 1)[0]
    return sorted(line.split("`")[1] for line in section.splitlines() if line.startswith("- `"))


def test_every_folder_made_by_older_attack_code_is_declared_stale() -> None:
    """A committed folder is either what today's code computes (re-reported below) or listed as not yet
    regenerated in docs/results/README.md: never an older table presented as current."""
    stale = sorted(name for name in FOLDERS if not _current(name))
    assert stale == _declared_stale()


@pytest.mark.slow
@pytest.mark.parametrize("name", FOLDERS)
def test_committed_folders_rereport_with_the_same_numbers(name: str, tmp_path: Path) -> None:
    from gradconceal.data import load_dataset
    from gradconceal.errors import GradconcealError
    from gradconceal.evaluation.api import evaluate

    if not _current(name):
        assert name in _declared_stale()
        with pytest.raises(GradconcealError, match="--recompute"):  # never re-reported as if current
            _rereport(name, tmp_path, evaluate)
        return
    if name.startswith("fashion-mnist"):
        try:
            load_dataset("fashion-mnist", limit=1)
        except GradconcealError as error:
            pytest.skip(f"Fashion-MNIST not available: {error}")
    committed = RESULTS / name
    results = _rereport(name, tmp_path, evaluate)
    copy = tmp_path / name
    assert results.info["computed_records"] == 0
    recomputed, kept = _numbers(copy / "results.json"), _numbers(committed / "results.json")
    assert _without_new_counts(recomputed) == _without_new_counts(kept)
    assert _table_rows(copy / "report.md") == _table_rows(committed / "report.md")
    if (committed / "audit.json").is_file():  # the verdicts were made by today's audit, not re-made here
        audits = [json.loads((folder / "audit.json").read_text(encoding="utf-8"))["rows"] for folder in (copy, committed)]
        assert audits[0] == audits[1], f"{name}: the audit code changed since; re-report the folder (module docstring)"


def _rereport(name: str, tmp_path: Path, evaluate: Any) -> Any:
    copy = tmp_path / name
    shutil.copytree(RESULTS / name, copy)
    return evaluate(RESULTS / f"{name}.toml", copy, quiet=True, plots=False)
