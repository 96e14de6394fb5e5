"""Bad input to attacks: a GradconcealError naming the argument, raised before the model is ever called."""

import pytest
import torch
from attacks_support import CountingModel

from gradconceal.attacks import APGD, CW, FGSM, PGD, Square, create_attack, list_attacks
from gradconceal.errors import GradconcealError


@pytest.fixture
def model():
    torch.manual_seed(0)
    return CountingModel()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 1, 8, 8, generator=g), torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize(
    "make_images, labels, message",
    [
        (lambda x: x * 2, None, r"images must be pixels in \[0, 1\], got values in \[0.002472, 1.994\]"),
        (lambda x: x - 0.5, None, r"images must be pixels in \[0, 1\]"),
        (lambda x: x[0], None, r"images must have shape \(N, C, H, W\), got \(1, 8, 8\) \(add the batch dimension"),
        (lambda x: (x * 255).to(torch.uint8), None, r"images must be float32 or float64, got torch.uint8 \(divide"),
        (lambda x: x.half(), None, r"images must be float32 or float64, got torch.float16 .*autocast"),
        (lambda x: torch.where(x > 0.5, float("nan"), x), None, "images contain NaN"),
        (lambda x: torch.rand(4, 1, 9, 9), None, r"images have shape \(C, H, W\) = \(1, 9, 9\), the model expects \(1, 8, 8\)"),
        (lambda x: x[:0], None, "empty batch"),
        (lambda x: x, torch.tensor([0.0, 1.0, 2.0, 3.0]), "labels must hold integer class indices, got dtype torch.float32"),
        (lambda x: x, torch.tensor([0, 1, 2]), r"labels must have shape \(4,\)"),
        (lambda x: x, torch.tensor([0, 1, 2, 10]), r"labels must be < 10 .*got 10"),
        (lambda x: x, torch.tensor([0, -1, 2, 3]), "labels must be >= 0"),
        (lambda x: x, "cat", "labels must be a tensor of class indices"),
    ],
)
def test_bad_batches_fail_before_any_work(model, batch, make_images, labels, message):
    images, good_labels = batch
    with pytest.raises(GradconcealError, match=message):
        PGD(model, eps=0.1, steps=2).perturb(make_images(images), good_labels if labels is None else labels)
    assert model.calls == 0


def test_bad_sample_seeds_and_targets(model, batch):
    images, labels = batch
    with pytest.raises(GradconcealError, match=r"sample_seeds must be 4 integers"):
        PGD(model, eps=0.1).perturb(images, labels, sample_seeds=[1, 2])
    with pytest.raises(GradconcealError, match="target_labels were given to an untargeted attack"):
        PGD(model, eps=0.1).perturb(images, labels, target_labels=torch.tensor([1, 2, 3, 4]))
    with pytest.raises(GradconcealError, match="target_labels must differ from labels"):
        PGD(model, eps=0.1, targeted=True).perturb(images, labels, target_labels=labels)
    assert model.calls == 0


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda m: PGD(m, steps=0), "steps must be an integer >= 1, got 0"),
        (lambda m: PGD(m, alpha=-1), "alpha must be > 0, got -1"),
        (lambda m: PGD(m, alpha="x"), "alpha must be a number"),
        (lambda m: PGD(m, loss="hinge"), r"loss must be one of \['ce', 'margin', 'dlr'\], got 'hinge'"),
        (lambda m: PGD(m, random_start="yes"), "random_start must be True or False"),
        (lambda m: PGD(m, norm="linf", l1_step="sparse"), "l1_step='sparse' applies to norm 'l1' only"),
        (lambda m: PGD(m, norm="l2", eps=9.0), r"exceeds the largest possible distance between two 1x8x8 images"),
        (lambda m: APGD(m, norm="l1", eps=1.0), r"APGD supports norm \['linf', 'l2'\]"),
        (lambda m: CW(m, norm="linf", eps=0.1), r"CW supports norm \['l2'\]"),
        (lambda m: CW(m, eps=1.0, kappa=-1), "kappa must be a number >= 0"),
        (lambda m: CW(m, eps=1.0, kappa="big"), "kappa must be a number"),
        (lambda m: Square(m, p_init=2), r"p_init must be in \(0, 1\]"),
        (lambda m: Square(m, n_queries=0), "n_queries must be an integer >= 1"),
        (lambda m: FGSM(m, eps=float("nan")), "eps must be a finite number"),
        (lambda m: FGSM("not a model"), "model must be a torch.nn.Module"),
    ],
)
def test_bad_settings_are_refused(model, build, message):
    with pytest.raises(GradconcealError, match=message):
        build(model)


def test_dlr_needs_three_classes(batch):
    images, _ = batch
    two_classes = CountingModel(classes=2)
    with pytest.raises(GradconcealError, match="loss 'dlr' needs a model with at least 3 classes, this one has 2"):
        APGD(two_classes, eps=0.1, loss="dlr").perturb(images, torch.tensor([0, 1, 0, 1]))


def test_registry_names_and_settings(model):
    assert {"fgsm", "pgd", "apgd", "apgd-t", "cw", "square", "transfer"} <= set(list_attacks())
    attack = create_attack("PGD", model, norm="l2", eps=1.0, steps=3)
    assert isinstance(attack, PGD) and attack.threat.norm == "l2" and attack.steps == 3
    apgd_t = create_attack("apgd-t", model, eps=0.1)
    assert apgd_t.targeted and apgd_t.loss == "dlr"
    with pytest.raises(GradconcealError, match=r"unknown attack 'pdg' \(did you mean 'pgd'\?\)"):
        create_attack("pdg", model)
    with pytest.raises(GradconcealError, match=r"attack 'pgd' has no setting 'step' \(did you mean 'steps'\?\)"):
        create_attack("pgd", model, step=3)
    with pytest.raises(GradconcealError, match="attack 'apgd-t' fixes targeted=True"):
        create_attack("apgd-t", model, targeted=False)
    with pytest.raises(GradconcealError, match="only a defended model"):
        create_attack("transfer", model, eps=0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_images_on_another_device_than_the_model(model, batch):
    images, labels = batch
    with pytest.raises(GradconcealError, match=r"images are on cuda:0 but the model is on cpu"):
        PGD(model, eps=0.1).perturb(images.cuda(), labels)
