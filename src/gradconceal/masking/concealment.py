"""The concealment checks, run together: a few forward and backward passes answer all of them.

Two staged backward passes (at x and at x + tiny noise) give the gradient at the input of every stage;
the gradient-size, stability, forward-equivalence and localisation checks read them, the finite-difference
check adds two forward passes, the randomised-output check two more, the BPDA probe three.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import Tensor

from gradconceal.masking.forward import check_forward_equivalence, check_randomized_output
from gradconceal.masking.gradients import (
    STABILITY_NOISE,
    check_finite_difference,
    check_gradient_norm,
    check_gradient_stability,
)
from gradconceal.masking.localize import (
    Localization,
    bpda_gradient,
    check_bpda_probe,
    check_shattering_layer,
    locate,
    stage_randomness,
)
from gradconceal.masking.probes import grey_level_noise, pair_margin, staged_pass, strongest_other
from gradconceal.masking.result import CheckResult
from gradconceal.masking.target import AuditTarget, frozen_randomness, random_layers


# Forward calls of the randomised-output check: cheap small images get more, to catch low-entropy layers.
RANDOM_CALLS_LARGE = 3
RANDOM_CALLS_SMALL = 8


@dataclass
class ConcealmentFindings:
    """The concealment checks' results and the localisation they share with the verdict."""

    checks: List[CheckResult]
    localization: Localization


def run_concealment_checks(
    target: AuditTarget, x: Tensor, labels: Tensor, *, eps: float, seed: int, first_logits: Optional[Tensor] = None
) -> ConcealmentFindings:
    """Gradient size, finite differences, stability, forward equivalence, randomness, localisation, BPDA probe.

    ``first_logits``: the logits of the undefended model on ``x`` (of the model itself when it has no
    defence), if the caller has them already.
    """
    generator = torch.Generator().manual_seed(seed)
    model, stages = target.model, target.stages
    checks: List[CheckResult] = []
    ref_index = target.defense_count if target.reference is not None else None
    batch = x.shape[0]

    started = time.perf_counter()
    with torch.no_grad():
        if first_logits is None:
            first_logits = (target.reference or model)(x)
        reference_logits = first_logits if target.reference is not None else None
        live_logits = model(x) if target.reference is not None else first_logits
    calls = RANDOM_CALLS_LARGE if x[0].numel() >= 100_000 else RANDOM_CALLS_SMALL
    randomized = check_randomized_output(model, x, random_layers(model), first=live_logits, calls=calls)
    random_flags = stage_randomness(stages, x)
    randomized.seconds = time.perf_counter() - started

    started = time.perf_counter()
    other = strongest_other(live_logits, labels)
    with frozen_randomness(model, generator):
        # One backward pass serves x and x + tiny noise (a batch of both; one draw of any randomness).
        both = torch.cat([x, x + grey_level_noise(x, STABILITY_NOISE, generator)])
        joint = staged_pass(stages, both, labels.repeat(2), other.repeat(2), keep_graph=True)
        clean, noisy = joint.split(batch)
        probe_seconds = time.perf_counter() - started

        started = time.perf_counter()
        grad = clean.grads[0]
        reference_grad = clean.grads[ref_index] if ref_index is not None else None
        reference_noisy = noisy.grads[ref_index] if ref_index is not None else None
        if reference_grad is not None and reference_grad.shape != grad.shape:
            reference_grad = reference_noisy = None
        checks.append(_timed(check_gradient_norm(grad, reference_grad), started, probe_seconds / 2))

        started = time.perf_counter()
        checks.append(_timed(check_finite_difference(
            lambda z: pair_margin(model(z), labels.repeat(2), other.repeat(2)), x, grad, generator), started))

        started = time.perf_counter()
        checks.append(_timed(check_gradient_stability(grad, noisy.grads[0], reference_grad, reference_noisy),
                             started, probe_seconds / 2))

    started = time.perf_counter()
    defended_input = clean.inputs[ref_index].detach() if ref_index is not None else None
    checks.append(_timed(check_forward_equivalence(
        x, defended_input, live_logits, reference_logits, grad, reference_grad), started))
    checks.append(randomized)

    started = time.perf_counter()
    found = locate(stages, clean, noisy, random_flags)
    checks.append(_timed(check_shattering_layer(found), started))

    started = time.perf_counter()
    bypass = bpda_gradient(joint, found.index, batch) if found.index is not None and not found.culprit_random else None
    checks.append(_timed(check_bpda_probe(model, x, labels, live_logits, grad, bypass, found, eps), started))
    return ConcealmentFindings(checks, found)


def _timed(result: CheckResult, started: float, extra: float = 0.0) -> CheckResult:
    """Set the check's run time (plus its share of the shared backward passes)."""
    result.seconds = time.perf_counter() - started + extra
    return result
