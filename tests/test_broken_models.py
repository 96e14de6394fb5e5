"""Broken models and careless calls never give a number without a word.

Five kinds, each with its examples: a model whose logits or gradients are not finite is never counted robust
(and one whose clean logits are not finite is refused); a model with fewer classes than the labels is
refused; an output that is not (N, classes) logits or parameters of another dtype than the images end in
one line with the fix; an attack or audit leaves the model's buffers as found; and the global random
generators as found.
"""

from __future__ import annotations

import logging
import random

import numpy
import pytest
import torch
from torch import Tensor, nn

from gradconceal.attacks import APGD, CW, FGSM, PGD, Square, Transfer
from gradconceal.attacks.base import AttackResult
from gradconceal.attacks.losses import is_success
from gradconceal.attacks.probe import LogitsOnly, check_logits, check_num_classes, probe_model
from gradconceal.attacks.threat import ThreatModel
from gradconceal.errors import GradconcealError
from gradconceal.masking.api import audit
from gradconceal.preserve import preserved_model, preserved_rng

# --- tiny models ------------------------------------------------------------------------------------------


class Tiny(nn.Module):
    """A linear classifier on 1 x 8 x 8 images; ``out`` picks a kind of broken output."""

    def __init__(self, classes: int = 10, out: str = "logits", seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(64, classes)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(classes, 64, generator=generator))
            self.lin.bias.zero_()
        self.out = out
        self.input_size = (1, 8, 8)

    def forward(self, x: Tensor):
        z = self.lin(x.flatten(1))
        if self.out == "tuple":
            return z, z.detach()
        if self.out == "list":
            return [z]
        if self.out == "dict":
            return {"logits": z, "features": x}
        if self.out == "1d":
            return z[:, 0]
        if self.out == "3d":
            return z[:, None]
        if self.out == "argmax":
            return z.argmax(dim=1, keepdim=True)
        if self.out == "rows":
            return z[:-1]
        return z


class NanGradient(Tiny):
    """Finite logits whose input gradient is NaN (the derivative of sqrt at 0, times 0)."""

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x.flatten(1)) + 0 * torch.sqrt(x - x.detach()).flatten(1).sum(1, keepdim=True)


class NanAbove(Tiny):
    """Finite logits on images in [0, 0.5]; NaN logits as soon as a pixel passes ``limit`` (off the clean data)."""

    limit = 0.52

    def forward(self, x: Tensor) -> Tensor:
        z = self.lin(x.flatten(1))
        off = (x.flatten(1) > self.limit).any(dim=1, keepdim=True)
        return torch.where(off, torch.full_like(z, float("nan")), z)


class Flat(Tiny):
    """A quantising model: its input gradient is exactly zero everywhere."""

    def forward(self, x: Tensor) -> Tensor:
        return self.lin((x * 4).round().div(4).flatten(1))


