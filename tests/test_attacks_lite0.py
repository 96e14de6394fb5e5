"""The headline facts on pretrained EfficientNet-Lite0 and the nine sample photos, Linf 8/255.

Plain PGD breaks the undefended model; in front of it GCM makes plain PGD fail (the paper's effect);
BPDA through GCM and the gradient-free Square attack break it again. Each photo is attacked on the
label the model gets right (its prediction when that is one of the photo's accepted labels).
"""

import pytest
import torch
from attacks_support import one_thread  # noqa: F401

from gradconceal import conceal
from gradconceal.attacks import PGD, Square, adaptive_view
from gradconceal.errors import GradconcealError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

EPS = 8 / 255


@pytest.fixture(scope="module")
def lite0():
    try:
        from gradconceal.models.zoo import load_model

        return load_model("lite0").eval()
    except (ImportError, GradconcealError) as error:
        pytest.skip(f"lite0 not available: {error}")


@pytest.fixture(scope="module")
def photos(lite0):
    try:
        from gradconceal.data import load_dataset
    except ImportError as error:
        pytest.skip(f"photos not available: {error}")
    try:
        data = load_dataset("photos")
    except GradconcealError as error:
        pytest.skip(f"photos not available: {error}")
    images = torch.stack([data[i][0] for i in range(len(data))])
    with torch.no_grad():
        predicted = lite0(images).argmax(1).tolist()
    labels = torch.tensor([p if p in accepted else t for p, accepted, t in zip(predicted, data.label_sets, data.targets)])
    return images, labels, list(range(len(labels)))


def pgd(model):
    return PGD(model, eps=EPS, steps=5, alpha=2 / 255, check_every=1)  # checks every step: fewer CPU-heavy steps


@pytest.fixture(scope="module")
def vanilla(lite0, photos):
    images, labels, seeds = photos
    return pgd(lite0).perturb(images, labels, seeds)


def test_pgd_leaves_vanilla_lite0_at_zero(vanilla):
    assert vanilla.clean_correct.sum() >= 7  # the model knows these photos
    assert vanilla.robust_accuracy == 0.0


def test_gcm_stops_plain_pgd_and_bpda_undoes_it(lite0, photos, vanilla):
    images, labels, seeds = photos
    defended = conceal(lite0)
    plain = pgd(defended).perturb(images, labels, seeds)
    correct = int(plain.clean_correct.sum())
    assert torch.equal(plain.clean_correct, vanilla.clean_correct)  # GCM changes no clean prediction
    assert int(plain.robust.sum()) >= correct - 2  # most photos survive plain PGD
    bpda = pgd(adaptive_view(defended)).perturb(images, labels, seeds)
    assert bpda.robust_accuracy == vanilla.robust_accuracy == 0.0


def test_square_breaks_gcm_without_gradients(lite0, photos):
    images, labels, seeds = photos
    result = Square(conceal(lite0), eps=EPS, n_queries=80, check_every=1).perturb(images, labels, seeds)
    assert int(result.grad_evals.sum()) == 0
    assert int(result.fooled.sum()) >= int(result.clean_correct.sum()) - 2
