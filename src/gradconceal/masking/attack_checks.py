"""The published attack-based checks (Athalye et al. 2018; Carlini et al. 2019; Pintor et al. 2022).

White-box first: FGSM and PGD with plain autograd on every image, and PGD over an eps sweep. Then the
attacks that must not win where white-box lost (black-box Square, transfer from the undefended model,
the adaptive BPDA/EOT view, random noise) run only on the images white-box left standing: any image they
fool is one the gradient attack should have found. Each image has its own seed, so batching does not
change the outcome.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradconceal.attacks import FGSM, PGD, Attack, Square, Transfer
from gradconceal.masking.localize import Localization
from gradconceal.masking.probes import median
from gradconceal.masking.result import CONFIRMS, FLAG, PASS, CheckResult, significant
from gradconceal.masking.table import fmt
from gradconceal.masking.target import AuditTarget
from gradconceal.masking.views import attacker_view, view_name

# PGD of the audit: enough steps to beat FGSM on any honest model, few enough for a CPU.
PGD_STEPS = 10
# The eps sweep, as multiples of the audit's eps; 1.0 (the whole [0, 1] box) is added as "unbounded".
SWEEP_FACTORS = (0.25, 4.0)
# At the unbounded budget an attack can paint any image, so at most this share may survive it.
UNBOUNDED_MAX_ROBUST = 0.1
# Square's query budget and the EOT draws, for ImageNet-sized and for small images.
SQUARE_QUERIES = {"large": 200, "small": 500}
EOT_SAMPLES = {"large": 4, "small": 8}
NOISE_DRAWS = {"large": 4, "small": 16}
DEFAULT_BATCH = {"large": 16, "small": 128}


@dataclass
class Outcome:
    """Per-image results of one attack (CPU tensors): clean correct, fooled, the adversarial images, and
    whether the model's logits or gradients were NaN/inf for the image during the attack."""

    clean_correct: Tensor
    fooled: Tensor
    adversarial: Tensor
    non_finite: Tensor = None  # type: ignore[assignment]  # the default None never outlives __post_init__

    def __post_init__(self) -> None:
        if self.non_finite is None:
            self.non_finite = torch.zeros_like(self.fooled, dtype=torch.bool)

    @property
    def robust(self) -> Tensor:
        """Correct, not fooled, and finite throughout: a NaN or inf never counts as robustness."""
        return self.clean_correct & ~self.fooled & ~self.non_finite

    @property
    def standing(self) -> Tensor:
        """Correct and not fooled: the images the attack failed on (non-finite ones included), which the
        diagnostic checks compare across attacks; the ``non_finite`` check names the non-finite ones."""
        return self.clean_correct & ~self.fooled


