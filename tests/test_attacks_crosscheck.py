"""Cross-checks against established libraries on the same model and images, at mid-range budgets.

Ours must be at least as strong: robust accuracy no more than 2 points above the reference library's.
torchattacks: FGSM, PGD (Linf), PGDL2, Square. foolbox: L2CarliniWagnerAttack (it has the binary search
over c that torchattacks' CW lacks). Each test skips when its library is not installed.
"""

import pytest
import torch
from attacks_support import fmnist_batch, fmnist_model, one_thread  # noqa: F401

from gradconceal.attacks import CW, FGSM, PGD, Square

pytestmark = pytest.mark.usefixtures("one_thread")
TOLERANCE = 0.02


@pytest.fixture(scope="module")
def model():
    return fmnist_model()


@pytest.fixture(scope="module")
def data():
    return fmnist_batch(256)


def robust_accuracy(model, adversarial, images, labels, eps, norm):
    """Share of images classified right on the clean image and on the adversarial one (within the budget)."""
    delta = (adversarial - images).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps * (1 + 1e-4) + 1e-6).all()
    with torch.no_grad():
        clean = model(images).argmax(1) == labels
        kept = model(adversarial).argmax(1) == labels
    return float((clean & kept).float().mean())


CASES = [
    ("FGSM", "linf", 4 / 255, lambda m: FGSM(m, eps=4 / 255),
     lambda ta, m: ta.FGSM(m, eps=4 / 255)),
    ("PGD-Linf", "linf", 4 / 255, lambda m: PGD(m, eps=4 / 255, steps=10, alpha=1 / 255),
     lambda ta, m: ta.PGD(m, eps=4 / 255, alpha=1 / 255, steps=10, random_start=True)),
    # L2 without random start on both sides: torchattacks starts at radius U(0, eps), we (as foolbox) uniformly
    # in the ball, i.e. near its surface in high dimension; the step and the projection are what is compared
    ("PGD-L2", "l2", 0.3, lambda m: PGD(m, norm="l2", eps=0.3, steps=10, alpha=0.06, random_start=False),
     lambda ta, m: ta.PGDL2(m, eps=0.3, alpha=0.06, steps=10, random_start=False)),
]


@pytest.mark.parametrize("name, norm, eps, ours, theirs", CASES, ids=[c[0] for c in CASES])
def test_as_strong_as_torchattacks(model, data, name, norm, eps, ours, theirs):
    torchattacks = pytest.importorskip("torchattacks")
    images, labels = data
    our_accuracy = ours(model).perturb(images, labels).robust_accuracy
    with torch.random.fork_rng():
        torch.manual_seed(0)
        reference = robust_accuracy(model, theirs(torchattacks, model)(images, labels), images, labels, eps, norm)
    clean = robust_accuracy(model, images, images, labels, eps, norm)
    assert 0.2 < reference < clean - 0.1, "budget should be mid-range"
    assert our_accuracy <= reference + TOLERANCE


def test_square_as_strong_as_torchattacks(model, data):
    torchattacks = pytest.importorskip("torchattacks")
    images, labels = data[0][:128], data[1][:128]
    ours = Square(model, eps=12 / 255, n_queries=100).perturb(images, labels).robust_accuracy
    with torch.random.fork_rng():  # torchattacks' Square reseeds the global RNG
        attack = torchattacks.Square(model, norm="Linf", eps=12 / 255, n_queries=100, n_restarts=1, seed=0)
        reference = robust_accuracy(model, attack(images, labels), images, labels, 12 / 255, "linf")
    assert 0.2 < reference < 0.8, "budget should be mid-range"
    assert ours <= reference + TOLERANCE


@pytest.mark.slow
def test_cw_as_strong_as_foolbox(model, data):
    foolbox = pytest.importorskip("foolbox")
    images, labels = data[0][:128], data[1][:128]
    eps = 0.35
    ours = CW(model, eps=eps, steps=50, binary_search_steps=5, lr=0.01, initial_const=0.1).perturb(images, labels)
    attack = foolbox.attacks.L2CarliniWagnerAttack(binary_search_steps=5, steps=50, stepsize=0.01,
                                                   confidence=0, initial_const=0.1, abort_early=True)
    _, clipped, success = attack(foolbox.PyTorchModel(model, bounds=(0, 1)), images, labels, epsilons=eps)
    reference = robust_accuracy(model, clipped, images, labels, eps, "l2")
    assert reference == pytest.approx(1 - float(success.float().mean()), abs=1e-6)
    assert 0.2 < reference < 0.8, "budget should be mid-range"
    assert ours.robust_accuracy <= reference + TOLERANCE