def _batch(model: nn.Module, count: int = 8, high: float = 1.0, seed: int = 0):
    """``count`` images in [0, high] labelled with the model's own predictions (so every image is attacked)."""
    images = torch.rand(count, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * high
    with torch.no_grad():
        labels = model(images).argmax(dim=1)
    return images, labels


def _fmnist(count: int = 8):
    from gradconceal.data import load_dataset

    try:
        data = load_dataset("fashion-mnist", limit=count)
    except GradconcealError as error:
        pytest.skip(f"Fashion-MNIST not available: {error}")
    images = torch.stack([data[i][0] for i in range(len(data))])
    return images, torch.tensor(data.targets[: len(data)], dtype=torch.int64)


def _fmnist_cnn() -> nn.Module:
    from gradconceal.models.zoo import load_model

    try:
        return load_model("fmnist-cnn")
    except GradconcealError as error:
        pytest.skip(f"fmnist-cnn not available: {error}")


def _buffers(model: nn.Module):
    return {name: buffer.clone() for name, buffer in model.named_buffers()}


def _same(before, model: nn.Module) -> bool:
    after = dict(model.named_buffers())
    return before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


ATTACKS = {
    "fgsm": lambda m: FGSM(m, eps=0.1),
    "pgd": lambda m: PGD(m, eps=0.1, steps=5),
    "apgd": lambda m: APGD(m, eps=0.1, steps=5),
    "cw": lambda m: CW(m, steps=5),
    "square": lambda m: Square(m, eps=0.1, n_queries=20),
}


# --- 1. non-finite logits and gradients ---------------------------------------------------------------------


def test_nan_weights_are_refused_not_counted_wrong():
    model = _fmnist_cnn()
    images, labels = _fmnist()
    with torch.no_grad():
        model.net.classifier[3].weight[0, 0] = float("nan")
    with torch.no_grad():
        logits = model(images)
    with pytest.raises(GradconcealError, match=r"model 'fmnist-cnn' gives NaN logits on 8 of 8 clean images"):
        check_logits(logits, "fmnist-cnn", 10)
    with pytest.raises(GradconcealError, match=r"model 'fmnist-cnn' gives NaN logits"):
        probe_model(model, images, labels)
    with pytest.raises(GradconcealError, match=r"model 'fmnist-cnn' gives NaN logits"):
        FGSM(model).perturb(images, labels)
    with pytest.raises(GradconcealError, match=r"model 'fmnist-cnn' gives NaN logits"):
        audit(model, (images, labels), quick=True)


def test_infinite_logits_are_refused():
    class Overflow(Tiny):
        def forward(self, x: Tensor) -> Tensor:
            return self.lin(x.flatten(1)) * 1e38 * 1e38

    model = Overflow()
    images, labels = _batch(Tiny())
    with pytest.raises(GradconcealError, match=r"model 'Overflow' gives infinite logits on \d+ of 8 clean images"):
        probe_model(model, images, labels)


def test_check_logits_passes_finite_logits_and_names_the_first_bad_image():
    check_logits(torch.randn(4, 10), "m", 10)
    logits = torch.randn(4, 10)
    logits[2, 3] = float("inf")
    logits[3, 0] = float("nan")
    with pytest.raises(GradconcealError, match=r"NaN or infinite logits on 2 of 4 clean images \(the first: image 2\)"):
        check_logits(logits, "m")


@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd", "cw"])
def test_nan_gradients_are_non_finite_never_robust(name):
    model = NanGradient()
    images, labels = _batch(model)
    result = ATTACKS[name](model).perturb(images, labels)
    assert bool(result.clean_correct.all())
    assert bool(result.non_finite.all())  # before: not recorded, and every image counted robust
    assert not bool(result.robust.any()) and result.robust_accuracy == 0.0 and result.attack_robustness == 0.0
    assert bool(torch.isfinite(result.adversarial).all())


@pytest.mark.parametrize("name", ["fgsm", "pgd", "square"])
def test_nan_logits_under_attack_are_not_counted_fooled_nor_robust(name):
    model = NanAbove()
    images, labels = _batch(model, high=0.5)
    result = ATTACKS[name](model).perturb(images, labels)
    assert bool(result.non_finite.any())
    flagged = result.non_finite
    # an argmax over NaN logits is no decision: such a sample is neither fooled nor robust
    assert not bool((result.robust & flagged).any())
    with torch.no_grad():
        final = model(result.adversarial)
    assert bool(torch.isfinite(final[result.fooled]).all())  # every fooled image fools with finite logits
    assert bool(torch.isfinite(result.adversarial).all())


def test_huge_and_zero_gradients_are_not_flagged():
    from gradconceal.defenses.concealment import DefendedModel, GradientConcealment

    model = _fmnist_cnn()
    images, labels = _fmnist()
    gcm = DefendedModel(model, [GradientConcealment()])  # gradient ~1e12: huge, finite
    result = PGD(gcm, eps=8 / 255, steps=3).perturb(images, labels)
    assert not bool(result.non_finite.any())
    flat = Flat()
    flat_images, flat_labels = _batch(flat)
    result = PGD(flat, eps=0.02, steps=3, random_start=False).perturb(flat_images, flat_labels)
    assert not bool(result.non_finite.any()) and bool(result.robust.all())  # zero gradient: stuck, not broken


def test_attack_result_non_finite_defaults_to_false():
    count = 3
    result = AttackResult(
        adversarial=torch.zeros(count, 1, 2, 2), fooled=torch.zeros(count, dtype=torch.bool), norms=torch.zeros(count),
        grad_evals=torch.zeros(count, dtype=torch.int64), forward_evals=torch.ones(count, dtype=torch.int64),
        clean_correct=torch.ones(count, dtype=torch.bool), stopped_early=torch.zeros(count, dtype=torch.bool),
        threat=ThreatModel("linf", 0.1), attack="test",
    )
    assert result.non_finite.dtype == torch.bool and not bool(result.non_finite.any())
    assert result.robust_accuracy == 1.0
    result.non_finite[1] = True
    assert result.robust.tolist() == [True, False, True]


def test_is_success_never_counts_nan_logits():
    logits = torch.tensor([[0.0, 1.0], [float("nan"), 0.0], [0.0, float("inf")]])
    labels = torch.tensor([0, 1, 0])
    assert is_success(logits, labels, None).tolist() == [True, False, False]
    assert is_success(logits, labels, torch.tensor([1, 0, 1])).tolist() == [True, False, False]


def test_transfer_from_a_surrogate_with_nan_gradients_is_non_finite():
    target = Tiny()
    surrogate = NanGradient()
    images, labels = _batch(target)
    with torch.no_grad():
        agree = surrogate(images).argmax(1) == labels
    result = Transfer(target, attack="fgsm", surrogate=surrogate, eps=0.1).perturb(images, labels)
    assert bool(agree.any())
    assert result.non_finite[agree].all() and not bool(result.robust[agree].any())


def test_audit_names_non_finite_gradients():
    model = NanGradient().eval()
    images, labels = _batch(model, count=12)
    report = audit(model, (images, labels), n=12)
    assert report.verdict != "no masking detected"
    norm = report.check("gradient_norm")
    assert norm.flagged and "NaN or inf on 12 of 12 images" in norm.summary
    finding = report.check("non_finite")
    assert finding.flagged and "FGSM 12" in finding.summary and "NaN or infinite" in finding.meaning
    assert "robust: FGSM 0/12, PGD-10 0/12" in report.check("iterative_vs_single").summary
    assert report.check("eps_sweep").flagged  # the unbounded attack stalls: the attack, not the model, fails
    assert "non-finite" in report.cause


def test_audit_random_noise_does_not_count_nan_logits_as_fooled():
    from gradconceal.masking.attack_checks import _random_noise

    model = NanAbove()
    images = 0.45 + 0.05 * torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = model(images).argmax(dim=1)
    # every +-0.1 sign-noise draw lifts some pixel above 0.52: every draw gives NaN logits
    fooled, _, non_finite = _random_noise(model, images, labels, torch.arange(6), 0.1, 4, 0, 16)
    assert bool(non_finite.all()) and not bool(fooled.any())  # before: NaN's argmax counted as fooled


def test_audit_of_an_honest_model_has_no_non_finite_finding():
    model = Tiny().eval()
    images, labels = _batch(model, count=8)
    report = audit(model, (images, labels), n=8)
    assert report.check("non_finite").status == "pass"


# --- 2. fewer classes than the labels --------------------------------------------------------------------


def test_a_four_class_model_on_fashion_mnist_is_refused():
    images, labels = _fmnist()
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 4))
    with torch.no_grad():
        logits = model(images)
    with pytest.raises(GradconcealError, match=r"model 'four': labels must be < 4 .*got 9; use a model with at least 10"):
        check_num_classes(logits, labels, "four")
    with pytest.raises(GradconcealError, match=r"model 'four' has 4 classes \(outputs\) but the data has 10 \(labels 0..9\)"):
        check_logits(logits, "four", num_labels=10)
    with pytest.raises(GradconcealError, match=r"model 'Sequential': labels must be < 4"):
        probe_model(model, images, labels)
    with pytest.raises(GradconcealError, match=r"labels must be < 4"):
        PGD(model, steps=2).perturb(images, labels)
    with pytest.raises(GradconcealError, match=r"model 'Sequential': labels must be < 4"):
        audit(model, (images, labels), quick=True)


