"""Random defences judged over draws, attack cascades, and attacks on the first n images only."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradconceal.attacks.plan import AttackPlan
from gradconceal.attacks.presets import preset
from gradconceal.errors import GradconcealError
from gradconceal.evaluation.metrics import attack_metrics, row_metrics
from gradconceal.evaluation.plan import plan_attacks, plan_jobs
from gradconceal.evaluation.records import AttackRecord, CleanRecord, record_from_dict
from gradconceal.evaluation.spec import load_spec
from gradconceal.evaluation.store import RecordStore

BASE = {
    "models": ["fmnist-cnn"],
    "data": {"source": "fashion-mnist", "n": 10},
    "batch_size": 5,
    "device": "cpu",
    "seed": 3,
    "audit": False,
    "gallery": 0,
}
PGD = {"attack": "pgd", "norm": "linf", "eps": "8/255", "steps": 3, "alpha": "3/255"}


def _run(tmp_path: Path, spec: dict, name: str = "out"):
    from gradconceal.evaluation.api import evaluate

    results = evaluate({**BASE, **spec}, tmp_path / name, quiet=True, plots=False)
    return results, RecordStore(tmp_path / name).load()


# -- the preset ---------------------------------------------------------------------------------------
def test_adaptive_preset_holds_autoattacks_standard_ensemble_at_both_budgets_as_cascades() -> None:
    plans = preset("adaptive", (1, 28, 28))
    for norm, eps in (("linf", "8/255"), ("l2", 0.57735)):
        members = [p for p in plans if p.cascade == f"AutoAttack-{norm.capitalize()}"]
        standard = [p for p in members if "eot" not in p.view]
        assert [(p.attack, p.settings.get("loss"), p.settings.get("targeted", False)) for p in standard] == [
            ("apgd", "ce", False), ("apgd", "dlr", True), ("fab", None, True), ("square", None, False)]
        assert all(p.settings["eps"] == eps and p.settings["norm"] == norm for p in members)
        assert standard[1].settings["n_target_classes"] == 9 and standard[2].settings["n_target_classes"] == 9
        assert standard[3].settings["n_queries"] == 5000
        assert all(p.view == "bpda" for p in standard[:3])  # through the attacker's view of GCM
        rand = [p for p in members if "eot" in p.view]
        assert [p.settings["loss"] for p in rand] == ["ce", "dlr"]
        assert all(p.eot_samples == 20 for p in rand)
        assert all(p.group == "adaptive" for p in members)
    # PGD and APGD of the adaptive preset start at the clean image; the paper preset keeps foolbox's start
    assert all(p.settings.get("start") == "clean-first" for p in plans if p.attack in ("pgd", "apgd"))
    assert all("start" not in p.settings for p in preset("paper", (1, 28, 28)))


def test_the_rand_members_apply_only_to_random_defences() -> None:
    spec = load_spec({**BASE, "defenses": ["none", "challenge"], "attacks": ["adaptive"]})
    plans = plan_attacks(spec, (1, 28, 28))
    jobs = plan_jobs(spec, plans, {"fmnist-cnn": "w"})
    by_row = {d: {j.attack_label for j in jobs if j.defense.label == d} for d in ("vanilla", "challenge")}
    assert "AA+EOT APGD-CE-Linf" in by_row["challenge"] and "AA+EOT APGD-CE-Linf" not in by_row["vanilla"]
    assert "AA APGD-T-L2" in by_row["vanilla"] and "AA APGD-T-L2" in by_row["challenge"]


# -- per-attack image counts ----------------------------------------------------------------------------
def test_spec_n_limits_an_attack_to_the_first_images(tmp_path: Path) -> None:
    spec = {"defenses": ["none"], "attacks": [{**PGD, "label": "PGD all"}, {**PGD, "label": "PGD few", "n": 4}]}
    results, records = _run(tmp_path, spec)
    few = sorted(k[3] for k in records if k[2] == "PGD few")
    assert few == [0, 1, 2, 3]
    assert sorted(k[3] for k in records if k[2] == "PGD all") == list(range(10))
    row = results.rows[0]
    assert row.attacks["PGD few"].robust.n == 4 and row.attacks["PGD all"].robust.n == 10
    assert row.worst_all[1].n == 4
    report = (tmp_path / "out" / "report.md").read_text()
    assert "PGD few (first 4)" in report and "Worst, all attacks (first 4)" in report


def test_preset_n_table_matches_labels_and_patterns_and_refuses_a_pattern_that_matches_nothing() -> None:
    spec = load_spec({**BASE, "attacks": [{"preset": "adaptive", "n": {"AA*": 200, "Square-Linf": 5}}]})
    plans = {p.label: p for p in plan_attacks(spec, (1, 28, 28))}
    assert plans["AA APGD-CE-Linf"].n == 200 and plans["AA+EOT APGD-DLR-L2"].n == 200
    assert plans["Square-Linf"].n == 5 and plans["BPDA FGSM"].n is None
    assert plans["AA APGD-CE-Linf"].images(100) == 100  # never more than the data's images
    with pytest.raises(GradconcealError, match="matches no attack of preset 'adaptive'"):
        plan_attacks(load_spec({**BASE, "attacks": [{"preset": "adaptive", "n": {"XX *": 2}}]}), (1, 28, 28))
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(GradconcealError, match=r"attacks\[0\]\.n"):
            load_spec({**BASE, "attacks": [{**PGD, "n": bad}]})
    with pytest.raises(GradconcealError, match="must be an integer"):
        load_spec({**BASE, "attacks": [{**PGD, "n": {"x": 1}}]})


# -- cascades -------------------------------------------------------------------------------------------
def test_a_cascade_member_attacks_only_images_the_earlier_members_left_robust(tmp_path: Path) -> None:
    spec = {"defenses": ["none"], "attacks": [
        {"preset": "adaptive", "n": {"AA*": 6},
         "overrides": {"AA APGD-CE-Linf": {"steps": 3}, "AA APGD-T-Linf": {"steps": 2, "n_target_classes": 2},
                       "AA FAB-T-Linf": {"steps": 2, "n_target_classes": 2}, "AA Square-Linf": {"n_queries": 10},
                       "AA APGD-CE-L2": {"steps": 2}, "AA APGD-T-L2": {"steps": 2, "n_target_classes": 2},
                       "AA FAB-T-L2": {"steps": 2, "n_target_classes": 2}, "AA Square-L2": {"n_queries": 10}}}]}
    results, records = _run(tmp_path, {**spec, "data": {"source": "fashion-mnist", "n": 6}})
    order = ["AA APGD-CE-Linf", "AA APGD-T-Linf", "AA FAB-T-Linf", "AA Square-Linf"]
    broken: set = set()
    for label in order:
        mine = {k[3]: r for k, r in records.items() if k[2] == label}
        assert sorted(mine) == list(range(6))
        for i, record in mine.items():
            if i in broken:
                assert record.status == "cascade-skipped" and not record.correct
            elif record.clean_correct:
                assert record.status == "attacked"
        broken |= {i for i, r in mine.items() if r.clean_correct and not r.correct}
    row = results.rows[0]
    # each column is the ensemble's robust accuracy so far: never rising along the cascade
    values = [row.attacks[label].ar.k for label in order]
    assert values == sorted(values, reverse=True)


def test_a_cascade_members_key_covers_the_earlier_members() -> None:
    base = {**BASE, "defenses": ["none"]}
    spec = load_spec({**base, "attacks": ["adaptive"]})
    changed = load_spec({**base, "attacks": [{"preset": "adaptive", "overrides": {"AA APGD-CE-Linf": {"steps": 50}}}]})
    keys = [{j.attack_label: j.key for j in plan_jobs(s, plan_attacks(s, (1, 28, 28)), {"fmnist-cnn": "w"})}
            for s in (spec, changed)]
    assert keys[0]["AA APGD-T-Linf"] != keys[1]["AA APGD-T-Linf"]  # it sees other images now
    assert keys[0]["AA APGD-CE-L2"] == keys[1]["AA APGD-CE-L2"]  # another cascade: unaffected
    assert keys[0]["BPDA FGSM"] == keys[1]["BPDA FGSM"]


# -- draws ----------------------------------------------------------------------------------------------
def test_random_defence_judges_each_adversarial_image_on_k_draws(tmp_path: Path) -> None:
    spec = {"defenses": ["none", "challenge"], "draws": 7, "attacks": [{**PGD, "label": "PGD"}]}
    results, records = _run(tmp_path, spec)
    challenge = [r for k, r in records.items() if k[1] == "challenge" and k[2] == "PGD" and r.attacked]
    vanilla = [r for k, r in records.items() if k[1] == "vanilla" and k[2] == "PGD" and r.attacked]
    assert challenge and vanilla
    assert all(r.draws == 7 and 0 <= r.correct_draws <= 7 for r in challenge)
    assert all(r.correct == (r.correct_draws == 7) for r in challenge)  # robust only on every draw
    assert all(r.draws == 1 and r.correct_draws is None for r in vanilla)
    assert all("draws" not in r.to_dict() for r in vanilla)
    row = {r.defense: r for r in results.rows}
    m = row["challenge"].attacks["PGD"]
    shares = sum(r.correct_draws / 7 for r in challenge)
    assert m.ar_expected is not None and m.ar_expected.k == pytest.approx(shares)
    assert m.ar_expected.value >= m.ar.value  # the expectation is never below the worst case
    assert row["vanilla"].attacks["PGD"].ar_expected is None
    report = (tmp_path / "out" / "report.md").read_text()
    assert "the worst case and the expectation over draws" in report and "7 fresh draws" in report


def test_draws_are_in_the_key_of_random_rows_only_and_records_round_trip() -> None:
    def keys(draws: int) -> dict:
        spec = load_spec({**BASE, "defenses": ["none", "challenge"], "draws": draws, "attacks": [PGD]})
        return {(j.defense.label, j.attack_label): j.key
                for j in plan_jobs(spec, plan_attacks(spec, (1, 28, 28)), {"fmnist-cnn": "w"})}

    a, b = keys(20), keys(5)
    assert a[("vanilla", "PGD-Linf")] == b[("vanilla", "PGD-Linf")]
    assert a[("challenge", "PGD-Linf")] != b[("challenge", "PGD-Linf")]
    assert a[("challenge", "clean")] == b[("challenge", "clean")]
    record = AttackRecord(model="m", defense="d", attack="a", index=0, job="j", label=1, clean_correct=True,
                          status="attacked", correct=False, draws=20, correct_draws=13)
    assert record_from_dict(record.to_dict()) == record
    assert record.correct_share == pytest.approx(0.65)
    for bad in (0, -2, 1.5, "x"):
        with pytest.raises(GradconcealError, match="draws"):
            load_spec({**BASE, "draws": bad, "attacks": [PGD]})


def test_expectation_metrics_from_records() -> None:
    plan = AttackPlan("A", "pgd", {})
    clean = [CleanRecord(model="m", defense="d", index=i, job="j", pred=0, correct=i < 3, accepted=[0], primary=0,
                         label=0) for i in range(4)]
    draws = [10, 4, 0]
    records = [AttackRecord(model="m", defense="d", attack="A", index=i, job="j", label=0, clean_correct=True,
                            status="attacked", correct=draws[i] == 10, draws=10, correct_draws=draws[i])
               for i in range(3)]
    records.append(AttackRecord(model="m", defense="d", attack="A", index=3, job="j", label=0, clean_correct=False,
                                status="clean-incorrect", correct=False))
    m = attack_metrics(plan, records, 4)
    assert (m.ar.k, m.ar.n) == (1, 3)
    assert m.ar_expected.value == pytest.approx(14 / 30)
    assert m.robust_expected.value == pytest.approx(14 / 40)
    low, high = m.ar_expected.interval
    assert low < 14 / 30 < high
    row = row_metrics("m", "d", clean, {"A": records}, [plan], {"A": True})
    assert row.worst_all_expected[0].value == pytest.approx(14 / 30)


# -- a minimum-norm attack's curve ----------------------------------------------------------------------
def test_fab_records_give_robust_accuracy_at_every_smaller_budget() -> None:
    from gradconceal.evaluation.metrics import min_norm_curve

    plan = AttackPlan("FAB", "fab", {}, norm="l2", eps=1.0)
    clean = [CleanRecord(model="m", defense="d", index=i, job="j", pred=0, correct=i != 4, accepted=[0], primary=0,
                         label=0) for i in range(5)]
    norms = [0.1, 0.55, 0.9, None]  # images 0-2 broken at these norms, image 3 survives the whole budget

    def record(i: int) -> AttackRecord:
        if i == 4:
            return AttackRecord(model="m", defense="d", attack="FAB", index=i, job="j", label=0, clean_correct=False,
                                status="clean-incorrect", correct=False)
        return AttackRecord(model="m", defense="d", attack="FAB", index=i, job="j", label=0, clean_correct=True,
                            status="attacked", correct=norms[i] is None, norm=norms[i] or 0.0, fooled=norms[i] is not None)

    curve = min_norm_curve(plan, [record(i) for i in range(5)], clean, points=4)
    assert [p["eps"] for p in curve] == [0.25, 0.5, 0.75, 1.0]
    assert [p["robust_accuracy"]["k"] for p in curve] == [3, 3, 2, 1]  # 0.55 and 0.9 fall at 0.75 and 1.0
    assert all(p["robust_accuracy"]["n"] == 5 and p["ar"]["n"] == 4 for p in curve)
    assert {p["view"] for p in curve} == {"plain min-norm"}


def test_a_fab_attack_draws_its_min_norm_curve_in_the_report(tmp_path: Path) -> None:
    spec = {"defenses": ["none"], "data": {"source": "fashion-mnist", "n": 6},
            "attacks": [{"label": "FAB-L2", "attack": "fab", "norm": "l2", "eps": 1.0, "steps": 10}]}
    from gradconceal.evaluation.api import evaluate

    results = evaluate({**BASE, **spec}, tmp_path / "out", quiet=True, plots=True)
    row = results.rows[0]
    curve = [p for p in row.sweep if p["view"] == "plain min-norm"]
    assert len(curve) == 8 and curve[-1]["robust_accuracy"]["k"] == row.attacks["FAB-L2"].robust.k
    ks = [p["robust_accuracy"]["k"] for p in curve]
    assert ks == sorted(ks, reverse=True)  # robust accuracy never rises with the budget
    assert (tmp_path / "out" / "robust_accuracy_vs_eps.png").is_file()
