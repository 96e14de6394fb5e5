"""Threat model, projections and random starts: budgets parsed and enforced, projections exact, draws in the ball."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradconceal.attacks import ThreatModel
from gradconceal.attacks.geometry import (
    ascent_direction,
    finite_gradient,
    project_l1_box,
    random_in_ball,
    sparse_l1_direction,
)
from gradconceal.attacks.randomness import SampleRandom
from gradconceal.errors import GradconcealError


def test_budget_strings_and_norm_spellings():
    threat = ThreatModel("Linf", "8/255")
    assert threat.norm == "linf" and threat.eps == pytest.approx(8 / 255)
    assert str(threat) == "Linf 8/255"
    assert ThreatModel("L2", "0.5").eps == 0.5 and ThreatModel("l1", 1600).eps == 1600.0


@pytest.mark.parametrize(
    "norm, eps, message",
    [
        ("linf", 0, "eps must be > 0"),
        ("l2", -0.5, r"eps must be > 0 for norm 'l2', got -0.5"),
        ("linf", float("nan"), "eps must be a finite number"),
        ("linf", "8/0", "eps must be a number or a fraction"),
        ("linf", "abc", "eps must be a number or a fraction"),
        ("linf", True, "eps must be a number"),
        ("linf", 1.5, "eps must be <= 1 for norm 'linf'"),
        ("linff", 1.0, r"norm must be one of .*did you mean 'linf'"),
    ],
)
def test_bad_budgets_are_refused(norm, eps, message):
    with pytest.raises(GradconcealError, match=message):
        ThreatModel(norm, eps)


def test_l2_and_l1_budgets_checked_against_the_largest_distance():
    ThreatModel("l2", 27.9).check_image_shape((1, 28, 28))  # sqrt(784) = 28
    with pytest.raises(GradconcealError, match=r"exceeds the largest possible distance .*1x28x28.*\(28\)"):
        ThreatModel("l2", 28.5).check_image_shape((1, 28, 28))
    with pytest.raises(GradconcealError, match="exceeds the largest possible distance"):
        ThreatModel("l1", 785).check_image_shape((1, 28, 28))
    ThreatModel("l1", 1600).check_image_shape((3, 224, 224))


@pytest.mark.parametrize("norm, eps", [("linf", 8 / 255), ("l2", 0.5), ("l1", 5.0)])
def test_project_lands_in_ball_and_box(norm, eps):
    g = torch.Generator().manual_seed(0)
    original = torch.rand(16, 1, 28, 28, generator=g)
    candidate = original + torch.randn(16, 1, 28, 28, generator=g) * 3
    threat = ThreatModel(norm, eps)
    projected = threat.project(original, candidate)
    assert projected.min() >= 0 and projected.max() <= 1
    assert (threat.norms(projected - original) <= eps * (1 + 1e-5)).all()
    inside = original + (candidate - original) * 1e-4  # already feasible: unchanged
    inside = inside.clamp(0, 1)
    assert torch.allclose(threat.project(original, inside), inside, atol=1e-7)


def _l1_box_by_bisection(v, x, eps):
    """Independent reference: bisection on the threshold, in float64, 200 halvings."""
    cap = torch.where(v >= 0, 1 - x, x)
    lo, hi = torch.zeros(v.shape[0], 1, dtype=torch.float64), v.abs().amax(1, keepdim=True)
    for _ in range(200):
        mid = (lo + hi) / 2
        total = (v.abs() - mid).clamp_min(0).minimum(cap).sum(1, keepdim=True)
        lo, hi = torch.where(total > eps, mid, lo), torch.where(total > eps, hi, mid)
    boxed = v.abs().minimum(cap)
    lam = torch.where(boxed.sum(1, keepdim=True) > eps, hi, torch.zeros_like(hi))
    return v.sign() * (v.abs() - lam).clamp_min(0).minimum(cap)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.floats(0.05, 20.0), spread=st.floats(0.01, 2.0))
def test_exact_l1_box_projection_matches_reference(seed, eps, spread):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 40, generator=g, dtype=torch.float64)
    x[:, :5] = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5], dtype=torch.float64)  # pixels on the box edges
    v = torch.randn(3, 40, generator=g, dtype=torch.float64) * spread
    ours = project_l1_box(v, x, eps)
    reference = _l1_box_by_bisection(v, x, eps)
    assert torch.allclose(ours, reference, atol=1e-9)
    assert (ours.abs().sum(1) <= eps * (1 + 1e-12) + 1e-12).all()
    assert ((x + ours) >= -1e-12).all() and ((x + ours) <= 1 + 1e-12).all()


def test_exact_l1_box_projection_is_closer_than_rescaling():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 1, 28, 28, generator=g)
    v = torch.randn(8, 1, 28, 28, generator=g) * 0.3
    exact = project_l1_box(v, x, 8.0)
    rescaled = ThreatModel("l1", 8.0).project(x, x + v) - x
    assert ((exact - v).flatten(1).norm(dim=1) <= (rescaled - v).flatten(1).norm(dim=1) + 1e-6).all()


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 2.0), ("l1", 30.0)])
def test_random_start_is_inside_the_ball(norm, eps):
    random = SampleRandom(seed=0, sample_seeds=None, size=64, device=torch.device("cpu"))
    like = torch.zeros(64, 3, 8, 8)
    points = random_in_ball(torch.arange(64), random, like, norm, eps)
    norms = ThreatModel(norm, eps).norms(points)
    assert (norms <= eps * (1 + 1e-5)).all()
    assert norms.mean() > 0.5 * eps  # fills the ball, not a point
    if norm == "l2":  # uniform in a 192-d ball: radius ~ eps * d / (d + 1)
        assert norms.mean() == pytest.approx(eps * 192 / 193, rel=0.01)


def test_per_sample_streams_do_not_depend_on_the_batch():
    seeds = [11, 12, 13, 14]
    full = SampleRandom(0, seeds, 4, torch.device("cpu")).uniform(torch.arange(4), (5,))
    alone = SampleRandom(0, seeds[2:3], 1, torch.device("cpu")).uniform(torch.arange(1), (5,))
    assert torch.equal(full[2], alone[0])
    other_attack_seed = SampleRandom(1, seeds, 4, torch.device("cpu")).uniform(torch.arange(4), (5,))
    assert not torch.equal(full, other_attack_seed)


def test_directions_have_unit_norm_even_for_concealed_size_gradients():
    grad = torch.randn(4, 1, 6, 6) * 1e12
    grad[0, 0, 0, 0] = float("inf")
    assert torch.isfinite(finite_gradient(grad)).all()
    for norm, p in [("l2", 2), ("l1", 1)]:
        unit = ascent_direction(grad, norm)
        assert torch.allclose(unit.flatten(1).norm(p=p, dim=1), torch.ones(4), atol=1e-5)
    assert torch.equal(ascent_direction(grad, "linf"), grad.sign())


def test_sparse_l1_direction_uses_k_movable_pixels():
    grad = torch.randn(2, 1, 10, 10)
    images = torch.rand(2, 1, 10, 10)
    images[0, 0, 0, :] = torch.where(grad[0, 0, 0, :] > 0, 1.0, 0.0)  # first row pinned at the edge it is pushed to
    step = sparse_l1_direction(grad, images, k=7)
    assert ((step != 0).flatten(1).sum(1) == 7).all()
    assert torch.allclose(step.abs().flatten(1).sum(1), torch.ones(2))
    assert (step[0, 0, 0, :] == 0).all()
    assert math.isclose(float((step.sign() * grad.sign()).clamp_max(0).sum()), 0.0)
