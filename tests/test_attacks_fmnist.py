"""Attacks on the undefended Fashion-MNIST CNN and on GCM in front of it: strength, budgets, determinism.

Budgets are the paper's scaled to 1x28x28 (``preset("paper", (1, 28, 28))``: same per-pixel budget).
"""

import pytest
import torch
from attacks_support import fmnist_batch, fmnist_model, one_thread  # noqa: F401

from gradconceal import RandomResizePad, conceal
from gradconceal.attacks import APGD, CW, FGSM, PGD, Square, Transfer, adaptive_view, create_attack
from gradconceal.attacks.presets import preset
from gradconceal.defenses.concealment import DefendedModel, GradientConcealment


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return fmnist_model()


@pytest.fixture(scope="module")
def data():
    return fmnist_batch(128)


@pytest.fixture(scope="module")
def paper():
    return {spec.label: spec for spec in preset("paper", (1, 28, 28))}


def accuracy(model, images, labels):
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


ATTACKS = [
    ("fgsm-linf", lambda m: FGSM(m, eps=8 / 255)),
    ("fgsm-l2", lambda m: FGSM(m, norm="l2", eps=0.5)),
    ("fgsm-l1", lambda m: FGSM(m, norm="l1", eps=8.0)),
    ("pgd-linf", lambda m: PGD(m, eps=8 / 255, steps=5)),
    ("pgd-l2", lambda m: PGD(m, norm="l2", eps=0.5, steps=5)),
    ("pgd-l1-dense", lambda m: PGD(m, norm="l1", eps=8.0, steps=5, alpha=1.0)),
    ("pgd-l1-sparse", lambda m: PGD(m, norm="l1", eps=8.0, steps=5, alpha=2.0, l1_step="sparse")),
    ("apgd-linf", lambda m: APGD(m, eps=8 / 255, steps=5)),
    ("apgd-l2-dlr", lambda m: APGD(m, norm="l2", eps=0.5, steps=5, loss="dlr")),
    ("cw", lambda m: CW(m, eps=0.5, steps=10, binary_search_steps=2)),
    ("square-linf", lambda m: Square(m, eps=8 / 255, n_queries=20)),
    ("square-l2", lambda m: Square(m, norm="l2", eps=0.5, n_queries=20)),
]


