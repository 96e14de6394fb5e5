"""Named attack protocols: the paper's, its sparse-L1 variant, the adaptive one and an AutoAttack-like one.

``preset("paper", image_size=(3, 224, 224))`` returns ``AttackPlan``s; ``plan.build(model)`` makes the
attack on the right view of the model. Budgets are given for 3x224x224 ImageNet images (the paper's)
and scaled to other sizes so the *per-pixel* budget stays the same: Linf unchanged, L2 times
``sqrt(d / 150528)``, L1 times ``d / 150528`` (d = C*H*W); step sizes scale with their budget.

Where the numbers come from (docs/attacks.md has the full table):

* Budgets: the paper's Table (Pei et al. 2022) uses RobustART's "large" budgets on [0, 1] pixels:
  FGSM and PGD Linf 8/255, PGD-L2 8.0, PGD-L1 1600, C&W-L2 8.0.
* PGD-Linf / PGD-L2: RobustART's foolbox calls, ``LinfPGD``/``L2PGD(rel_stepsize=3/40, steps=20)``,
  foolbox's default random start.
* PGD-L1: RobustART's IBM-ART call, ``ProjectedGradientDescent(norm=1, eps_step=1.5 * eps / 20,
  max_iter=20, num_random_init=1)``: step 120 = 3/40 of 1600.
* C&W-L2: the paper gives no settings; ours are binary search 5 x 100 Adam steps, lr 0.01, c0 = 0.1,
  kappa 0, success only inside the L2 budget (see ``CW``).
* adaptive: a BPDA version of each paper attack, BPDA+EOT PGD-Linf, BPDA APGD-DLR, Square 1000, transfer PGD (PGD
  and APGD start at the clean image, restarts at a radius uniform in [0, eps]: ``start="clean-first"``; the sparse
  PGD-L1 runs 10 times, see ``SPARSE_L1_RESTARTS``), then
  AutoAttack's standard ensemble (Croce & Hein 2020: APGD-CE, APGD-T over 9 target classes, FAB-T over 9, Square
  5000 queries) at the paper's Linf and L2 budgets through the attacker's view (BPDA), each norm a cascade in
  AutoAttack's order, so each attack sees only the images still robust; on a model with random layers the
  cascade goes on with AutoAttack's "rand" flavour (APGD-CE and APGD-DLR, EOT over 20 draws per gradient).
* autoattack-like: AutoAttack's "standard" version (Croce & Hein 2020): APGD-CE 100 steps, APGD-T 100 steps
  over 9 target classes, Square 5000 queries with p_init 0.8; FAB-T is left out. Linf 4/255 for
  ImageNet-sized inputs (RobustBench's ImageNet threat model), 8/255 for small images (its CIFAR one).
"""

from __future__ import annotations

import math
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from gradconceal.attacks.plan import AttackPlan, group_of
from gradconceal.errors import GradconcealError, suggest

REFERENCE_SIZE: Tuple[int, int, int] = (3, 224, 224)
PRESETS: Tuple[str, ...] = ("paper", "paper-l1-sparse", "adaptive", "autoattack-like")
EOT_SAMPLES = 10  # draws per gradient in the adaptive preset's EOT attack (as in Athalye et al.'s EOT demos)
ENSEMBLE_EOT_SAMPLES = 20  # AutoAttack's "rand" version: 20 draws per gradient
# Runs of the adaptive preset's sparse BPDA PGD-L1: the clean image, then random restarts on the images still robust.
# The sparse step moves the top 1 % of the gradient's coordinates, which says little where the loss is flat at the
# clean image, and 20 such steps are far from converged: on the FGSM-regularised Fashion-MNIST CNN, AR 52.2 % with
# the clean start alone, 47.6 % with one random start, 46.3 / 42.3 / 40.0 % with 2 / 5 / 10 runs; on the plain CNN
# 19.1 / 17.5 / 14.7 / 13.3 % (docs/attacks.md, docs/results/l1-starts.toml). The restarts attack only the images
# still robust: on the Fashion-MNIST models the ten runs take 1 to 2 % of the preset's CPU time. The L2 and Linf BPDA PGD gain
# at most 0.1 point from a restart there and keep one run.
SPARSE_L1_RESTARTS = 10
ENSEMBLE_PREFIX = "AA"  # labels of the adaptive preset's AutoAttack ensemble: 'AA APGD-CE-Linf', ...