def run_attack_checks(
    target: AuditTarget,
    images: Tensor,
    labels: Tensor,
    found: Localization,
    *,
    eps: float,
    seed: int,
    batch_size: Optional[int] = None,
) -> List[CheckResult]:
    """Iterative vs single-step, eps sweep, black-box, transfer, adaptive, random noise and loss progress."""
    size = "large" if images[0].numel() >= 100_000 else "small"
    batch = batch_size or DEFAULT_BATCH[size]
    seeds = [seed * 1_000_003 + i for i in range(images.shape[0])]
    model = target.model
    alpha = eps / 4

    def attack(make: Callable[[float], Attack], subset: Optional[Tensor] = None, budget: float = eps) -> Outcome:
        return _run(make(budget), images, labels, seeds, batch, subset)

    checks: List[CheckResult] = []
    outcomes: Dict[str, Outcome] = {}
    started = time.perf_counter()
    fgsm = attack(lambda e: FGSM(model, eps=e, seed=seed))
    pgd = attack(lambda e: PGD(model, eps=e, steps=PGD_STEPS, alpha=e / 4, seed=seed, check_every=1))
    checks.append(_iterative_vs_single(fgsm, pgd, time.perf_counter() - started))
    outcomes.update({"FGSM": fgsm, f"PGD-{PGD_STEPS}": pgd})

    started = time.perf_counter()
    sweep: Dict[float, Optional[Outcome]] = {eps: pgd}
    for budget in sorted({min(1.0, eps * factor) for factor in SWEEP_FACTORS} | {1.0}):
        if budget in sweep:
            continue
        if budget < eps and not bool(pgd.standing.any()):
            sweep[budget] = None  # nothing stands at eps, so a smaller budget cannot break monotonicity
            continue
        outcome = attack(lambda e: PGD(model, eps=e, steps=PGD_STEPS, alpha=e / 4, seed=seed, check_every=1),
                         budget=budget)
        sweep[budget] = outcome
        outcomes[f"PGD-{PGD_STEPS} at {fmt(budget * 255)}/255"] = outcome
    checks.append(_eps_sweep(sweep, time.perf_counter() - started))

    standing = (pgd.standing & ~fgsm.fooled).nonzero().flatten()
    n_standing, n_correct = int(standing.numel()), int(pgd.clean_correct.sum())

    started = time.perf_counter()
    if n_standing:
        square = attack(lambda e: Square(model, eps=e, n_queries=SQUARE_QUERIES[size], seed=seed, check_every=1), standing)
        outcomes["Square"] = square
        checks.append(_beats("black_box", "black-box (Square)", square, n_standing,
                             f"{SQUARE_QUERIES[size]} queries", time.perf_counter() - started))
    else:
        checks.append(_nothing_standing("black_box", "black-box (Square)", n_correct))

    started = time.perf_counter()
    if target.reference is None:
        checks.append(CheckResult("transfer", "transfer from undefended", PASS, {}, "-", "-",
                                  "no defence: the model is its own undefended version", severity=CONFIRMS))
    elif n_standing:
        transfer = attack(lambda e: Transfer(model, attack="pgd", eps=e, steps=PGD_STEPS, alpha=e / 4, seed=seed, check_every=1), standing)
        outcomes["transfer"] = transfer
        checks.append(_beats("transfer", "transfer from undefended", transfer, n_standing,
                             "PGD on the undefended model", time.perf_counter() - started))
    else:
        checks.append(_nothing_standing("transfer", "transfer from undefended", n_correct))

    started = time.perf_counter()
    culprit = found.module if found.found and not found.culprit_random else None
    view = attacker_view(model, culprit, EOT_SAMPLES[size])
    how = view_name(model, culprit, EOT_SAMPLES[size])
    if view is None:
        checks.append(CheckResult("adaptive", "adaptive (BPDA/EOT)", PASS, {"view": how}, "-", "-",
                                  "nothing to bypass and no randomness: the adaptive view is the model itself",
                                  severity=CONFIRMS))
    elif n_standing:
        adaptive = attack(lambda e: PGD(view, eps=e, steps=PGD_STEPS, alpha=e / 4, seed=seed, check_every=1), standing)
        outcomes["adaptive"] = adaptive
        checks.append(_beats("adaptive", "adaptive (BPDA/EOT)", adaptive, n_standing, f"PGD, {how}",
                             time.perf_counter() - started))
    else:
        checks.append(_nothing_standing("adaptive", "adaptive (BPDA/EOT)", n_correct))

    started = time.perf_counter()
    noise_fooled, noise_loss, noise_non_finite = _random_noise(model, images, labels, standing, eps,
                                                               NOISE_DRAWS[size], seed, batch)
    if n_standing:
        noise = Outcome(torch.ones(n_standing, dtype=torch.bool), noise_fooled, images[standing].cpu(), noise_non_finite)
        outcomes["random noise"] = noise
        checks.append(_beats("random_noise", "random noise baseline", noise, n_standing,
                             f"{NOISE_DRAWS[size]} sign-noise draws", time.perf_counter() - started))
    else:
        checks.append(_nothing_standing("random_noise", "random noise baseline", n_correct))

    started = time.perf_counter()
    checks.append(_loss_progress(model, images, labels, pgd, standing, noise_loss, batch, time.perf_counter() - started))
    checks.append(_non_finite(outcomes, images.shape[0]))
    return checks


def _run(attack: Attack, images: Tensor, labels: Tensor, seeds: Sequence[int], batch: int,
         subset: Optional[Tensor] = None) -> Outcome:
    """Run ``attack`` over ``images`` (or the rows ``subset``) in batches, with one seed per image."""
    rows = subset.tolist() if subset is not None else list(range(images.shape[0]))
    parts = []
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        result = attack.perturb(images[chunk], labels[chunk], [seeds[i] for i in chunk])
        parts.append(result)
    return Outcome(
        torch.cat([p.clean_correct for p in parts]),
        torch.cat([p.fooled for p in parts]),
        torch.cat([p.adversarial.detach().cpu() for p in parts]),
        torch.cat([p.non_finite for p in parts]),
    )