@pytest.mark.parametrize("name, build", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_adversarials_stay_in_budget_and_box(model, data, name, build):
    images, labels = data[0][:32], data[1][:32]
    attack = build(model)
    result = attack.perturb(images, labels)
    adversarial = result.adversarial
    assert adversarial.shape == images.shape and adversarial.dtype == images.dtype
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    eps = attack.threat.eps
    assert (result.norms <= eps * (1 + 1e-5) + 1e-7).all()
    assert torch.allclose(result.norms, attack.threat.norms(adversarial - images))
    skipped = ~result.clean_correct
    assert torch.equal(adversarial[skipped], images[skipped])  # misclassified images are left alone
    assert not result.fooled[skipped].any()
    assert (result.forward_evals >= 1).all()
    with torch.no_grad():
        wrong = model(adversarial).argmax(1).cpu() != labels
    assert torch.equal(result.fooled, wrong & result.clean_correct)


def test_final_check_skips_images_a_deterministic_model_already_judged(model, data):
    # one clean check per image; the final image is evaluated again only where the attack's own
    # evaluations did not already show it fooled (or where the model is random)
    images, labels = data[0][:32], data[1][:32]
    result = PGD(model, eps=8 / 255, steps=6, early_stop=False).perturb(images, labels)
    attacked = result.clean_correct
    assert result.fooled.any() and (~result.fooled & attacked).any()
    assert (result.forward_evals[result.fooled] == 1).all()
    assert (result.forward_evals[~result.fooled & attacked] == 2).all()

    class Stochastic(torch.nn.Module):
        stochastic = True

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    again = PGD(Stochastic(model), eps=8 / 255, steps=6, early_stop=False).perturb(images, labels)
    assert torch.equal(again.fooled, result.fooled)
    assert (again.forward_evals[attacked] == 2).all()


def test_pgd_at_the_scaled_paper_budget(model, data, paper):
    images, labels = data
    clean = accuracy(model, images, labels)
    for label in ("PGD-Linf", "PGD-L2"):
        result = paper[label].build(model).perturb(images, labels)
        assert result.robust_accuracy < 0.6 * clean, label
    # four times the per-pixel budget: no undefended network survives
    strong = PGD(model, eps=32 / 255, steps=20, alpha=4 / 255).perturb(images, labels)
    assert strong.robust_accuracy <= 0.02


def test_larger_budgets_and_more_steps_never_do_worse(model, data):
    images, labels = data
    pgd_accuracy, fgsm_accuracy = [], []
    for eps in (2 / 255, 4 / 255, 8 / 255, 16 / 255):
        pgd_accuracy.append(PGD(model, eps=eps, steps=10).perturb(images, labels).robust_accuracy)
        fgsm_accuracy.append(FGSM(model, eps=eps).perturb(images, labels).robust_accuracy)
    assert pgd_accuracy == sorted(pgd_accuracy, reverse=True)
    assert fgsm_accuracy == sorted(fgsm_accuracy, reverse=True)
    assert all(p <= f for p, f in zip(pgd_accuracy, fgsm_accuracy))
    assert pgd_accuracy[-1] < pgd_accuracy[0] - 0.3


def test_same_seed_same_images_other_seed_other_images(model, data):
    images, labels = data[0][:32], data[1][:32]
    first = PGD(model, eps=8 / 255, steps=3, seed=5).perturb(images, labels).adversarial
    again = PGD(model, eps=8 / 255, steps=3, seed=5).perturb(images, labels).adversarial
    other = PGD(model, eps=8 / 255, steps=3, seed=6).perturb(images, labels).adversarial
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("build", [
    lambda m: FGSM(m, eps=4 / 255),
    lambda m: PGD(m, eps=4 / 255, steps=6, random_start=False),
    lambda m: CW(m, eps=0.4, steps=8, binary_search_steps=2),
], ids=["fgsm", "pgd", "cw"])
def test_deterministic_attacks_decide_alike_at_any_batch_size(model, data, build):
    images, labels = data[0][:48], data[1][:48]
    attack = build(model)
    assert attack.deterministic
    whole = attack.perturb(images, labels).fooled
    pieces = torch.cat([attack.perturb(images[i:i + 16], labels[i:i + 16]).fooled for i in range(0, 48, 16)])
    assert torch.equal(whole, pieces)


def test_sample_seeds_make_random_attacks_batch_independent(model, data):
    images, labels = data[0][:24], data[1][:24]
    seeds = list(range(100, 124))
    for attack in (PGD(model, eps=8 / 255, steps=4), Square(model, eps=8 / 255, n_queries=15)):
        whole = attack.perturb(images, labels, sample_seeds=seeds)
        halves = [attack.perturb(images[i:i + 12], labels[i:i + 12], sample_seeds=seeds[i:i + 12]) for i in (0, 12)]
        assert torch.equal(whole.fooled, torch.cat([h.fooled for h in halves]))
        assert torch.allclose(whole.adversarial, torch.cat([h.adversarial for h in halves]), atol=1e-6)


def test_early_stop_drops_fooled_samples_and_saves_gradients(model, data):
    images, labels = data
    eager = PGD(model, eps=16 / 255, steps=12, check_every=3).perturb(images, labels)
    full = PGD(model, eps=16 / 255, steps=12, early_stop=False).perturb(images, labels)
    attacked = eager.clean_correct
    assert (full.grad_evals[attacked] == 12).all() and not full.stopped_early.any()
    assert eager.stopped_early.sum() > 10
    assert (eager.grad_evals[eager.stopped_early] < 12).all()
    assert (eager.grad_evals[eager.stopped_early] % 3 == 0).all()  # dropped only at checks
    assert eager.fooled[eager.stopped_early].all()
    assert eager.grad_evals.sum() < 0.7 * full.grad_evals.sum()
    assert abs(int(eager.fooled.sum()) - int(full.fooled.sum())) <= 2


def test_attacks_leave_model_state_and_global_rng_alone(model, data):
    images, labels = data[0][:16], data[1][:16]
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    try:
        flags = [p.requires_grad for p in model.parameters()]
        weights = [p.detach().clone() for p in model.parameters()]
        rng = torch.get_rng_state()
        for attack in (PGD(model, eps=8 / 255, steps=2), APGD(model, eps=8 / 255, steps=3),
                       Square(model, eps=8 / 255, n_queries=5), CW(model, eps=0.5, steps=2, binary_search_steps=1)):
            attack.perturb(images, labels)
        assert torch.equal(torch.get_rng_state(), rng)
        assert not model.training and all(not m.training for m in model.modules())
        assert [p.requires_grad for p in model.parameters()] == flags
        assert all(p.grad is None for p in model.parameters())
        assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights))
    finally:
        frozen.requires_grad_(True)