def test_data_class_count_refuses_even_when_the_sample_fits():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 4))
    images = torch.rand(2, 1, 28, 28)
    logits = probe_model(model, images, torch.tensor([0, 3]))  # the labels fit...
    with pytest.raises(GradconcealError, match="has 4 classes"):
        check_logits(logits, "four", num_labels=10)  # ...but the data has 10 classes


def test_check_num_classes_takes_a_model_an_int_or_logits():
    labels = torch.tensor([0, 5])
    assert check_num_classes(10, labels) == 10
    assert check_num_classes(torch.zeros(2, 6), labels) == 6
    model = Tiny()
    model.num_classes = 4  # type: ignore[attr-defined]
    with pytest.raises(GradconcealError, match=r"model 'Tiny': labels must be < 4"):
        check_num_classes(model, labels)
    with pytest.raises(GradconcealError, match="does not say how many classes"):
        check_num_classes(nn.Linear(2, 2), labels)
    with pytest.raises(GradconcealError, match=r"target_labels must be < 3"):
        check_num_classes(3, torch.tensor([7]), "m", "target_labels")
    assert check_num_classes(3, torch.zeros(0, dtype=torch.int64)) == 3


# --- 3. outputs that are not (N, classes) logits, and dtypes ----------------------------------------------


OUTPUTS = [
    ("tuple", r"returns a tuple of 2 outputs .*LogitsOnly\(model, 0\) \(forward: model\(x\)\[0\]\)"),
    ("list", r"returns a list of 1 outputs"),
    ("dict", r"returns a dict with keys \['logits', 'features'\].*LogitsOnly\(model, 'logits'\)"),
    ("1d", r"returns shape \(8,\), one score per image"),
    ("3d", r"returns shape \(8, 1, 10\) for 8 images"),
    ("argmax", r"returns int64 values, not floating-point logits"),
    ("rows", r"returns shape \(7, 10\) for 8 images"),
]


