"""Find the stage that shatters the gradient, name the remedy, and test the remedy with one cheap step.

The gradient is compared at the input of every stage (before and after each input-side module): the
culprit is the stage whose output side still has a healthy gradient (finite, non-zero, stable under tiny
noise) while its input side does not. The remedy follows from what the stage is: a deterministic layer is
differentiated as the identity (BPDA), a random one is averaged over its randomness (EOT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor, nn

from gradconceal.masking.gradients import STABILITY_MIN_COSINE
from gradconceal.masking.probes import StagedPass, cosine, median, norms
from gradconceal.masking.result import (
    CONFIRMS,
    FLAG,
    MIN_EXTRA_IMAGES,
    MIN_EXTRA_SHARE,
    PASS,
    CheckResult,
    significant,
    skipped,
)
from gradconceal.masking.table import fmt
from gradconceal.masking.target import Stage
from gradconceal.defenses.concealment import GradientConcealment

# A stage that multiplies the gradient's size by more than this is exploding it (GCM: ~1e12).
AMPLIFICATION = 1e3


@dataclass
class Boundary:
    """The gradient at the input of one stage: its median size and its stability under tiny noise."""

    stage: str
    norm: float
    stability: float

    @property
    def problem(self) -> Optional[str]:
        """What is wrong with the gradient here (None when it looks like a real slope)."""
        if not math.isfinite(self.norm):
            return "not finite"
        if self.norm == 0:
            return "zero"
        if math.isnan(self.stability) or self.stability < STABILITY_MIN_COSINE:
            return "unstable"
        return None


@dataclass
class Localization:
    """Which stage breaks the gradient, how, and which stages are random."""

    boundaries: List[Boundary]
    index: Optional[int] = None
    label: Optional[str] = None
    how: str = ""
    random_stages: List[str] = field(default_factory=list)
    culprit_random: bool = False
    module: Optional[nn.Module] = None

    @property
    def found(self) -> bool:
        return self.index is not None


def stage_randomness(stages: Sequence[Stage], x: Tensor) -> List[bool]:
    """For each input-side stage, whether two calls on the same input differ (the last stage is not run)."""
    flags = []
    h = x
    with torch.no_grad():
        for stage in stages[:-1]:
            first, second = stage.module(h), stage.module(h)
            flags.append(first.shape != second.shape or not torch.equal(first, second))
            h = first
    return flags + [False]


def locate(stages: Sequence[Stage], clean: StagedPass, noisy: StagedPass, random_flags: Sequence[bool]) -> Localization:
    """Scan from the output towards the input for the first stage whose input-side gradient breaks."""
    boundaries = [
        Boundary(stage.name, median(norms(g)), median(cosine(g, g_noisy)))
        for stage, g, g_noisy in zip(stages, clean.grads, noisy.grads)
    ]
    result = Localization(boundaries, random_stages=[s.label for s, r in zip(stages, random_flags) if r])
    for b in range(len(stages) - 1, -1, -1):
        here = boundaries[b]
        after = boundaries[b + 1] if b + 1 < len(boundaries) else None
        after_ok = after is None or after.problem is None
        if not after_ok:
            continue
        amplified = after is not None and after.norm > 0 and here.norm / after.norm > AMPLIFICATION
        if here.problem is None and not amplified:
            continue
        how = {"not finite": "makes it non-finite", "zero": "zeroes it", "unstable": "makes it decorrelate under tiny noise"}
        result.index, result.label, result.module = b, stages[b].label, stages[b].module
        # ``after`` is None at the last stage, where only a problem of its own (never amplification) is found.
        amplification = f"amplifies it {fmt(here.norm / after.norm)}x" if amplified and after is not None else ""
        result.how = how[here.problem] if here.problem is not None else amplification
        if here.problem == "unstable" and amplified:
            result.how = f"{amplification} and makes it decorrelate under tiny noise"
        result.culprit_random = bool(random_flags[b])
        break
    return result


def remedy_for(found: Localization, layer: Optional[nn.Module] = None) -> str:
    """The adaptive view that bypasses what was found (BPDA for a deterministic layer, EOT for randomness)."""
    parts = []
    if found.found and not found.culprit_random:
        if isinstance(layer, GradientConcealment) or layer is None:
            how = "adaptive_view(model, bpda=True)"
        else:
            how = "adaptive_view(model, bpda=True, bpda_layers=[layer]) from gradconceal.attacks"
        parts.append(f"BPDA: differentiate {found.label} as the identity ({how})")
    random = list(found.random_stages)
    if random:
        parts.append(f"EOT: average gradients over the randomness of {', '.join(random)} (adaptive_view(model, eot_samples=N))")
    return "; ".join(parts)


def check_shattering_layer(found: Localization) -> CheckResult:
    """The localisation as a check: flagged when some stage breaks a gradient that is healthy after it."""
    measured = {
        "layer": found.label,
        "how": found.how or None,
        "boundaries": [{"stage": b.stage, "norm": b.norm, "stability": b.stability} for b in found.boundaries],
        "random_stages": found.random_stages,
    }
    threshold = f"healthy after a stage, broken before it (zero, non-finite, cos < {STABILITY_MIN_COSINE:g}, or >{AMPLIFICATION:g}x)"
    if found.index is None:
        return CheckResult("shattering_layer", "layer that shatters the gradient", PASS, measured,
                           f"{len(found.boundaries)} stages, none breaks it", threshold,
                           "no stage changes the gradient's character")
    b = found.boundaries[found.index]
    after = found.boundaries[found.index + 1] if found.index + 1 < len(found.boundaries) else None
    summary = f"{found.label}: cos {fmt(after.stability if after else 1.0)} -> {fmt(b.stability)}, norm {fmt(after.norm if after else float('nan'))} -> {fmt(b.norm)}"
    return CheckResult("shattering_layer", "layer that shatters the gradient", FLAG, measured, summary, threshold,
                       f"{found.label} {found.how}; remedy: {remedy_for(found, found.module)}")


def bpda_gradient(joint: StagedPass, index: int, size: int) -> Optional[Tensor]:
    """Pixel gradient of the first ``size`` samples with stage ``index`` differentiated as the identity.

    None when the stage changes the shape of its input. ``joint`` must come from
    ``staged_pass(..., keep_graph=True)``.
    """
    after = joint.grads[index + 1] if index + 1 < len(joint.grads) else None
    if after is None or after.shape != joint.inputs[index].shape:
        return None
    if index == 0:
        return after[:size]
    (grad,) = torch.autograd.grad(joint.inputs[index], joint.inputs[0], grad_outputs=after, retain_graph=True)
    return grad.detach()[:size]


def check_bpda_probe(
    forward: Callable[[Tensor], Tensor],
    x: Tensor,
    labels: Tensor,
    clean_logits: Tensor,
    plain_grad: Tensor,
    bpda_grad: Optional[Tensor],
    found: Localization,
    eps: float,
) -> CheckResult:
    """One FGSM step along the plain gradient and one along the BPDA gradient: does BPDA fool more images?"""
    title = "BPDA probe (one FGSM step)"
    threshold = f"BPDA fools < max({MIN_EXTRA_IMAGES}, {MIN_EXTRA_SHARE:.0%} of correct) more images than plain"
    if not found.found:
        return skipped("bpda_probe", title, "no layer shatters the gradient: nothing to bypass", threshold, CONFIRMS)
    if found.culprit_random:
        return skipped("bpda_probe", title, f"{found.label} is random: its remedy is EOT, tested by the full audit",
                       threshold, CONFIRMS)
    if bpda_grad is None:
        return skipped("bpda_probe", title, f"{found.label} changes the input's shape: identity BPDA does not apply",
                       threshold, CONFIRMS)
    steps = torch.cat([torch.sign(torch.nan_to_num(plain_grad)), torch.sign(torch.nan_to_num(bpda_grad))])
    with torch.no_grad():
        plain_pred, bpda_pred = forward((x.repeat(2, 1, 1, 1) + eps * steps).clamp(0, 1)).argmax(dim=1).split(x.shape[0])
    clean_pred = clean_logits.argmax(dim=1)
    correct = clean_pred == labels
    plain_fooled = correct & (plain_pred != labels)
    bpda_fooled = correct & (bpda_pred != labels)
    extra = int((bpda_fooled & ~plain_fooled).sum())
    n_correct = int(correct.sum())
    measured = {"eps": eps, "correct": n_correct, "plain_fooled": int(plain_fooled.sum()),
                "bpda_fooled": int(bpda_fooled.sum()), "extra": extra}
    summary = f"fooled {int(plain_fooled.sum())}/{n_correct} plain vs {int(bpda_fooled.sum())}/{n_correct} BPDA (eps {fmt(eps)})"
    if n_correct == 0:
        return skipped("bpda_probe", title, "no image is classified correctly", threshold, CONFIRMS)
    if significant(extra, n_correct):
        return CheckResult("bpda_probe", title, FLAG, measured, summary, threshold,
                           "one BPDA step beats the plain gradient: the robustness is masking", severity=CONFIRMS)
    return CheckResult("bpda_probe", title, PASS, measured, summary, threshold,
                       "bypassing the layer does not help the attacker", severity=CONFIRMS)
