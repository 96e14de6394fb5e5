"""One defence builder: evaluate's spec, the audit and the CLI build the same layers from the same name."""

from __future__ import annotations

from typing import Any, List, Tuple

import pytest
from torch import nn

from gradconceal.defenses import BitDepthReduction, GradientConcealment, RandomResizePad
from gradconceal.defenses.build import DEFENSE_NAMES, build_defense, resize_pad_min_size
from gradconceal.errors import GradconcealError
from gradconceal.evaluation.spec import load_spec
from gradconceal.masking.target import parse_defense

SIZES = [(1, 28, 28), (3, 48, 48), (3, 224, 224)]


def _describe(layers: List[nn.Module]) -> List[Tuple[Any, ...]]:
    out: List[Tuple[Any, ...]] = []
    for layer in layers:
        if isinstance(layer, GradientConcealment):
            out.append(("gcm", layer.w, layer.epsilon))
        elif isinstance(layer, RandomResizePad):
            out.append(("resize-pad", layer.size, layer.min_size))
        elif isinstance(layer, BitDepthReduction):
            out.append(("bit-depth", layer.bits))
        else:  # pragma: no cover - a new layer type must be described here
            raise AssertionError(f"undescribed layer {layer!r}")
    return out


def _spec_layers(name: str, image_size: Tuple[int, int, int]) -> List[nn.Module]:
    spec = load_spec({"models": ["fmnist-cnn"], "defenses": [name], "data": "digits", "attacks": []})
    return spec.defenses[0].layers(image_size)


@pytest.mark.parametrize("image_size", SIZES, ids=lambda s: f"{s[-1]}px")
@pytest.mark.parametrize("name", DEFENSE_NAMES)
def test_every_path_builds_the_same_layers(name: str, image_size: Tuple[int, int, int]) -> None:
    builder = _describe(build_defense(name, {}, image_size))
    audit_layers, _ = parse_defense(name, image_size)
    assert _describe(audit_layers) == builder
    assert _describe(_spec_layers(name, image_size)) == builder


@pytest.mark.parametrize("text", ["gcm:w=1e12,epsilon=1e-10", "resize-pad:min_size=20", "challenge:min_size=21",
                                  "bit-depth:bits=3"])
def test_settings_strings_mean_the_same_in_audit_and_evaluate(text: str) -> None:
    audit_layers, _ = parse_defense(text, (1, 28, 28))
    assert _describe(_spec_layers(text, (1, 28, 28))) == _describe(audit_layers)


@pytest.mark.parametrize("side, expected", [(28, 27), (32, 31), (48, 47), (64, 62), (224, 218), (240, 234)])
def test_resize_pad_default_side_is_218_of_224_rounded_to_nearest(side: int, expected: int) -> None:
    assert resize_pad_min_size(side) == expected
    assert _describe(build_defense("challenge", {}, (3, side, side)))[1] == ("resize-pad", side, expected)


def test_resize_pad_errors_name_the_problem() -> None:
    with pytest.raises(GradconcealError, match="needs the model's input size"):
        build_defense("resize-pad", {}, None)
    with pytest.raises(GradconcealError, match="square images"):
        build_defense("challenge", {}, (3, 28, 32))
    with pytest.raises(GradconcealError, match=r"min_size must be in 1\.\.27"):
        build_defense("resize-pad", {"min_size": 28}, (1, 28, 28))
    with pytest.raises(GradconcealError, match="takes settings"):
        build_defense("gcm", {"min_size": 3}, (1, 28, 28))
    with pytest.raises(GradconcealError, match="did you mean 'gcm'|unknown defense"):
        build_defense("gcn", {}, (1, 28, 28))


def test_bpda_eot_applies_to_resize_pad_without_gcm_by_the_one_rule() -> None:
    """BPDA without GCM is plain autograd, so BPDA+EOT on a random defence is EOT: it applies, in the preset
    (on the model), in the evaluation (on the spec's defence) and in the audit's choice of view alike."""
    from gradconceal.attacks.adaptive import AdaptiveView
    from gradconceal.attacks.presets import preset
    from gradconceal.defenses import DefendedModel
    from gradconceal.masking.views import attacker_view

    plan = next(p for p in preset("adaptive", (1, 28, 28)) if p.view == "bpda+eot")
    base = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    for name, random in (("resize-pad", True), ("challenge", True), ("gcm", False), ("none", False)):
        layers = build_defense(name, {}, (1, 28, 28))
        defended = DefendedModel(base, layers).eval()
        entry = load_spec({"models": ["fmnist-cnn"], "defenses": [name], "data": "digits", "attacks": []}).defenses[0]
        assert plan.applies_to(defended) is random, name
        assert plan.applies(random=entry.random) is random, name
        view = attacker_view(defended, None, eot_samples=4)
        assert (isinstance(view, AdaptiveView) and view.eot_samples == 4) is random, name
