"""Forward-pass checks: does the defence change the function at all, and is its output random?"""

from __future__ import annotations

import math
from typing import Callable, List, Optional

import torch
from torch import Tensor

from gradconceal.masking.probes import cosine, median, norms
from gradconceal.masking.result import FLAG, INFO, PASS, CheckResult, skipped
from gradconceal.masking.table import fmt

# A defence whose output moves pixels by less than 1/40 of a grey level (below what an 8-bit image can
# express) and logits by less than 1e-3 leaves the classifier's function unchanged; its true gradient is
# then the undefended one, and BPDA with the identity backward is exact. GCM: ~1e-8 and ~1e-6.
INPUT_GAP = 1e-4
LOGIT_GAP = 1e-3
# Same thresholds as the stability and gradient-size checks: below this cosine the two gradients share no
# usable direction; outside this size ratio one of them is not the slope of the (shared) function.
AGREEMENT_MIN_COSINE = 0.5
AGREEMENT_NORM_RATIO = (0.1, 10.0)
# Two forward passes of a deterministic model agree to float rounding; relative to the logits' size.
RANDOM_OUTPUT_GAP = 1e-3


def check_forward_equivalence(
    x: Tensor,
    defended_input: Optional[Tensor],
    logits: Tensor,
    reference_logits: Optional[Tensor],
    grad: Tensor,
    reference_grad: Optional[Tensor],
) -> CheckResult:
    """max |defended(x) - undefended(x)| at the model's input and on the logits, and whether the gradients agree."""
    title = "forward equivalence"
    if reference_logits is None or reference_grad is None:
        return skipped("forward_equivalence", title, "no defence in front of the model: nothing to compare with")
    input_gap = float((defended_input - x).abs().max()) if defended_input is not None and defended_input.shape == x.shape else math.inf
    logit_gap = float((logits - reference_logits).abs().max())
    agreement = median(cosine(grad, reference_grad))
    ratio = median(norms(grad) / norms(reference_grad))
    measured = {"input_gap": input_gap, "logit_gap": logit_gap, "gradient_cosine": agreement, "gradient_norm_ratio": ratio}
    summary = f"input {fmt(input_gap)}, logits {fmt(logit_gap)}; grad cos {fmt(agreement)}, size x{fmt(ratio)}"
    low, high = AGREEMENT_NORM_RATIO
    threshold = (f"equivalent if input <= {INPUT_GAP:g} and logits <= {LOGIT_GAP:g}; then grad cos >= "
                 f"{AGREEMENT_MIN_COSINE:g} and size x{low:g}..{high:g}")
    if input_gap <= INPUT_GAP and logit_gap <= LOGIT_GAP:
        if not math.isnan(agreement) and agreement >= AGREEMENT_MIN_COSINE and low <= ratio <= high:
            return CheckResult("forward_equivalence", title, PASS, measured, summary, threshold,
                               "the defence changes neither the function nor its gradient")
        return CheckResult("forward_equivalence", title, FLAG, measured, summary, threshold,
                           "same function, different gradient: the gradient is wrong, and BPDA with the identity is exact")
    return CheckResult("forward_equivalence", title, INFO, measured, summary, threshold,
                       "the defence changes the function, so its gradient may differ; the other checks judge it")


def check_randomized_output(
    forward: Callable[[Tensor], Tensor],
    x: Tensor,
    random_layers: List[str],
    first: Optional[Tensor] = None,
    calls: int = 3,
) -> CheckResult:
    """Run the same input ``calls`` times: different logits mean a single gradient is one draw of a random one.

    ``first``: the logits of a call already made on ``x`` (it counts as one of the calls). A layer with
    few outcomes (resize-and-pad of a 28 x 28 image has four) needs several calls to show its randomness.
    """
    with torch.no_grad():
        first = forward(x) if first is None else first
        repeats = [forward(x) for _ in range(max(1, calls - 1))]
    gap = max(float((first - again).abs().max()) for again in repeats)
    scale = max(1.0, float(first.abs().max()))
    top1 = first.argmax(dim=1)
    changed = float(torch.stack([again.argmax(dim=1) != top1 for again in repeats]).any(dim=0).double().mean())
    measured = {"logit_gap": gap, "relative_gap": gap / scale, "top1_changed": changed, "calls": len(repeats) + 1,
                "random_layers": random_layers}
    summary = f"{len(repeats) + 1} calls: logits differ by {fmt(gap)}, top-1 changed on {changed:.0%}"
    threshold = f"max |f(x) - f(x)| <= {RANDOM_OUTPUT_GAP:g} x max(1, |logits|)"
    if gap / scale > RANDOM_OUTPUT_GAP:
        where = f" ({', '.join(random_layers)})" if random_layers else ""
        return CheckResult("randomized_output", "randomised output", FLAG, measured, summary, threshold,
                           f"same input, different logits{where}: plain gradients are single draws; attack with EOT")
    return CheckResult("randomized_output", "randomised output", PASS, measured, summary, threshold,
                       "the model is deterministic")
