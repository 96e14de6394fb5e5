"""Gradient anomaly checks: is the input gradient plausible in size, true to the function, and stable?

Each check takes gradients already computed by ``probes.staged_pass`` (a few backward passes serve them
all) and returns a ``CheckResult``.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from gradconceal.masking.probes import cosine, flat, median, norms
from gradconceal.masking.result import FLAG, PASS, CheckResult
from gradconceal.masking.table import fmt as _fmt

# Predicted change of the logit margin for a one-grey-level (1/255 Linf) step, ||grad||_1 / 255, that a
# trained classifier can plausibly have. Logits of real classifiers span tens of units, and an 8/255 budget
# is known to suffice against undefended models, so honest values lie around 0.01..100. Above 1e4 the
# gradient promises logit swings that no forward pass shows; below 1e-6 it is, for an attacker, zero.
PLAUSIBLE_PER_GREY_LEVEL = (1e-6, 1e4)
# An input layer that leaves the prediction alone should not change the gradient's size tenfold.
NORM_RATIO_RANGE = (0.1, 10.0)
# Autograd and finite differences of the same direction must agree within this factor.
FD_AGREEMENT = 10.0
# Root-mean-square per-pixel step of the finite difference: 1/40 of a grey level, far above float32
# rounding of the pixels (6e-8) and of GCM's forward wiggle (1e-8), far below any attack budget.
FD_RMS_STEP = 1e-4
# Size of the "tiny noise" of the stability check (uniform per pixel): a quarter of a grey level.
STABILITY_NOISE = 1e-3
# Gradients at x and x + noise must keep this cosine. For GCM with amplitude a = w * epsilon the expected
# cosine is 1 / (1 + a**2 / 2): 0.67 at a = 1 (the gradient keeps its sign), below 0.5 from a = 1.42.
STABILITY_MIN_COSINE = 0.5


def check_gradient_norm(grad: Tensor, reference: Optional[Tensor] = None) -> CheckResult:
    """Input-gradient size against a plausible range and against the undefended model's."""
    per_level = norms(grad, p=1) / 255.0
    value = median(per_level)
    low, high = PLAUSIBLE_PER_GREY_LEVEL
    measured = {"per_grey_level": value, "finite_share": float(torch.isfinite(per_level).double().mean())}
    summary = f"{_fmt(value)} per grey level"
    broken = int((~torch.isfinite(per_level)).sum())
    if broken:
        summary += f", NaN or inf on {broken} of {per_level.numel()} images"
    problems = ["not finite"] if broken else []
    if not math.isfinite(value) or value > high:
        problems.append("explodes")
    elif value < low:
        problems.append("vanishes")
    if reference is not None:
        ref_level = norms(reference, p=1) / 255.0
        ratio = median(per_level / ref_level)
        measured.update(undefended_per_grey_level=median(ref_level), ratio=ratio)
        summary += f", undefended {_fmt(median(ref_level))}, ratio {_fmt(ratio)}"
        lo, hi = NORM_RATIO_RANGE
        if not problems and not (lo <= ratio <= hi):
            problems.append("explodes" if not math.isfinite(ratio) or ratio > hi else "vanishes")
    threshold = f"||grad||_1/255 in [{low:g}, {high:g}]" + (
        f"; ratio to undefended in [{NORM_RATIO_RANGE[0]:g}, {NORM_RATIO_RANGE[1]:g}]" if reference is not None else "")
    if broken:
        meaning = ("the input gradient is NaN or infinite: gradient attacks get no direction from it, and an "
                   "attack that stalls there has not shown robustness")
    elif "explodes" in problems:
        meaning = "the gradient promises logit changes per grey level that no forward pass shows: it is not the model's slope"
    elif "vanishes" in problems:
        meaning = "the gradient is (nearly) zero: gradient attacks see a flat loss where the model is not flat"
    else:
        meaning = "gradient size is plausible" + (" and matches the undefended model" if reference is not None else "")
    return CheckResult("gradient_norm", "input-gradient size", FLAG if problems else PASS, measured, summary, threshold, meaning)


