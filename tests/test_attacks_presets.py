"""Named protocols: the paper's numbers, per-pixel scaling to small images, views and JSON round trips."""

import math

import pytest
import torch
from attacks_support import CountingModel

from gradconceal import conceal
from gradconceal.attacks import CW, PGD, AdaptiveView, Square, Transfer, ThreatModel
from gradconceal.attacks.plan import AttackPlan
from gradconceal.attacks.presets import list_presets, preset
from gradconceal.errors import GradconcealError


def by_label(name, size=(3, 224, 224)):
    return {spec.label: spec for spec in preset(name, size)}


def test_paper_preset_has_the_papers_budgets_and_steps():
    paper = by_label("paper")
    assert list(paper) == ["FGSM", "PGD-L1", "PGD-L2", "PGD-Linf", "C&W-L2"]
    assert ThreatModel("linf", paper["FGSM"].settings["eps"]).eps == pytest.approx(8 / 255)
    l1, l2, linf = paper["PGD-L1"].settings, paper["PGD-L2"].settings, paper["PGD-Linf"].settings
    assert (l1["eps"], l1["alpha"], l1["steps"], l1["l1_step"]) == (1600.0, 120.0, 20, "dense")
    assert (l2["eps"], l2["alpha"], l2["steps"]) == (8.0, pytest.approx(0.6), 20)
    assert ThreatModel("linf", linf["alpha"]).eps == pytest.approx(3 / 40 * 8 / 255)
    assert all(s["random_start"] for s in (l1, l2, linf))
    assert paper["C&W-L2"].settings["eps"] == 8.0
    sparse = by_label("paper-l1-sparse")
    assert sparse["PGD-L1 (sparse)"].settings["l1_step"] == "sparse"


@pytest.mark.parametrize("name", ["paper", "adaptive", "autoattack-like"])
def test_small_images_keep_the_per_pixel_budget(name):
    big, small = preset(name), preset(name, (1, 28, 28))
    ratio = 784 / 150528
    for a, b in zip(big, small):
        assert a.label == b.label and a.view == b.view
        norm = a.settings.get("norm", "l2" if a.attack == "cw" else "linf")
        eps_big = ThreatModel(norm, a.settings["eps"]).eps
        eps_small = ThreatModel(norm, b.settings["eps"]).eps
        expected = {"linf": 1.0, "l2": math.sqrt(ratio), "l1": ratio}[norm]
        if name == "autoattack-like":
            expected = 2.0  # RobustBench: 4/255 on ImageNet, 8/255 on small images
        assert eps_small == pytest.approx(eps_big * expected, rel=1e-5), a.label
        if "alpha" in a.settings:
            step_big = ThreatModel("linf" if norm == "linf" else norm, a.settings["alpha"]).eps
            assert ThreatModel(norm, b.settings["alpha"]).eps == pytest.approx(step_big * expected, rel=1e-5)


def test_adaptive_and_autoattack_presets():
    adaptive = by_label("adaptive")
    assert {s.view for s in adaptive.values()} == {"bpda", "bpda+eot", "plain", "transfer"}
    assert adaptive["BPDA+EOT PGD-Linf"].eot_samples > 1
    assert adaptive["Square-Linf"].attack == "square"
    auto = by_label("autoattack-like")
    assert list(auto) == ["APGD-CE", "APGD-T", "Square"]
    assert auto["APGD-T"].settings["targeted"] and auto["APGD-T"].settings["n_target_classes"] == 9
    assert auto["Square"].settings["n_queries"] == 5000


def test_specs_build_the_right_attack_on_the_right_view():
    model = CountingModel()
    defended = conceal(model)
    small = {s.label: s for s in preset("adaptive", (1, 8, 8))}
    bpda = small["BPDA PGD-Linf"].build(defended)
    assert isinstance(bpda, PGD) and isinstance(bpda.model, AdaptiveView) and bpda.model.bpda
    eot = small["BPDA+EOT PGD-Linf"].build(defended)
    assert eot.model.eot_samples == small["BPDA+EOT PGD-Linf"].eot_samples
    transfer = small["Transfer PGD-Linf"].build(defended)
    assert isinstance(transfer, Transfer) and isinstance(transfer.inner, PGD)
    assert isinstance(small["Square-Linf"].build(defended), Square)
    assert isinstance(small["BPDA C&W-L2"].build(defended), CW)
    # BPDA applies to every model (plain autograd without GCM, so vanilla and GCM rows cover the same attacks);
    # EOT needs a random layer.
    assert small["BPDA PGD-Linf"].applies_to(defended) and small["BPDA PGD-Linf"].applies_to(model)
    assert not small["BPDA+EOT PGD-Linf"].applies_to(defended)
    assert not small["Transfer PGD-Linf"].applies_to(model)
    images = torch.rand(2, 1, 8, 8)
    assert transfer.perturb(images, torch.tensor([0, 1])).adversarial.shape == images.shape


def test_spec_round_trip_and_errors():
    for spec in preset("adaptive"):
        assert AttackPlan.from_dict(spec.to_dict()) == spec
    assert len(set(preset("adaptive"))) == len(preset("adaptive"))  # specs are hashable, distinct
    with pytest.raises(GradconcealError, match=r"unknown preset 'papr' \(did you mean 'paper'\?\)"):
        preset("papr")
    with pytest.raises(GradconcealError, match=r"image_size must be three positive integers"):
        preset("paper", (28, 28))
    with pytest.raises(GradconcealError, match="view must be one of"):
        AttackPlan("x", "pgd", {}, view="bdpa")
    with pytest.raises(GradconcealError, match="unknown keys"):
        AttackPlan.from_dict({"label": "x", "attack": "pgd", "budget": 1})
    assert set(list_presets()) == {"paper", "paper-l1-sparse", "adaptive", "autoattack-like"}


def test_groups_follow_what_the_attacker_sees_alone() -> None:
    """Plain-autograd gradient attacks are the paper's (white-box) group in every preset, even AutoAttack's APGD
    (through GCM it follows the concealed gradient); gradient-free, BPDA, EOT and transfer attacks are adaptive."""
    for name in list_presets():
        for plan in preset(name, (1, 28, 28)):
            plain_gradient = plan.view == "plain" and plan.attack not in ("square", "transfer")
            assert plan.group == ("white-box" if plain_gradient else "adaptive"), (name, plan.label)
    groups = {p.label: p.group for p in preset("autoattack-like", (1, 28, 28))}
    assert groups == {"APGD-CE": "white-box", "APGD-T": "white-box", "Square": "adaptive"}