def _plan(origin: str, label: str, attack: str, settings: Mapping[str, Any], view: str = "plain",
          cascade: Optional[str] = None) -> AttackPlan:
    """A preset's attack, grouped by what its attacker sees (``group_of``)."""
    return AttackPlan(label, attack, settings, view=view, group=group_of(attack, view), origin=origin, cascade=cascade)


def _scaled(value: float, norm: str, image_size: Sequence[int]) -> float:
    """``value`` (a budget or step for 3x224x224 images) for ``image_size`` at the same per-pixel budget."""
    ratio = math.prod(image_size) / math.prod(REFERENCE_SIZE)
    if norm == "linf":
        return value
    return value * (math.sqrt(ratio) if norm == "l2" else ratio)


def _budget(value: float, norm: str, image_size: Sequence[int]) -> float:
    """An L2/L1 number of the paper (budget or step) for ``image_size``, rounded to 6 significant digits."""
    if tuple(image_size) == REFERENCE_SIZE:
        return value
    return float(f"{_scaled(value, norm, image_size):.6g}")


def _paper(image_size: Sequence[int], sparse_l1: bool) -> List[AttackPlan]:
    size = tuple(image_size)
    origin = "paper-l1-sparse" if sparse_l1 else "paper"
    l1_eps, l2_eps = _budget(1600.0, "l1", size), _budget(8.0, "l2", size)
    l1_step = "sparse" if sparse_l1 else "dense"
    return [
        _plan(origin, "FGSM", "fgsm", {"norm": "linf", "eps": "8/255"}),
        _plan(origin, "PGD-L1 (sparse)" if sparse_l1 else "PGD-L1", "pgd",
                   {"norm": "l1", "eps": l1_eps, "steps": 20, "alpha": _budget(120.0, "l1", size),
                    "random_start": True, "l1_step": l1_step}),
        _plan(origin, "PGD-L2", "pgd", {"norm": "l2", "eps": l2_eps, "steps": 20,
                                        "alpha": _budget(0.6, "l2", size), "random_start": True}),
        _plan(origin, "PGD-Linf", "pgd", {"norm": "linf", "eps": "8/255", "steps": 20, "alpha": "0.6/255",
                                          "random_start": True}),
        _plan(origin, "C&W-L2", "cw", {"eps": l2_eps, "steps": 100, "binary_search_steps": 5, "lr": 0.01,
                                       "initial_const": 0.1, "kappa": 0.0}),
    ]


def _clean_first(settings: Mapping[str, Any]) -> dict:
    """PGD settings of the paper with the start that never weakens an attack (the first run at the clean image)."""
    return {**settings, "start": "clean-first"}


def _ensemble(image_size: Sequence[int], norm: str) -> List[AttackPlan]:
    """AutoAttack's standard ensemble at the paper's ``norm`` budget, as one cascade through BPDA, then its
    "rand" flavour (EOT over 20 draws), which applies only to models with random layers."""
    eps: Any = "8/255" if norm == "linf" else _budget(8.0, "l2", image_size)
    tag = norm.capitalize()
    cascade, origin = f"AutoAttack-{tag}", "adaptive"
    budget = {"norm": norm, "eps": eps}
    apgd = {**budget, "steps": 100, "restarts": 1, "start": "clean-first"}
    return [
        _plan(origin, f"{ENSEMBLE_PREFIX} APGD-CE-{tag}", "apgd", {**apgd, "loss": "ce"}, "bpda", cascade),
        _plan(origin, f"{ENSEMBLE_PREFIX} APGD-T-{tag}", "apgd", {**apgd, "loss": "dlr", "targeted": True,
                                                                 "n_target_classes": 9}, "bpda", cascade),
        _plan(origin, f"{ENSEMBLE_PREFIX} FAB-T-{tag}", "fab", {**budget, "steps": 100, "restarts": 1, "targeted": True,
                                                               "n_target_classes": 9}, "bpda", cascade),
        _plan(origin, f"{ENSEMBLE_PREFIX} Square-{tag}", "square", {**budget, "n_queries": 5000, "p_init": 0.8},
              "plain", cascade),
        _plan(origin, f"{ENSEMBLE_PREFIX}+EOT APGD-CE-{tag}", "apgd",
              {**apgd, "loss": "ce", "eot_samples": ENSEMBLE_EOT_SAMPLES}, "bpda+eot", cascade),
        _plan(origin, f"{ENSEMBLE_PREFIX}+EOT APGD-DLR-{tag}", "apgd",
              {**apgd, "loss": "dlr", "eot_samples": ENSEMBLE_EOT_SAMPLES}, "bpda+eot", cascade),
    ]


