"""FAB and FAB-T: exact boundary projections, exact minimal norms on a linear model, the per-sample minimal norms
and robust accuracy at every budget, the registry names, and a cross-check against pyautoattack's FAB.

The cross-check (slow; skipped without pyautoattack) runs FAB-T as AutoAttack does (100 steps, 9 target classes,
one run each) on the shipped Fashion-MNIST CNN and its first 64 test images, ours and pyautoattack's, at Linf 8/255
and at the paper's L2 budget scaled to 28x28 (0.57735). Ours must be as strong: robust accuracy at most 2 images
of 64 above theirs, and on the images both fool within the budget, our minimal norms on average at most 3 %
larger than theirs.
"""

import math

import pytest
import torch
from attacks_support import fmnist_batch, fmnist_model, one_thread  # noqa: F401
from torch import nn

from gradconceal.attacks import FAB, FABResult, create_attack, list_attacks, robust_accuracy_at
from gradconceal.attacks.fab import boundary_step
from gradconceal.errors import GradconcealError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cnn():
    return fmnist_model()


@pytest.fixture(scope="module")
def eight():
    return fmnist_batch(8)


class Linear(nn.Module):
    """A linear classifier on 1x6x6 images: its decision boundaries are exactly hyperplanes."""

    def __init__(self, classes: int = 4, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(classes, 36, generator=generator, dtype=torch.float64))
        self.bias = nn.Parameter(torch.randn(classes, generator=generator, dtype=torch.float64))
        self.input_size = (1, 6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


def exact_distance(model: Linear, images: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
    """The distance to the nearest decision boundary of a linear model (no box): min_j gap_j / ||w_y - w_j||_dual."""
    logits = model(images).detach()
    out = torch.full((len(labels),), math.inf, dtype=torch.float64)
    for i, y in enumerate(labels.tolist()):
        for j in range(logits.shape[1]):
            if j == y:
                continue
            w = (model.weight[y] - model.weight[j]).detach()
            dual = w.abs().sum() if norm == "linf" else w.norm()
            out[i] = min(out[i], float((logits[i, y] - logits[i, j]) / dual))
    return out


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_boundary_step_is_the_exact_minimal_projection(norm):
    """Against an exact solver (scipy's linprog for Linf, SLSQP for L2) on small random problems, box included."""
    optimize = pytest.importorskip("scipy.optimize")
    generator = torch.Generator().manual_seed(1)
    points = torch.rand(20, 5, generator=generator, dtype=torch.float64)
    normals = torch.randn(20, 5, generator=generator, dtype=torch.float64)
    offsets = (normals * torch.rand(20, 5, generator=generator, dtype=torch.float64)).sum(1)  # reachable in the box
    steps = boundary_step(points, normals, offsets, norm)
    moved = points + steps
    assert torch.allclose((normals * moved).sum(1), offsets, atol=1e-9)
    assert bool(((moved >= -1e-12) & (moved <= 1 + 1e-12)).all())
    for t, w, b, d in zip(points.numpy(), normals.numpy(), offsets.numpy(), steps):
        if norm == "linf":  # variables (d, r): minimise r with |d_i| <= r, box, <w, d> = b - <w, t>
            n = len(t)
            cost = [0.0] * n + [1.0]
            upper = [[(1.0 if k == i else 0.0) for k in range(n)] + [-1.0] for i in range(n)]
            lower = [[(-1.0 if k == i else 0.0) for k in range(n)] + [-1.0] for i in range(n)]
            solution = optimize.linprog(cost, A_ub=upper + lower, b_ub=[0.0] * (2 * n), A_eq=[list(w) + [0.0]],
                                        b_eq=[b - float(w @ t)], bounds=[(-ti, 1 - ti) for ti in t] + [(0, None)])
            best = solution.fun
            ours = float(d.abs().max())
        else:
            solution = optimize.minimize(lambda v: float(v @ v), x0=[0.0] * len(t), method="SLSQP",
                                         constraints=[{"type": "eq", "fun": lambda v, w=w, t=t, b=b: float(w @ (t + v)) - b}],
                                         bounds=[(-ti, 1 - ti) for ti in t], options={"ftol": 1e-14, "maxiter": 500})
            best = math.sqrt(solution.fun)
            ours = float(d.norm())
        assert ours == pytest.approx(best, rel=1e-5, abs=1e-8)


def test_boundary_step_goes_to_the_box_corner_when_the_plane_is_out_of_reach():
    points = torch.full((1, 3), 0.5, dtype=torch.float64)
    normal = torch.tensor([[1.0, -2.0, 0.0]], dtype=torch.float64)
    step = boundary_step(points, normal, torch.tensor([100.0], dtype=torch.float64), "l2")
    assert torch.allclose(step, torch.tensor([[0.5, -0.5, 0.0]], dtype=torch.float64))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_minimal_norm_on_a_linear_model_is_the_distance_to_the_nearest_boundary(norm):
    model = Linear()
    images = 0.4 + 0.2 * torch.rand(12, 1, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    labels = model(images).argmax(1)
    exact = exact_distance(model, images, labels, norm)
    eps = float(exact.max()) * 1.5 if norm == "l2" else min(1.0, float(exact.max()) * 1.5)
    result = FAB(model, norm=norm, eps=eps, steps=50).perturb(images, labels)
    assert isinstance(result, FABResult)
    reach = exact.view(-1, 1, 1, 1)  # no pixel of the minimal perturbation moves further than its norm
    inside = (images + reach).le(1).all() and (images - reach).ge(0).all()
    assert inside, "the nearest boundary should be reachable without touching the box"
    assert bool(result.fooled.all())
    assert torch.all(result.min_norm.double() >= exact * (1 - 1e-4))
    assert torch.all(result.min_norm.double() <= exact * 1.01)  # FAB converges to the boundary from outside


def test_min_norm_gives_the_robust_accuracy_at_every_budget():
    model = Linear(seed=3)
    images = torch.rand(16, 1, 6, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    labels = model(images).argmax(1)
    labels[:3] = (labels[:3] + 1) % 4  # three images the model gets wrong: min norm 0
    budgets = [0.01, 0.05, 0.1, 0.2]
    results = {eps: FAB(model, norm="l2", eps=eps, steps=30, early_stop=False).perturb(images, labels)
               for eps in budgets}
    widest = results[budgets[-1]]
    assert torch.equal(widest.min_norm[:3], torch.zeros(3))
    assert bool((widest.min_norm[3:] > 0).all())
    # without early stop every run covers every sample, so the minimal norms do not depend on eps
    for eps, result in results.items():
        assert torch.allclose(result.min_norm, widest.min_norm)
        assert widest.robust_accuracy_at(eps) == [result.robust_accuracy]
        assert bool((result.fooled == (result.clean_correct & (result.min_norm <= eps * (1 + 1e-5)))).all())


def test_robust_accuracy_at():
    norms = torch.tensor([0.0, 0.1, 0.5, math.inf])
    assert robust_accuracy_at(norms, [0.0, 0.05, 0.1, 0.3, 1.0, 1e9]) == [0.75, 0.75, 0.5, 0.5, 0.25, 0.25]
    assert robust_accuracy_at(norms, 0.5) == [0.25]
    with pytest.raises(GradconcealError, match="eps_values must be finite and >= 0"):
        robust_accuracy_at(norms, [-1.0])
    with pytest.raises(GradconcealError, match="no NaN"):
        robust_accuracy_at(torch.tensor([float("nan")]), [0.1])
    with pytest.raises(GradconcealError, match="non-empty 1-d"):
        robust_accuracy_at(torch.zeros(2, 2), [0.1])


def test_registry_names_and_settings():
    assert {"fab", "fab-t"} <= set(list_attacks())
    model = Linear()
    fab_t = create_attack("fab-t", model, norm="l2", eps=0.5, steps=5)
    assert isinstance(fab_t, FAB) and fab_t.targeted and fab_t.n_target_classes == 9
    assert not create_attack("fab", model, eps="8/255").targeted
    with pytest.raises(GradconcealError, match="attack 'fab' has no setting 'loss'"):
        create_attack("fab", model, loss="dlr")
    with pytest.raises(GradconcealError, match="FAB supports norm"):
        FAB(model, norm="l1", eps=1.0)
    for setting, value, message in [("alpha_max", 1.5, "alpha_max must be in"), ("eta", 0.5, "eta must be >= 1"),
                                    ("beta", 1.0, "beta must be in"), ("steps", 0, "steps")]:
        with pytest.raises(GradconcealError, match=message):
            FAB(model, **{setting: value})


def test_fab_t_on_fmnist_fools_within_the_budget_and_counts_its_work(cnn, eight):
    model, (images, labels) = cnn, eight
    attack = FAB(model, norm="linf", eps=8 / 255, steps=10, targeted=True, n_target_classes=3)
    result = attack.perturb(images, labels)
    delta = (result.adversarial - images).flatten(1).abs().amax(1)
    assert bool((delta <= 8 / 255 * (1 + 1e-5)).all())
    assert bool(result.fooled.any()), "FAB-T at 8/255 should fool some of the CNN's images"
    assert bool((result.min_norm[result.fooled] <= 8 / 255 * (1 + 1e-5)).all())
    assert robust_accuracy_at(result.min_norm, 8 / 255) == [result.robust_accuracy]
    with torch.no_grad():
        assert bool((model(result.adversarial).argmax(1)[result.fooled] != labels[result.fooled]).all())
    # a targeted run costs one backward per step; each sample runs 1 to 3 targets of 10 steps
    correct = result.clean_correct
    assert bool(((result.grad_evals[correct] >= 10) & (result.grad_evals[correct] <= 30)).all())
    assert attack.deterministic and FAB(model, restarts=2).deterministic is False


def test_untargeted_fab_is_as_good_as_pyautoattack_on_a_few_images(cnn, eight):
    fab_pt = pytest.importorskip("pyautoattack.fab_pt")
    model, (images, labels) = cnn, eight
    ours = FAB(model, norm="l2", eps=0.57735, steps=10).perturb(images, labels)
    with torch.random.fork_rng():  # pyautoattack's FAB reseeds the global RNG
        theirs = fab_pt.FABAttack_PT(model, norm="L2", n_restarts=1, n_iter=10, eps=0.57735, seed=0)
        adversarial = theirs.attack_single_run(images, labels)  # every success, whatever its norm
    with torch.no_grad():
        fooled = model(adversarial).argmax(1) != labels
    their_norms = torch.where(fooled, (adversarial - images).flatten(1).norm(dim=1), torch.tensor(math.inf))
    with torch.no_grad():
        wrong = model(images).argmax(1) != labels
    their_norms[wrong] = 0.0
    both = torch.isfinite(their_norms) & torch.isfinite(ours.min_norm) & (their_norms > 0)
    assert int(torch.isfinite(ours.min_norm).sum()) >= int(torch.isfinite(their_norms).sum())
    assert both.any()
    assert float(ours.min_norm[both].mean()) <= float(their_norms[both].mean()) * 1.03


def _pyautoattack_fab_t(model, images, labels, norm, eps):
    """pyautoattack's FAB-T as AutoAttack's standard version runs it; returns robust accuracy and norms."""
    fab_pt = pytest.importorskip("pyautoattack.fab_pt")
    with torch.random.fork_rng():
        attack = fab_pt.FABAttack_PT(model, norm={"linf": "Linf", "l2": "L2"}[norm], n_restarts=1, n_iter=100,
                                     eps=eps, seed=0, targeted=True, n_target_classes=9)
        adversarial = attack.perturb(images, labels)
    delta = (adversarial - images).flatten(1)
    norms = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    with torch.no_grad():
        clean = model(images).argmax(1) == labels
        fooled = (model(adversarial).argmax(1) != labels) & (norms <= eps * (1 + 1e-5))
    return float((clean & ~fooled).float().mean()), torch.where(clean & fooled, norms, torch.tensor(math.inf))


@pytest.mark.slow
@pytest.mark.parametrize("norm, eps", [("linf", 8 / 255), ("l2", 0.57735)], ids=["linf-8/255", "l2-0.577"])
def test_fab_t_as_strong_as_pyautoattack(cnn, norm, eps):
    pytest.importorskip("pyautoattack.fab_pt")
    model = cnn
    images, labels = fmnist_batch(64)
    ours = create_attack("fab-t", model, norm=norm, eps=eps, steps=100).perturb(images, labels)
    reference, their_norms = _pyautoattack_fab_t(model, images, labels, norm, eps)
    clean = float(ours.clean_correct.float().mean())
    assert 0.1 < reference < clean - 0.1, "the budget should be mid-range"
    assert ours.robust_accuracy <= reference + 2 / 64
    both = torch.isfinite(their_norms) & ours.fooled
    print(f"FAB-T {norm} eps {eps:.5g}, 64 images: robust accuracy ours {ours.robust_accuracy:.4f}, pyautoattack "
          f"{reference:.4f}; mean minimal norm on the {int(both.sum())} images both fool: ours "
          f"{float(ours.min_norm[both].mean()):.5f}, pyautoattack {float(their_norms[both].mean()):.5f}")
    assert int(both.sum()) >= 10
    assert float(ours.min_norm[both].mean()) <= float(their_norms[both].mean()) * 1.03