@pytest.mark.parametrize("out, message", OUTPUTS)
def test_outputs_that_are_not_logits_get_one_line(out, message):
    model = Tiny(out=out)
    images, labels = _batch(Tiny())
    with pytest.raises(GradconcealError, match=r"model 'Tiny' " + message):
        probe_model(model, images, labels)
    for make in (ATTACKS["fgsm"], ATTACKS["pgd"], ATTACKS["square"]):
        with pytest.raises(GradconcealError, match=message):
            make(model).perturb(images, labels)
    with pytest.raises(GradconcealError, match=message):
        audit(model, (images, labels), quick=True)


@pytest.mark.parametrize("out, key", [("tuple", 0), ("list", 0), ("dict", "logits")])
def test_logits_only_is_the_fix(out, key):
    model = LogitsOnly(Tiny(out=out), key)
    images, labels = _batch(Tiny())
    assert model.input_size == (1, 8, 8)
    result = FGSM(model, eps=0.1).perturb(images, labels)
    assert len(result) == 8 and not bool(result.non_finite.any())


def test_a_half_model_on_float32_images_gets_one_line():
    model = Tiny().half()
    images, labels = _batch(Tiny())
    message = r"model 'Tiny' has float16 parameters but the images are float32; .*instead of converting the model with .half\(\)"
    with pytest.raises(GradconcealError, match=message):
        probe_model(model, images, labels)
    with pytest.raises(GradconcealError, match=message):
        PGD(model, steps=2).perturb(images, labels)
    with pytest.raises(GradconcealError, match=message):
        audit(model, (images, labels), quick=True)
    bf16 = Tiny().to(torch.bfloat16)
    with pytest.raises(GradconcealError, match="bfloat16 parameters"):
        FGSM(bf16).perturb(images, labels)