def _iterative_vs_single(fgsm: Outcome, pgd: Outcome, seconds: float) -> CheckResult:
    """PGD must leave no more images standing than FGSM does."""
    correct = int(pgd.clean_correct.sum())
    robust_pgd, robust_fgsm = int(pgd.robust.sum()), int((fgsm.robust & pgd.clean_correct).sum())
    worse = robust_pgd - robust_fgsm
    measured = {"correct": correct, "fgsm_robust": robust_fgsm, "pgd_robust": robust_pgd, "pgd_steps": PGD_STEPS}
    summary = f"robust: FGSM {robust_fgsm}/{correct}, PGD-{PGD_STEPS} {robust_pgd}/{correct}"
    threshold = "PGD robust <= FGSM robust (+ max(2, 10%))"
    if correct and significant(worse, correct):
        return CheckResult("iterative_vs_single", "iterative vs single-step", FLAG, measured, summary, threshold,
                           "more gradient steps do worse than one: the steps follow a gradient that misleads",
                           seconds=seconds)
    return CheckResult("iterative_vs_single", "iterative vs single-step", PASS, measured, summary, threshold,
                       "iterating the gradient helps the attacker, as it should", seconds=seconds)


def _eps_sweep(sweep: Dict[float, Optional[Outcome]], seconds: float) -> CheckResult:
    """Robustness must fall as eps grows and reach about 0 at the unbounded budget."""
    ran = {b: outcome for b, outcome in sweep.items() if outcome is not None}
    budgets = sorted(ran)
    correct = int(ran[budgets[-1]].clean_correct.sum())
    robust = [int(ran[b].standing.sum()) for b in budgets]
    skipped_budgets = sorted(b for b, outcome in sweep.items() if outcome is None)
    measured = {"eps": budgets, "robust": robust, "correct": correct, "not_run": skipped_budgets}
    summary = ", ".join(f"{fmt(b * 255)}/255: {r}" for b, r in zip(budgets, robust)) + f" (of {correct})"
    if skipped_budgets:
        summary += f"; {', '.join(fmt(b * 255) + '/255' for b in skipped_budgets)} not run (none survives the audit eps)"
    threshold = f"robust never rises by max(2, 10%); at eps 1: <= {UNBOUNDED_MAX_ROBUST:.0%}"
    rises = [budgets[k + 1] for k in range(len(budgets) - 1) if significant(robust[k + 1] - robust[k], correct)]
    unbounded = robust[-1] > math.floor(UNBOUNDED_MAX_ROBUST * correct)
    if rises or unbounded:
        reason = " and ".join(([f"more budget helps the defence (at {', '.join(fmt(b * 255) + '/255' for b in rises)})"]
                               if rises else []) + (["an unbounded attack does not reach 0"] if unbounded else []))
        return CheckResult("eps_sweep", "eps sweep (PGD)", FLAG, measured, summary, threshold,
                           f"{reason}: the attack, not the model, is failing", seconds=seconds)
    return CheckResult("eps_sweep", "eps sweep (PGD)", PASS, measured, summary, threshold,
                       "robustness falls with the budget and vanishes when unbounded", seconds=seconds)


def _beats(name: str, title: str, outcome: Outcome, standing: int, detail: str, seconds: float) -> CheckResult:
    """Flag (confirmed) when ``outcome`` fools enough of the images that white-box left standing."""
    fooled = int(outcome.fooled.sum())
    measured = {"standing": standing, "fooled": fooled, "attack": detail}
    summary = f"fools {fooled}/{standing} white-box survivors ({detail})"
    threshold = "fools < max(2, 10%) of the survivors"
    if significant(fooled, standing):
        return CheckResult(name, title, FLAG, measured, summary, threshold,
                           "it finds adversarial images the gradient attack missed: the robustness is masking",
                           severity=CONFIRMS, seconds=seconds)
    return CheckResult(name, title, PASS, measured, summary, threshold,
                       "it finds nothing the gradient attack missed", severity=CONFIRMS, seconds=seconds)


def _nothing_standing(name: str, title: str, correct: int) -> CheckResult:
    """White-box fooled every correct image: no other attack can do better."""
    return CheckResult(name, title, PASS, {"standing": 0, "correct": correct}, f"0/{correct} survivors",
                       "fools < max(2, 10%) of the survivors",
                       "white-box already fools every correct image: nothing left to beat", severity=CONFIRMS)