def _bpda_settings(plan: AttackPlan) -> dict:
    """The adaptive preset's settings for the BPDA version of a paper attack: PGD starts at the clean image; the
    sparse PGD-L1 adds random restarts (``SPARSE_L1_RESTARTS`` runs in all)."""
    if plan.attack != "pgd":
        return dict(plan.settings)
    settings = _clean_first(plan.settings)
    if settings.get("l1_step") == "sparse":
        settings["restarts"] = SPARSE_L1_RESTARTS
    return settings


def _adaptive(image_size: Sequence[int]) -> List[AttackPlan]:
    paper = {plan.label: plan for plan in _paper(image_size, sparse_l1=True)}
    origin = "adaptive"
    plans = [_plan(origin, f"BPDA {label}", plan.attack, _bpda_settings(plan), view="bpda")
             for label, plan in paper.items()]
    pgd_linf = _clean_first(paper["PGD-Linf"].settings)
    plans.append(_plan(origin, "BPDA+EOT PGD-Linf", "pgd", {**pgd_linf, "eot_samples": EOT_SAMPLES}, view="bpda+eot"))
    plans.append(_plan(origin, "BPDA APGD-DLR-Linf", "apgd", {"norm": "linf", "eps": "8/255", "steps": 50, "loss": "dlr",
                                                             "restarts": 1, "start": "clean-first"}, view="bpda"))
    plans.append(_plan(origin, "Square-Linf", "square", {"norm": "linf", "eps": "8/255", "n_queries": 1000,
                                                         "p_init": 0.8}))
    plans.append(_plan(origin, "Transfer PGD-Linf", "pgd", pgd_linf, view="transfer"))
    return plans + _ensemble(image_size, "linf") + _ensemble(image_size, "l2")


def _autoattack_like(image_size: Sequence[int]) -> List[AttackPlan]:
    eps = "4/255" if min(image_size[1:]) >= 128 else "8/255"
    origin = "autoattack-like"
    return [
        _plan(origin, "APGD-CE", "apgd", {"norm": "linf", "eps": eps, "steps": 100, "loss": "ce", "restarts": 1}),
        _plan(origin, "APGD-T", "apgd", {"norm": "linf", "eps": eps, "steps": 100, "loss": "dlr", "targeted": True,
                                         "n_target_classes": 9, "restarts": 1}),
        _plan(origin, "Square", "square", {"norm": "linf", "eps": eps, "n_queries": 5000, "p_init": 0.8}),
    ]


def preset(name: str, image_size: Sequence[int] = REFERENCE_SIZE) -> List[AttackPlan]:
    """The attacks of protocol ``name`` for images of ``image_size`` (C, H, W)."""
    try:
        size = tuple(int(v) for v in image_size)
    except (TypeError, ValueError):
        raise GradconcealError(f"image_size must be (C, H, W), got {image_size!r}") from None
    if len(size) != 3 or min(size) < 1 or any(int(v) != v for v in image_size):
        raise GradconcealError(f"image_size must be three positive integers (C, H, W), got {image_size!r}")
    key = name.strip().lower() if isinstance(name, str) else None
    if key == "paper":
        return _paper(size, sparse_l1=False)
    if key == "paper-l1-sparse":
        return _paper(size, sparse_l1=True)
    if key == "adaptive":
        return _adaptive(size)
    if key == "autoattack-like":
        return _autoattack_like(size)
    raise GradconcealError(f"unknown preset {name!r}{suggest(str(name), PRESETS)}; choose from {list(PRESETS)}")


def list_presets() -> List[str]:
    """The preset names ``preset`` accepts."""
    return list(PRESETS)