def test_a_float32_model_on_float64_images_gets_one_line():
    images, labels = _batch(Tiny())
    with pytest.raises(GradconcealError, match=r"float32 parameters but the images are float64; convert one"):
        FGSM(Tiny()).perturb(images.double(), labels)
    result = FGSM(Tiny().double()).perturb(images.double(), labels)  # matching dtypes run
    assert result.adversarial.dtype == torch.float64


def test_a_forward_that_fails_is_named_with_its_cause():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())  # takes 3 channels, gets 1
    images = torch.rand(2, 1, 8, 8)
    with pytest.raises(GradconcealError, match=r"model 'Sequential' fails on images of shape \(2, 1, 8, 8\) \(float32\): RuntimeError") as caught:
        FGSM(model).perturb(images, torch.tensor([0, 1]))
    assert isinstance(caught.value.__cause__, RuntimeError)


# --- 4. buffers of a model in training mode ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["fgsm", "pgd", "square"])
def test_an_attack_leaves_batch_norm_statistics_as_found(name, caplog):
    model = _fmnist_cnn().train()
    images, labels = _fmnist()
    before = _buffers(model)
    with caplog.at_level(logging.WARNING):
        make = {"fgsm": lambda m: FGSM(m), "pgd": lambda m: PGD(m, steps=3), "square": lambda m: Square(m, n_queries=10)}
        make[name](model).perturb(images, labels)
    assert _same(before, model)  # num_batches_tracked and running stats unchanged (they used to move)
    assert model.training and all(m.training for m in model.modules())  # the mode is the user's
    assert "training mode" in caplog.text


def test_audit_leaves_batch_norm_statistics_as_found():
    model = _fmnist_cnn().train()
    images, labels = _fmnist()
    before = _buffers(model)
    audit(model, (images, labels), quick=True)
    assert _same(before, model) and model.training


def test_preserved_model_restores_buffers_in_place_and_modes():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).train()
    mean = model[1].running_mean
    before = _buffers(model)
    with preserved_model(model):
        model(torch.randn(4, 3))
        model[1].eval()
        model[1].register_buffer("extra", torch.zeros(1))
    assert model[1].running_mean is mean and _same(before, model)
    assert model[1].training and not hasattr(model[1], "extra")


