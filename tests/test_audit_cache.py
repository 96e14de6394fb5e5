"""A report's masking audit is kept in the folder (audit.json) and re-reported, not repeated, while what decides it
is unchanged; other audit code or a damaged file recomputes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

import gradconceal.masking
from gradconceal.errors import GradconcealError
from gradconceal.evaluation.api import AUDIT_FILE, evaluate


def _spec() -> Dict[str, Any]:
    from gradconceal.data import load_dataset

    try:
        load_dataset("fashion-mnist", limit=1)
    except GradconcealError as error:
        pytest.skip(f"Fashion-MNIST not available: {error}")
    return {"models": ["fmnist-cnn"], "defenses": ["none", "gcm"], "data": {"source": "fashion-mnist", "n": 8},
            "attacks": [{"label": "FGSM", "attack": "fgsm", "norm": "linf", "eps": "8/255"}],
            "batch_size": 8, "device": "cpu", "seed": 0, "audit": True, "gallery": 0}


def _counting(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """Count the audits run (the real audit still runs)."""
    calls: List[str] = []
    real = gradconceal.masking.audit

    def counted(model: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(type(model).__name__)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(gradconceal.masking, "audit", counted)
    return calls


def _masking_column(report: Path) -> List[str]:
    return [line.rsplit("|", 2)[-2].strip() for line in report.read_text(encoding="utf-8").splitlines()
            if line.startswith("| fmnist-cnn |")]


def test_a_rerun_re_reports_the_audit_without_repeating_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec()
    first = evaluate(spec, tmp_path, quiet=True, plots=False)
    kept = json.loads((tmp_path / AUDIT_FILE).read_text(encoding="utf-8"))["rows"]
    assert sorted(kept) == ["fmnist-cnn/gcm", "fmnist-cnn/vanilla"]
    assert first.info["audit"]["fmnist-cnn/gcm"]["verdict"] == "gradient masking confirmed"
    assert first.info["audit"]["fmnist-cnn/vanilla"]["verdict"] == "no masking detected"
    columns = _masking_column(tmp_path / "report.md")

    calls = _counting(monkeypatch)
    again = evaluate(spec, tmp_path, quiet=True, plots=False)
    assert calls == [] and again.info["computed_records"] == 0
    assert again.info["audit"] == first.info["audit"]
    assert _masking_column(tmp_path / "report.md") == columns and "gradient masking confirmed" in columns


def test_other_audit_code_recomputes_the_audit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec()
    evaluate(spec, tmp_path, quiet=True, plots=False)
    before = json.loads((tmp_path / AUDIT_FILE).read_text(encoding="utf-8"))["rows"]
    calls = _counting(monkeypatch)
    monkeypatch.setattr("gradconceal.evaluation.api.source_digest", lambda *packages: "edited-audit-code")
    again = evaluate(spec, tmp_path, quiet=True, plots=False)
    assert len(calls) == 2  # both rows, once each
    after = json.loads((tmp_path / AUDIT_FILE).read_text(encoding="utf-8"))["rows"]
    assert all(after[row]["fingerprint"] != before[row]["fingerprint"] for row in before)
    assert again.info["audit"]["fmnist-cnn/gcm"]["verdict"] == "gradient masking confirmed"


def test_another_data_subset_recomputes_the_audit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec()
    evaluate(spec, tmp_path, quiet=True, plots=False)
    calls = _counting(monkeypatch)
    evaluate({**spec, "data": {**spec["data"], "n": 12}}, tmp_path, quiet=True, plots=False)
    assert len(calls) == 2  # the audit's images are the first min(n, 64): other images, another audit


@pytest.mark.parametrize("damage", ["not json", "[1, 2]", '{"rows": {"fmnist-cnn/gcm": 3}}'])
def test_a_damaged_audit_file_is_recomputed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    spec = _spec()
    first = evaluate(spec, tmp_path, quiet=True, plots=False)
    (tmp_path / AUDIT_FILE).write_text(damage, encoding="utf-8")
    calls = _counting(monkeypatch)
    again = evaluate(spec, tmp_path, quiet=True, plots=False)
    assert len(calls) == 2
    assert {k: v["verdict"] for k, v in again.info["audit"].items()} == \
        {k: v["verdict"] for k, v in first.info["audit"].items()}
    assert sorted(json.loads((tmp_path / AUDIT_FILE).read_text(encoding="utf-8"))["rows"]) == \
        ["fmnist-cnn/gcm", "fmnist-cnn/vanilla"]


def test_a_broken_audit_import_fails_the_run_instead_of_reporting_not_run(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit is part of the package: failing to import it is a bug (a half-updated install), and a report
    whose masking column says "not run" would hide it."""
    import sys

    spec = {**_spec(), "defenses": ["gcm"]}
    monkeypatch.setitem(sys.modules, "gradconceal.masking", None)  # import raises ImportError
    with pytest.raises(ImportError):
        evaluate(spec, tmp_path, quiet=True, plots=False)
    assert not (tmp_path / "report.md").exists()
