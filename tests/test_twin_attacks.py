"""An attack that is another attack of the same row on this model reuses its records.

On a model without a concealment layer BPDA is plain autograd, so the adaptive preset's 'BPDA C&W-L2' and
'BPDA FGSM' are the paper's 'C&W-L2' and 'FGSM' there: the runner relabels their records instead of running
them again. These tests check that the relabelled records are byte for byte what computing them gives, that
GCM and random rows still compute, and the rule itself (``AttackPlan.same_attack_as``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
from torch import nn

from gradconceal.attacks.plan import AttackPlan
from gradconceal.defenses import conceal

CW = {"eps": 0.5, "steps": 4, "binary_search_steps": 2, "lr": 0.01, "initial_const": 0.1, "kappa": 0.0}
SPEC: Dict[str, Any] = {
    "models": ["fmnist-cnn"],
    "defenses": ["none", "gcm", "challenge"],
    "data": {"source": "fashion-mnist", "n": 12},
    "attacks": [
        {"label": "FGSM", "attack": "fgsm", "norm": "linf", "eps": "8/255"},
        {"label": "C&W", "attack": "cw", **CW},
        {"label": "PGD", "attack": "pgd", "norm": "linf", "eps": "8/255", "steps": 2, "alpha": "4/255"},
        {"label": "BPDA FGSM", "attack": "fgsm", "view": "bpda", "norm": "linf", "eps": "8/255"},
        {"label": "BPDA C&W", "attack": "cw", "view": "bpda", **CW},
        # other settings: never a twin of 'PGD'
        {"label": "BPDA PGD", "attack": "pgd", "view": "bpda", "norm": "linf", "eps": "8/255", "steps": 2,
         "alpha": "4/255", "start": "clean-first"},
    ],
    "batch_size": 4,
    "draws": 2,
    "device": "cpu",
    "seed": 1,
    "audit": False,
    "gallery": 2,
}


def _evaluate(out: Path, caplog: pytest.LogCaptureFixture) -> List[str]:
    from gradconceal.evaluation.api import evaluate

    caplog.clear()
    with caplog.at_level("INFO", logger="gradconceal"):
        evaluate(SPEC, out, quiet=True, plots=False)
    return [r.getMessage() for r in caplog.records if r.getMessage().endswith("record(s) reused")]


def test_twin_records_equal_computed_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    from gradconceal.evaluation.run import Runner

    reused = _evaluate(tmp_path / "twins", caplog)
    with monkeypatch.context() as patch:
        patch.setattr(Runner, "_twin_records", lambda self, *args: None)
        assert _evaluate(tmp_path / "computed", caplog) == []
    twins = (tmp_path / "twins" / "records.jsonl").read_bytes()
    assert twins == (tmp_path / "computed" / "records.jsonl").read_bytes()
    # only the vanilla row's two twins; GCM (BPDA acts there) and the random row compute theirs
    assert len(reused) == 2 and all(m.startswith("fmnist-cnn/vanilla BPDA ") for m in reused)
    records = [json.loads(line) for line in twins.splitlines()]
    attacked = [r for r in records if r["defense"] == "vanilla" and r["attack"] == "BPDA C&W"
                and r["status"] == "attacked"]
    assert attacked and all(r["job"] != "" for r in attacked)
    plain = {r["index"]: r for r in records if r["defense"] == "vanilla" and r["attack"] == "C&W"}
    for r in attacked:
        assert {**r, "attack": "C&W", "job": plain[r["index"]]["job"]} == plain[r["index"]]
        assert r["job"] != plain[r["index"]]["job"]
    # the gallery's PNGs come along
    for folder in ("twins", "computed"):
        row = tmp_path / folder / "adversarial" / "fmnist-cnn" / "vanilla"
        pngs = sorted(p.name for p in row.glob("BPDA*/*.png"))
        assert len(pngs) >= 2
    first = sorted((tmp_path / "twins" / "adversarial").rglob("*.png"))
    second = sorted((tmp_path / "computed" / "adversarial").rglob("*.png"))
    assert [p.relative_to(tmp_path / "twins") for p in first] == [p.relative_to(tmp_path / "computed") for p in second]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second))


def test_a_resumed_run_reuses_an_earlier_runs_records(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from gradconceal.evaluation.api import evaluate

    first = {**SPEC, "defenses": ["none"], "attacks": SPEC["attacks"][:2]}
    with caplog.at_level("INFO", logger="gradconceal"):
        evaluate(first, tmp_path, quiet=True, plots=False)
    reused = _evaluate(tmp_path, caplog)
    assert sorted(m.split(":")[0] for m in reused) == ["fmnist-cnn/vanilla BPDA C&W", "fmnist-cnn/vanilla BPDA FGSM"]


def _plan(label: str, view: str, **settings: Any) -> AttackPlan:
    return AttackPlan(label, settings.pop("attack", "cw"), {**CW, **settings}, view=view)


def test_same_attack_rule() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    concealed = conceal(net)
    plain, bpda = _plan("C&W", "plain"), _plan("BPDA C&W", "bpda")
    assert bpda.same_attack_as(plain, net) and plain.same_attack_as(bpda, net)
    assert not bpda.same_attack_as(plain, concealed)  # BPDA acts on a concealment layer
    assert bpda.same_attack_as(_plan("again", "bpda"), concealed)
    assert not bpda.same_attack_as(_plan("C&W", "plain", steps=5), net)  # settings differ
    assert not _plan("T", "transfer").same_attack_as(plain, net)  # crafted on another model
    assert not _plan("E", "bpda+eot", eot_samples=3).same_attack_as(bpda, net)
    member = AttackPlan("AA", "cw", dict(CW), view="bpda", cascade="AutoAttack-L2")
    assert not member.same_attack_as(plain, net) and not plain.same_attack_as(member, net)
