"""The outcome of an evaluation: the spec, the attacks as run, the metrics per (model, defence), run facts.

``Results`` is what ``evaluate`` returns and what ``results.json`` stores (``Results.to_dict``); reading a
``results.json`` back gives the numbers without the records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from gradconceal.errors import GradconcealError
from gradconceal.evaluation.metrics import RowMetrics
from gradconceal.evaluation.tables import text_table
from gradconceal.attacks.plan import AttackPlan
from gradconceal.evaluation.spec import FORMAT_VERSION, EvalSpec

RESULTS_KIND = "gradconceal-results"


@dataclass
class Results:
    """Numbers of one evaluation; ``table()`` gives the side-by-side table, ``ar(...)`` one number."""

    spec: EvalSpec
    plans: List[AttackPlan]
    rows: List[RowMetrics]
    out_dir: Path
    info: Dict[str, Any] = field(default_factory=dict)  # device, versions, run time, notes, audit, ...
    rank: int = 0  # this process's rank under torchrun (only rank 0 writes the report)

    def row(self, model: str, defense: str) -> RowMetrics:
        """The metrics of one (model label, defence label) row."""
        for row in self.rows:
            if row.model == model and row.defense == defense:
                return row
        known = ", ".join(f"{r.model}/{r.defense}" for r in self.rows)
        raise GradconcealError(f"no row for model {model!r} with defence {defense!r}; rows: {known}")

    def ar(self, model: str, defense: str, attack: str) -> Optional[float]:
        """Attack robustness (0..1) of one attack on one row; None if not applicable or no clean-correct image."""
        row = self.row(model, defense)
        if attack not in row.attacks:
            raise GradconcealError(f"no attack {attack!r} in this evaluation; attacks: {', '.join(row.attacks)}")
        metrics = row.attacks[attack]
        return None if metrics is None else metrics.ar.value

    def clean_accuracy(self, model: str, defense: str) -> Optional[float]:
        """Clean accuracy (0..1) of one row."""
        return self.row(model, defense).clean.value

    def table(self) -> str:
        """The paper's protocol and the adaptive attacks side by side, as plain text (rows = attacks)."""
        return text_table(self.plans, self.rows, self.info)

    @property
    def records_path(self) -> Path:
        """The per-sample records these numbers come from."""
        return self.out_dir / "records.jsonl"

    def to_dict(self) -> Dict[str, Any]:
        """Everything ``results.json`` holds: numbers, spec, attacks as run, run facts."""
        return {
            "kind": RESULTS_KIND,
            "format_version": FORMAT_VERSION,
            "spec": self.spec.to_dict(),
            "attacks": [p.to_dict() for p in self.plans],
            "rows": [r.to_dict() for r in self.rows],
            "records": "records.jsonl",
            **self.info,
        }


def read_results(path: Path) -> Dict[str, Any]:
    """Read a ``results.json`` (as a dict), refusing anything else with a clear message."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise GradconcealError(f"cannot read results file {path}: {error}") from None
    if not isinstance(data, dict) or data.get("kind") != RESULTS_KIND:
        raise GradconcealError(f"{path} is not a gradconceal results.json")
    return data


def numbers(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The counts behind every rate of ``results.json`` rows, keyed by 'model/defence/what' (for comparisons)."""
    out: Dict[str, Any] = {}
    for row in rows:
        head = f"{row['model']}/{row['defense']}"
        out[f"{head}/clean"] = (row["clean_accuracy"]["k"], row["clean_accuracy"]["n"])
        for label, m in row["attacks"].items():
            out[f"{head}/{label}"] = None if m is None else (m["ar"]["k"], m["ar"]["n"], m["robust_accuracy"]["k"])
        for name in ("worst_case_white_box", "worst_case_all", "worst_case_presets"):
            w = row.get(name)
            out[f"{head}/{name}"] = None if w is None else (w["ar"]["k"], w["ar"]["n"])
        for point in row.get("sweep", []):
            out[f"{head}/{point['attack']}"] = (point["ar"]["k"], point["ar"]["n"], point["robust_accuracy"]["k"])
    return out


def compare(original: List[Dict[str, Any]], rerun: List[Dict[str, Any]]) -> List[str]:
    """Differences between two runs' numbers, one line each (empty when every count is equal)."""
    before, after = numbers(original), numbers(rerun)
    lines = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            lines.append(f"{key}: {before.get(key)} -> {after.get(key)}")
    return lines
