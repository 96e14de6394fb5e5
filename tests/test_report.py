"""The report folder: the paper's table never without the adaptive one, every number traceable and reproducible."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from gradconceal.evaluation.plan import plan_attacks
from gradconceal.evaluation.spec import load_spec

# The paper and adaptive presets at their scaled 28x28 budgets, with fewer steps so the test stays short.
PRESET_SPEC = {
    "title": "report test",
    "models": ["fmnist-cnn"],
    "defenses": ["none", "gcm"],
    "data": {"source": "fashion-mnist", "n": 6},
    "attacks": ["paper", "adaptive"],
    "sweep": {"linf": ["2/255", "16/255"], "views": ["plain", "bpda"], "settings": {"steps": 3}},
    "batch_size": 6,
    "device": "cpu",
    "seed": 0,
    "gallery": 2,
}


CUTS = {"pgd": {"steps": 2}, "cw": {"steps": 3, "binary_search_steps": 1}, "apgd": {"steps": 2},
        "square": {"n_queries": 20}, "fgsm": {}, "fab": {"steps": 2, "n_target_classes": 2}}


def _quick_overrides(spec: dict) -> dict:
    """Cut every preset attack to a few steps/queries (these tests check the report, not the attacks)."""
    plans = plan_attacks(load_spec(spec), (1, 28, 28))
    attacks = []
    for preset in ("paper", "adaptive"):
        overrides = {}
        for plan in (p for p in plans if p.origin == preset):
            cut = dict(CUTS[plan.attack])
            if "eot" in plan.view:
                cut["eot_samples"] = 2
            overrides[plan.label] = cut
        attacks.append({"preset": preset, "overrides": overrides, "reason": "a short test"})
    return {**spec, "attacks": attacks}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from gradconceal.evaluation.api import evaluate

    out = tmp_path_factory.mktemp("report")
    spec = _quick_overrides(PRESET_SPEC)
    return evaluate(spec, out, quiet=True), out


def test_report_shows_every_attack_with_the_adaptive_columns_and_worst_case(report) -> None:
    results, out = report
    text = (out / "report.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| Model | Defence"))
    for plan in results.plans:
        if plan.group != "sweep":
            assert f" {plan.label} |" in header, plan.label
    assert header.index("Worst, paper attacks") < header.index("Worst, all attacks")
    adaptive = [p.label for p in results.plans if p.group == "adaptive"]
    assert adaptive and all(header.index(a) > header.index("Worst, paper attacks") for a in adaptive)
    assert "Masking audit" in header
    assert "95 % Wilson interval" in text and "a short test" in text
    assert "Rounding to 8-bit pixels" in text
    table = results.table()
    for plan in results.plans:
        if plan.group != "sweep":
            assert plan.label in table


def test_adaptive_attacks_undo_what_gcm_hides(report) -> None:
    results, _ = report
    vanilla = results.row("fmnist-cnn", "vanilla")
    gcm = results.row("fmnist-cnn", "gcm")
    assert gcm.worst_all[0].k <= gcm.worst_white_box[0].k  # adding adaptive attacks can only lower robustness
    assert gcm.worst_all[0].value <= vanilla.worst_white_box[0].value + 1e-9 or gcm.worst_all[0].n == 0


def test_results_json_holds_everything_needed_to_reproduce(report) -> None:
    results, out = report
    data = json.loads((out / "results.json").read_text())
    assert data["kind"] == "gradconceal-results" and data["format_version"] == 1
    assert load_spec(data["spec"]) == results.spec
    assert data["records"] == "records.jsonl" and (out / data["records"]).is_file()
    assert {"torch", "gradconceal", "numpy", "python"} <= set(data["versions"])
    assert data["seed"] == 0 and data["device"] == "cpu" and data["n_images"] == 6
    row = data["rows"][0]
    assert set(row["attacks"]) == {p.label for p in results.plans if p.group != "sweep"}
    assert {"k", "n", "value", "ci95"} <= set(row["clean_accuracy"])


def test_csv_has_a_line_per_row_and_attack(report) -> None:
    results, out = report
    with open(out / "results.csv", newline="") as handle:
        lines = list(csv.DictReader(handle))
    table = [p for p in results.plans if p.group != "sweep"]
    for defense in ("vanilla", "gcm"):
        mine = [line for line in lines if line["defense"] == defense]
        assert {line["attack"] for line in mine} >= {"clean"} | {p.label for p in table}
    sweep = [line for line in lines if line["group"] == "sweep"]
    assert len(sweep) == (2 + 2) * 2  # both views on both rows (BPDA is plain autograd without GCM); 2 budgets


def test_plots_are_pngs_named_in_the_report(report) -> None:
    results, out = report
    names = results.info["plots"]
    assert "ar_per_attack.png" in names and "robust_accuracy_vs_eps.png" in names
    assert "gallery_fmnist-cnn_gcm.png" in names
    text = (out / "report.md").read_text()
    for name in names:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in text


def test_a_spec_without_adaptive_attacks_says_what_it_cannot_tell(tmp_path: Path) -> None:
    from gradconceal.evaluation.api import evaluate

    spec = {**PRESET_SPEC, "attacks": [{"attack": "fgsm", "label": "FGSM"}], "audit": False, "gallery": 0}
    spec.pop("sweep")
    results = evaluate(spec, tmp_path, quiet=True, plots=False)
    assert "cannot tell robustness from masking" in results.table()
    assert "audit not run" in (tmp_path / "report.md").read_text()


def test_results_json_reruns_to_the_same_numbers(report, tmp_path: Path) -> None:
    from gradconceal.evaluation.api import evaluate

    results, out = report
    again = evaluate(out / "results.json", tmp_path / "again", quiet=True, plots=False)
    assert again.info["reproduction"]["equal"], again.info["reproduction"]["differences"]
    assert again.info["computed_records"] > 0


def test_worst_case_title_names_the_paper_only_when_its_columns_are_the_papers() -> None:
    from gradconceal.evaluation.tables import white_box_worst_title
    from gradconceal.attacks.plan import AttackPlan

    paper = AttackPlan(label="PGD-Linf", attack="pgd", settings={}, group="white-box", origin="paper")
    extra = AttackPlan(label="PGD-Linf 0.1", attack="pgd", settings={}, group="white-box", origin="explicit")
    assert white_box_worst_title([paper]) == "paper attacks"
    assert white_box_worst_title([paper, extra]) == "plain-gradient attacks"