def _frozen_batch_norm_model() -> nn.Module:
    """A model in training mode whose batch norm is frozen in eval mode (a usual fine-tuning setup)."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(256, 10)).train()
    model[1].eval()
    return model


def _modes(model: nn.Module):
    return [m.training for m in model.modules()]


def test_wrappers_keep_the_modes_the_user_set():
    from gradconceal.attacks.adaptive import adaptive_view
    from gradconceal.attacks.labelsets import AcceptedLabels
    from gradconceal.attacks.plan import undefended
    from gradconceal.defenses.concealment import DefendedModel, GradientConcealment

    model = _frozen_batch_norm_model()
    modes = _modes(model)
    assert adaptive_view(model).training and _modes(model) == modes  # before: the batch norm was set to training
    assert AcceptedLabels(model, [1, 2], 1).training and _modes(model) == modes
    assert LogitsOnly(model).training and _modes(model) == modes
    defended = DefendedModel(model, [GradientConcealment()], mean=(0.5,), std=(0.5,))
    modes = _modes(defended)
    undefended(defended)
    assert _modes(defended) == modes  # before: eval() on the user's layers


def test_an_attack_on_a_view_of_a_mixed_mode_model_keeps_the_modes_and_buffers():
    from gradconceal.attacks.adaptive import adaptive_view

    model = _frozen_batch_norm_model()
    model[1].train()  # now batch norm in training mode: its statistics would move
    modes, before = _modes(model), _buffers(model)
    images = torch.rand(4, 1, 8, 8)
    PGD(adaptive_view(model, eot_samples=2), steps=2).perturb(images, torch.tensor([0, 1, 2, 3]))
    assert _modes(model) == modes and _same(before, model)


def test_the_audit_does_not_warn_about_training_mode_without_mode_dependent_layers(caplog):
    model = Tiny().train()  # no batch norm, no dropout: the mode changes nothing
    images, labels = _batch(model)
    with caplog.at_level(logging.WARNING):
        audit(model, (images, labels), quick=True)
    assert "training mode" not in caplog.text


# --- 5. the global random generators ---------------------------------------------------------------------


def _rng_states():
    return torch.random.get_rng_state(), numpy.random.get_state()[1].copy(), random.getstate()


def _rng_same(before) -> bool:
    now = _rng_states()
    return torch.equal(before[0], now[0]) and bool((before[1] == now[1]).all()) and before[2] == now[2]


class GlobalDraws(Tiny):
    """A model whose forward draws from every global generator (dropout-like noise from torch, numpy, random)."""

    def forward(self, x: Tensor) -> Tensor:
        noise = torch.rand(()) * 1e-6 + float(numpy.random.rand()) * 1e-6 + random.random() * 1e-6
        return self.lin(x.flatten(1)) + noise


def test_preserved_rng_gives_every_generator_back():
    before = _rng_states()
    with preserved_rng():
        torch.rand(3), numpy.random.rand(3), random.random()
    assert _rng_same(before)
    with pytest.raises(RuntimeError):
        with preserved_rng():
            torch.rand(3)
            raise RuntimeError("inside")
    assert _rng_same(before)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attacks_leave_the_global_rng_as_found(name):
    model = GlobalDraws()
    images, labels = _batch(Tiny())
    before = _rng_states()
    ATTACKS[name](model).perturb(images, labels)
    assert _rng_same(before)


def test_an_attack_on_dropout_in_training_mode_leaves_the_global_rng_as_found():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Dropout(0.3)).train()
    images = torch.rand(4, 1, 8, 8)
    before = _rng_states()
    PGD(model, steps=3).perturb(images, torch.tensor([0, 1, 2, 3]))
    assert _rng_same(before)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_an_attack_on_cuda_leaves_the_cuda_generator_as_found():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Dropout(0.3)).train().cuda()
    images = torch.rand(4, 1, 8, 8, device="cuda")
    before = torch.cuda.get_rng_state()
    PGD(model, steps=3).perturb(images, torch.tensor([0, 1, 2, 3], device="cuda"))
    assert torch.equal(before, torch.cuda.get_rng_state())


def test_audit_leaves_numpy_and_python_rng_as_found():
    model = GlobalDraws().eval()
    images, labels = _batch(Tiny())
    before = _rng_states()
    audit(model, (images, labels), quick=True)
    assert _rng_same(before)


def test_evaluate_with_an_in_memory_model_and_fgsm_leaves_the_global_rng_as_found(tmp_path):
    from gradconceal.evaluation.api import evaluate

    spec = {"models": ["mine"], "defenses": ["none"], "data": {"source": "fashion-mnist", "n": 4},
            "attacks": [{"label": "FGSM", "attack": "fgsm", "norm": "linf", "eps": "8/255"}],
            "batch_size": 4, "device": "cpu", "seed": 1, "audit": False, "gallery": 0}
    model = _fmnist_cnn()
    _fmnist(4)
    before = _rng_states()
    evaluate(spec, tmp_path, quiet=True, plots=False, models={"mine": model})
    assert _rng_same(before)


def test_evaluate_with_a_zoo_model_leaves_the_global_rng_as_found(tmp_path):
    from gradconceal.evaluation.api import evaluate

    spec = {"models": ["fmnist-cnn"], "defenses": ["none"], "data": {"source": "fashion-mnist", "n": 4},
            "attacks": [{"label": "FGSM", "attack": "fgsm", "norm": "linf", "eps": "8/255"}],
            "batch_size": 4, "device": "cpu", "seed": 1, "audit": False, "gallery": 0}
    _fmnist_cnn()
    _fmnist(4)
    before = _rng_states()
    evaluate(spec, tmp_path, quiet=True, plots=False)
    assert _rng_same(before)


# -- the same kinds through evaluate(): refused before the clean pass, or recorded and counted apart --------
def _evaluate_mine(tmp_path, model, **extra):
    from gradconceal.evaluation.api import evaluate

    spec = {"models": ["mine"], "defenses": ["none"], "data": {"source": "fashion-mnist", "n": 8},
            "attacks": [{"label": "FGSM", "attack": "fgsm", "eps": "8/255"}], "device": "cpu", "audit": False,
            "gallery": 0, **extra}
    return evaluate(spec, tmp_path / "out", quiet=True, plots=False, models={"mine": model})


def _fmnist_model():
    from gradconceal.data import load_dataset
    from gradconceal.models.zoo import load_model

    try:
        load_dataset("fashion-mnist", limit=1)
    except GradconcealError as error:
        pytest.skip(f"Fashion-MNIST not available: {error}")
    return load_model("fmnist-cnn")


@pytest.mark.parametrize("break_it, message", [
    (lambda m: [p.data.fill_(float("nan")) for p in m.parameters()][:0], r"model 'mine'.*(NaN|inf)"),
    (lambda m: None, r"model 'mine' has 4 classes|fewer|4 class"),
])
def test_evaluate_refuses_a_broken_model_before_the_clean_pass(tmp_path, break_it, message):
    model = _fmnist_model()
    if break_it(model) is None and "class" in message:
        model = nn.Sequential(model, nn.Linear(10, 4))  # a 4-logit model on 10-class data
    with pytest.raises(GradconcealError, match=message):
        _evaluate_mine(tmp_path, model)
    assert not (tmp_path / "out" / "records.jsonl").exists() or not (tmp_path / "out" / "records.jsonl").read_bytes()


@pytest.mark.parametrize("wrap, message", [
    (lambda m: _Returns(m, lambda y: (y, y)), "tuple"),
    (lambda m: m.half(), "float16"),
])
def test_evaluate_gives_one_line_for_outputs_and_dtypes_it_cannot_score(tmp_path, wrap, message):
    with pytest.raises(GradconcealError, match=message):
        _evaluate_mine(tmp_path, wrap(_fmnist_model()))


class _Returns(nn.Module):
    def __init__(self, model: nn.Module, how) -> None:
        super().__init__()
        self.model, self.how = model, how

    def forward(self, x):
        return self.how(self.model(x))


class _NanAwayFromClean(nn.Module):
    """Finite on the clean images, NaN logits once an input moves away from them (as a broken layer might)."""

    def __init__(self, model: nn.Module, clean: torch.Tensor) -> None:
        super().__init__()
        self.model, self.clean = model, clean

    def forward(self, x):
        logits = self.model(x)
        moved = (x.flatten(1)[:, None, :] - self.clean.flatten(1)[None]).abs().amax(dim=2).amin(dim=1) > 1e-6
        return torch.where(moved[:, None], torch.full_like(logits, float("nan")), logits)


def test_evaluate_records_non_finite_attacks_apart_and_never_as_robust(tmp_path):
    from gradconceal.data import load_dataset
    from gradconceal.evaluation.store import RecordStore

    model = _fmnist_model()
    data = load_dataset("fashion-mnist", limit=8)
    clean = torch.stack([data[i][0] for i in range(8)])
    results = _evaluate_mine(tmp_path, _NanAwayFromClean(model, clean))
    metrics = results.row("mine", "vanilla").attacks["FGSM"]
    assert metrics.non_finite == metrics.attacked > 0 and metrics.ar.k == 0
    records = [r for r in RecordStore(tmp_path / "out").load().values() if r.attack == "FGSM" and r.attacked]
    assert records and all(r.non_finite and not r.correct for r in records)
    assert "Non-finite outputs" in (tmp_path / "out" / "report.md").read_text()


def test_evaluate_leaves_batch_norm_statistics_and_modes_as_found(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    model.train()
    model[1].eval()  # a frozen batch norm inside a model in training mode
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _evaluate_mine(tmp_path, model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and not model[1].training and model[0].training