def _random_noise(model: nn.Module, images: Tensor, labels: Tensor, rows: Tensor, eps: float, draws: int,
                  seed: int, batch: int):
    """Per standing image: fooled by any of ``draws`` random +-eps sign perturbations (finite logits only), its
    mean CE gain, and whether any draw gave NaN/inf logits."""
    if rows.numel() == 0:
        return torch.zeros(0, dtype=torch.bool), torch.zeros(0), torch.zeros(0, dtype=torch.bool)
    signs = []
    for i in rows.tolist():
        generator = torch.Generator().manual_seed(seed * 1_000_003 + i + 7)
        signs.append(torch.randint(0, 2, (draws, *images.shape[1:]), generator=generator) * 2 - 1)
    x, y = images[rows], labels[rows]
    noisy = (x.repeat_interleave(draws, dim=0) + eps * torch.cat(signs).to(x)).clamp(0, 1)
    noisy_labels = y.repeat_interleave(draws)
    with torch.no_grad():
        clean = torch.cat([F.cross_entropy(model(x[k:k + batch]), y[k:k + batch], reduction="none")
                           for k in range(0, x.shape[0], batch)])
        logits = torch.cat([model(noisy[k:k + batch]) for k in range(0, noisy.shape[0], batch)])
    finite = torch.isfinite(logits).all(dim=1)
    fooled = ((logits.argmax(dim=1) != noisy_labels) & finite).view(-1, draws).any(dim=1)
    gain = F.cross_entropy(logits, noisy_labels, reduction="none").view(-1, draws).mean(dim=1) - clean
    return fooled.cpu(), gain.cpu(), (~finite).view(-1, draws).any(dim=1).cpu()


def _loss_progress(model: nn.Module, images: Tensor, labels: Tensor, pgd: Outcome, rows: Tensor,
                   noise_gain: Tensor, batch: int, seconds: float) -> CheckResult:
    """On the images PGD could not fool, its loss gain must beat the gain of random noise of the same budget."""
    title = "loss progress (PGD vs noise)"
    threshold = "median CE gain of PGD > that of random noise"
    if rows.numel() == 0:
        return CheckResult("loss_progress", title, PASS, {"standing": 0}, "0 survivors", threshold,
                           "PGD fooled every correct image: its loss rose far enough")
    started = time.perf_counter()
    with torch.no_grad():
        x, y = images[rows], labels[rows]
        adversarial = pgd.adversarial[rows.cpu()].to(images.device)
        gains = []
        for k in range(0, x.shape[0], batch):
            clean = F.cross_entropy(model(x[k:k + batch]), y[k:k + batch], reduction="none")
            attacked = F.cross_entropy(model(adversarial[k:k + batch]), y[k:k + batch], reduction="none")
            gains.append((attacked - clean).cpu())
    pgd_gain = median(torch.cat(gains))
    noise = median(noise_gain)
    measured = {"standing": int(rows.numel()), "pgd_gain": pgd_gain, "noise_gain": noise}
    summary = f"CE gain: PGD {fmt(pgd_gain)}, noise {fmt(noise)} on {int(rows.numel())} survivors"
    seconds += time.perf_counter() - started
    if not (pgd_gain > noise):
        return CheckResult("loss_progress", title, FLAG, measured, summary, threshold,
                           "the gradient steps raise the loss no more than noise: the attack is blind",
                           seconds=seconds)
    return CheckResult("loss_progress", title, PASS, measured, summary, threshold,
                       "the attack climbs the loss faster than noise does", seconds=seconds)


def _non_finite(outcomes: Dict[str, Outcome], count: int) -> CheckResult:
    """Flag when the model's logits, loss or input gradient were NaN or infinite for any image during an attack."""
    title = "non-finite logits or gradients"
    threshold = "no NaN or inf logit, loss or input gradient during any attack"
    per_attack = {name: int(o.non_finite.sum()) for name, o in outcomes.items()}
    seen = {name: n for name, n in per_attack.items() if n}
    measured = {"images": count, "non_finite": seen}
    if not seen:
        return CheckResult("non_finite", title, PASS, measured, f"none in {len(outcomes)} attacks", threshold,
                           "every logit and gradient the attacks saw was finite")
    summary = ", ".join(f"{name} {n}" for name, n in seen.items()) + " images"
    return CheckResult("non_finite", title, FLAG, measured, summary, threshold,
                       "the model gives NaN or infinite logits or gradients under attack: gradient attacks get no "
                       "direction there, and those images are not counted robust")
