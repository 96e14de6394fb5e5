"""Clean logits passed into ``Attack.perturb``: the same results as the attack's own clean forward, one forward fewer.

The evaluation runner hands every deterministic row's clean logits to its attacks; these tests check that a
call with the model's own logits is bit-identical to one without (images, decisions, counts), that the
forward is really skipped, that bad logits are refused, and that the runner's records do not change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
from torch import Tensor, nn

from gradconceal.attacks import create_attack
from gradconceal.errors import GradconcealError


class SmallNet(nn.Module):
    """A tiny conv net on 3x8x8 images with 10 classes that counts its forward calls."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2))
        self.head = nn.Linear(8 * 4 * 4, 10)
        self.input_size = (3, 8, 8)
        self.num_classes = 10
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return self.head(self.features(x).flatten(1)) * 4.0


def _batch(net: nn.Module, count: int = 12) -> tuple[Tensor, Tensor]:
    """Images and labels: the model's own predictions, with two flipped so some images start wrong."""
    images = torch.rand(count, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        labels = net(images).argmax(dim=1)
    labels[:2] = (labels[:2] + 1) % 10
    return images, labels


CASES: List[tuple[str, Dict[str, Any]]] = [
    ("pgd", {"steps": 6, "eps": 0.05}),
    ("pgd", {"steps": 6, "eps": 0.3, "norm": "l2", "start": "clean-first", "restarts": 2}),
    ("apgd", {"steps": 8, "eps": 0.05}),
    ("apgd", {"steps": 8, "eps": 0.05, "loss": "dlr", "targeted": True, "n_target_classes": 3}),
    ("fab", {"steps": 6, "eps": 0.05}),
    ("fab", {"steps": 6, "eps": 0.05, "targeted": True, "n_target_classes": 2}),
    ("square", {"n_queries": 40, "eps": 0.05}),
    ("fgsm", {"eps": 0.05}),
    ("cw", {"steps": 6, "binary_search_steps": 2, "eps": 0.5}),
]


def _fields(result: Any) -> Dict[str, Tensor]:
    return {name: value for name, value in vars(result).items() if isinstance(value, Tensor)}


@pytest.mark.parametrize("name,settings", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_same_results_with_the_models_own_logits(name: str, settings: Dict[str, Any]) -> None:
    net = SmallNet().eval()
    images, labels = _batch(net)
    seeds = list(range(100, 100 + len(labels)))
    with torch.no_grad():
        logits = net(images)
    attack = create_attack(name, net, **settings)
    net.calls = 0
    without = attack.perturb(images, labels, seeds)
    calls_without, net.calls = net.calls, 0
    given = attack.perturb(images, labels, seeds, clean_logits=logits)
    assert net.calls == calls_without - 1  # exactly the clean forward is skipped
    a, b = _fields(without), _fields(given)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bit-identical, counts included (the clean query is counted)
    assert int(given.clean_correct.sum()) == len(labels) - 2
    assert bool((given.forward_evals >= 1).all())


def test_logits_of_another_dtype_and_device_keep_decisions() -> None:
    net = SmallNet().eval()
    images, labels = _batch(net)
    with torch.no_grad():
        logits = net(images)
    attack = create_attack("pgd", net, steps=4, eps=0.05)
    plain = attack.perturb(images, labels, clean_logits=logits)
    wide = attack.perturb(images, labels, clean_logits=logits.double().requires_grad_(True))
    assert torch.equal(plain.fooled, wide.fooled) and torch.equal(plain.adversarial, wide.adversarial)


@pytest.mark.parametrize("bad,match", [
    ([[0.0] * 10] * 12, "must be a tensor"),
    (torch.zeros(12, 10, dtype=torch.int64), "floating-point"),
    (torch.zeros(11, 10), r"\(12, classes\) for 12 images, got \(11, 10\)"),
    (torch.zeros(12), r"got \(12,\)"),
    (torch.zeros(12, 0), r"got \(12, 0\)"),
    (torch.zeros(12, 3), "at least"),
])
def test_bad_logits_are_refused(bad: Any, match: str) -> None:
    net = SmallNet().eval()
    images, labels = _batch(net)
    labels[0] = 9  # a label the 3-class logits cannot hold
    with pytest.raises(GradconcealError, match=match):
        create_attack("pgd", net, steps=2).perturb(images, labels, clean_logits=bad)


def test_non_finite_logits_are_refused() -> None:
    net = SmallNet().eval()
    images, labels = _batch(net)
    logits = torch.zeros(12, 10)
    logits[5, 3] = float("nan")
    with pytest.raises(GradconcealError, match=r"NaN or infinite values for 1 of 12 images \(the first: image 5\)"):
        create_attack("fgsm", net).perturb(images, labels, clean_logits=logits)


# Rows with and without randomness, views that take the clean logits (plain, BPDA) and one that does not
# (transfer), a targeted attack (its targets come from the clean logits) and FAB (its best logits start there).
RUNNER_SPEC = {
    "models": ["fmnist-cnn"],
    "defenses": ["none", "gcm", "challenge"],
    "data": {"source": "fashion-mnist", "n": 10},
    "attacks": [
        {"label": "PGD", "attack": "pgd", "norm": "linf", "eps": "8/255", "steps": 3, "alpha": "2/255"},
        {"label": "PGD-wide", "attack": "pgd", "norm": "linf", "eps": "16/255", "steps": 3, "alpha": "4/255"},
        {"label": "APGD-T", "attack": "apgd", "norm": "linf", "eps": "8/255", "steps": 4, "loss": "dlr",
         "targeted": True, "n_target_classes": 2},
        {"label": "BPDA-FAB", "attack": "fab", "view": "bpda", "norm": "linf", "eps": "8/255", "steps": 3},
        {"label": "Transfer", "attack": "pgd", "view": "transfer", "norm": "linf", "eps": "8/255", "steps": 3},
        {"label": "Square", "attack": "square", "norm": "linf", "eps": "8/255", "n_queries": 20},
    ],
    "batch_size": 4,
    "draws": 2,
    "device": "cpu",
    "seed": 3,
    "audit": False,
    "gallery": 0,
}


def _evaluate_counting(spec: Dict[str, Any], out: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Evaluate ``spec`` into ``out``; returns how many clean forwards the attacks made themselves."""
    from gradconceal.attacks import base
    from gradconceal.evaluation.api import evaluate

    made = [0]
    original = base.probe_model

    def counting(*args: Any, **kwargs: Any) -> Tensor:
        made[0] += 1
        return original(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(base, "probe_model", counting)
        evaluate(spec, out, quiet=True, plots=False)
    return made[0]


@pytest.mark.parametrize("dtype", ["float32", pytest.param("bfloat16", marks=pytest.mark.slow)])
def test_runner_records_are_the_same_with_and_without_passed_logits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    from gradconceal.evaluation.run import Runner

    spec = {**RUNNER_SPEC, "dtype": dtype}
    made_with = _evaluate_counting(spec, tmp_path / "with", monkeypatch)
    with monkeypatch.context() as patch:
        patch.setattr(Runner, "_reuses_clean_logits", staticmethod(lambda job, defended: False))
        made_without = _evaluate_counting(spec, tmp_path / "without", monkeypatch)
    with_lines = (tmp_path / "with" / "records.jsonl").read_bytes()
    assert with_lines == (tmp_path / "without" / "records.jsonl").read_bytes()
    assert len(with_lines.splitlines()) > 100
    assert json.loads(with_lines.splitlines()[-1])  # one JSON record per line
    # the random row and the transfer attacks still make their own clean forwards; the others take the runner's
    assert 0 < made_with < made_without