def test_pgd_under_bf16_autocast(model, data):
    images, labels = data[0][:64], data[1][:64]
    reference = PGD(model, eps=8 / 255, steps=5).perturb(images, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = PGD(model, eps=8 / 255, steps=5).perturb(images, labels)
    assert result.adversarial.dtype == torch.float32
    assert (result.norms <= 8 / 255 * (1 + 1e-5)).all()
    assert abs(result.robust_accuracy - reference.robust_accuracy) <= 0.1


def test_bpda_view_keeps_the_forward_and_gives_the_undefended_gradient(model, data):
    images, labels = data[0][:8], data[1][:8]
    defended = conceal(model)
    view = adaptive_view(defended)
    assert view.concealment_layers == [defended.concealment] and view.random_layers == []
    with torch.no_grad():
        assert torch.equal(view(images), defended(images))

    def gradient(m):
        x = images.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(m(x), labels).backward()
        return x.grad

    concealed, bpda, plain = gradient(defended), gradient(view), gradient(model)
    assert concealed.abs().max() > 1e6  # the concealment at work
    assert torch.allclose(bpda, plain, rtol=1e-3, atol=1e-9)
    assert not defended.concealment._forward_hooks  # the view left no hook behind


def test_gcm_stops_plain_pgd_not_bpda_square_or_transfer(model, data):
    images, labels = data
    seeds = list(range(len(labels)))
    defended = conceal(model)
    vanilla = PGD(model, eps=8 / 255, steps=10).perturb(images, labels, seeds).robust_accuracy
    plain = PGD(defended, eps=8 / 255, steps=10).perturb(images, labels, seeds).robust_accuracy
    bpda = PGD(adaptive_view(defended), eps=8 / 255, steps=10).perturb(images, labels, seeds).robust_accuracy
    transfer = Transfer(defended, eps=8 / 255, steps=10).perturb(images, labels, seeds).robust_accuracy
    clean = accuracy(defended, images, labels)
    assert plain > vanilla + 0.25  # the paper's effect: gradients are useless
    assert abs(bpda - vanilla) <= 0.02 and abs(transfer - vanilla) <= 0.02
    square = Square(defended, eps=16 / 255, n_queries=30).perturb(images[:48], labels[:48], seeds[:48])
    assert square.robust_accuracy < accuracy(defended, images[:48], labels[:48]) - 0.2
    assert clean > 0.8


def test_eot_view_finds_random_layers_and_averages_draws(model, data):
    images, labels = data[0][:16], data[1][:16]
    randomized = DefendedModel(model, [RandomResizePad(28, 24, seed=0), GradientConcealment()])
    view = adaptive_view(randomized, bpda=True, eot_samples=4)
    assert len(view.random_layers) == 1 and len(view.concealment_layers) == 1
    result = PGD(view, eps=8 / 255, steps=3, early_stop=False).perturb(images, labels)
    assert (result.grad_evals[result.clean_correct] == 12).all()
    spec = next(s for s in preset("adaptive", (1, 28, 28)) if s.view == "bpda+eot")
    assert spec.applies_to(randomized) and not spec.applies_to(conceal(model))
    assert create_attack("pgd", view, eps=0.1).threat.eps == 0.1


def test_sparse_l1_step_is_stronger_than_the_papers_dense_step(model, data, paper):
    images, labels = data
    dense = paper["PGD-L1"].build(model).perturb(images, labels).robust_accuracy
    sparse_spec = {s.label: s for s in preset("paper-l1-sparse", (1, 28, 28))}["PGD-L1 (sparse)"]
    sparse = sparse_spec.build(model).perturb(images, labels).robust_accuracy
    assert sparse < dense - 0.1


def test_targeted_attack_reaches_the_given_targets(model, data):
    images, labels = data[0][:64], data[1][:64]
    targets = (labels + 1) % 10
    result = PGD(model, eps=32 / 255, steps=20, alpha=4 / 255, targeted=True).perturb(
        images, labels, target_labels=targets)
    with torch.no_grad():
        reached = model(result.adversarial).argmax(1) == targets
    assert torch.equal(result.fooled, reached & result.clean_correct)
    assert result.fooled.float().mean() > 0.6
    assert torch.equal(result.targets, targets)


def test_apgd_is_at_least_as_strong_as_pgd(model, data):
    images, labels = data
    pgd = PGD(model, eps=6 / 255, steps=20, alpha=1 / 255).perturb(images, labels).robust_accuracy
    apgd = APGD(model, eps=6 / 255, steps=20).perturb(images, labels).robust_accuracy
    apgd_t = create_attack("apgd-t", model, eps=6 / 255, steps=20, n_target_classes=3).perturb(images, labels)
    assert apgd <= pgd + 0.02
    assert apgd_t.robust_accuracy <= pgd + 0.02


def test_eot_steps_along_the_mean_of_the_per_draw_loss_gradients(model, data):
    images, labels = data[0][:16], data[1][:16]

    def randomized():
        return DefendedModel(model, [RandomResizePad(28, 22, seed=3)])

    result = FGSM(adaptive_view(randomized(), bpda=False, eot_samples=4), eps=8 / 255).perturb(images, labels)
    replay = randomized()
    with torch.no_grad():
        correct = replay(images).argmax(1) == labels  # the attack's clean check uses the first draw
    x = images[correct].clone().requires_grad_(True)
    grads = []
    for _ in range(4):  # then one draw per EOT sample
        loss = torch.nn.functional.cross_entropy(replay(x), labels[correct], reduction="sum")
        grads.append(torch.autograd.grad(loss, x)[0])
    expected = (images[correct] + 8 / 255 * torch.stack(grads).mean(0).sign()).clamp(0, 1)
    assert torch.equal(result.clean_correct, correct)
    same = (result.adversarial[correct] - expected).abs() < 1e-6
    assert same.float().mean() > 0.999
    assert (result.grad_evals[correct] == 4).all()


def test_bpda_layers_make_any_input_layer_straight_through(model, data):
    images, labels = data[0][:8], data[1][:8]
    rounding = torch.nn.Hardtanh(0.0, 1.0)  # stands for a user's input layer; its gradient is cut outside [0, 1]
    shifted = DefendedModel(model, [torch.nn.Identity(), rounding])
    x = (images * 1.5).clamp(0, 1).requires_grad_(True)  # plenty of pixels at exactly 1: hardtanh's edge
    view = adaptive_view(shifted, bpda=False, bpda_layers=[rounding])
    assert view.straight_through_layers == [rounding]
    torch.nn.functional.cross_entropy(view(x), labels).backward()
    through, x.grad = x.grad, None
    torch.nn.functional.cross_entropy(model(x), labels).backward()
    assert torch.allclose(through, x.grad)