def check_finite_difference(
    loss: Callable[[Tensor], Tensor], x: Tensor, grad: Tensor, generator: torch.Generator
) -> CheckResult:
    """Autograd's directional derivative against a central finite difference along the same direction.

    ``loss`` maps a batch of 2N images (x + step, then x - step) to 2N per-sample losses.

    The direction is each image's own gradient (then autograd says the slope is ``||grad||``); an image
    with a zero or non-finite gradient gets a random direction, where autograd says the slope is 0.
    """
    g = flat(grad)
    g_norm = g.norm(dim=1)
    usable = torch.isfinite(g_norm) & (g_norm > 0)
    random_dir = torch.randn(g.shape, generator=generator, dtype=torch.float64).to(g.device)
    random_dir = random_dir / random_dir.norm(dim=1, keepdim=True)
    safe_norm = torch.where(usable, g_norm, torch.ones_like(g_norm)).unsqueeze(1)
    direction = torch.where(usable.unsqueeze(1), torch.nan_to_num(g) / safe_norm, random_dir)
    # Along its own direction the gradient's slope is its norm; zero stays zero, non-finite is infinite.
    autograd_slope = torch.where(usable, g_norm, torch.where(g_norm == 0, torch.zeros_like(g_norm), torch.full_like(g_norm, float("inf"))))
    step = FD_RMS_STEP * math.sqrt(g.shape[1])
    d = direction.view_as(x).to(x.dtype)
    with torch.no_grad():
        ahead, behind = loss(torch.cat([x + step * d, x - step * d])).double().split(x.shape[0])
        fd_slope = (ahead - behind) / (2 * step)
    factor = _disagreement(autograd_slope, fd_slope.to(autograd_slope.device))
    value = median(factor)
    measured = {"autograd": median(autograd_slope), "finite_difference": median(fd_slope), "factor": value, "step_l2": step}
    summary = f"autograd {_fmt(median(autograd_slope))} vs FD {_fmt(median(fd_slope))} (x{_fmt(value)})"
    ok = math.isfinite(value) and value <= FD_AGREEMENT
    meaning = ("autograd and finite differences agree: the gradient describes the function" if ok else
               "autograd disagrees with how the function actually changes: the gradient is not the function's slope")
    return CheckResult(
        "finite_difference", "autograd vs finite difference", PASS if ok else FLAG, measured, summary,
        f"agree within x{FD_AGREEMENT:g} (step {FD_RMS_STEP:g} rms per pixel)", meaning,
    )


def _disagreement(a: Tensor, b: Tensor) -> Tensor:
    """Per sample: the factor between two slopes (inf on opposite signs; 1 when both are ~0)."""
    tiny = 1e-12
    abs_a, abs_b = a.abs(), b.abs()
    both_zero = (abs_a < tiny) & (abs_b < tiny)
    opposite = (torch.sign(a) * torch.sign(b) < 0) | ~torch.isfinite(a) | ~torch.isfinite(b)
    factor = torch.maximum(abs_a, abs_b) / torch.minimum(abs_a, abs_b).clamp_min(tiny)
    factor = torch.where(opposite, torch.full_like(factor, float("inf")), factor)
    return torch.where(both_zero, torch.ones_like(factor), factor)


def check_gradient_stability(
    grad: Tensor, grad_noisy: Tensor, reference: Optional[Tensor] = None, reference_noisy: Optional[Tensor] = None
) -> CheckResult:
    """Cosine of the gradients at x and at x + tiny noise (about 0 under GCM, near 1 for real networks)."""
    value = median(cosine(grad, grad_noisy))
    measured = {"cosine": value, "noise": STABILITY_NOISE}
    summary = f"cos {_fmt(value)}"
    if reference is not None and reference_noisy is not None:
        ref_value = median(cosine(reference, reference_noisy))
        measured["undefended_cosine"] = ref_value
        summary += f", undefended {_fmt(ref_value)}"
    if math.isnan(value):
        meaning = "the gradient is zero or not finite at these images (see the gradient size)"
        status = FLAG
    elif value < STABILITY_MIN_COSINE:
        meaning = f"a {STABILITY_NOISE:g} nudge (a quarter grey level) re-draws the gradient: it carries no usable direction"
        status = FLAG
    else:
        meaning = "the gradient direction survives sub-grey-level noise, as a real slope does"
        status = PASS
    return CheckResult(
        "gradient_stability", "gradient at x vs x + tiny noise", status, measured, summary,
        f"median cos >= {STABILITY_MIN_COSINE:g} (noise +-{STABILITY_NOISE:g})", meaning,
    )
