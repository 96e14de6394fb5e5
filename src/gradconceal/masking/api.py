"""``audit(model, data)``: run the gradient-masking checks on a model and return a report with a verdict."""

from __future__ import annotations

import logging
import time
from typing import Any, List, Optional, Tuple, Union

import torch
from torch import nn

from gradconceal.attacks.probe import check_num_classes, probe_model
from gradconceal.defenses.randomization import reseeded_randomness
from gradconceal.masking.concealment import run_concealment_checks
from gradconceal.masking.data import accepted_labels, default_data, load_audit_data
from gradconceal.masking.localize import Localization, remedy_for
from gradconceal.masking.result import NO_MASKING, AuditReport, CheckResult, decide_verdict
from gradconceal.masking.target import AuditTarget, DefenseArg, model_device, resolve_target
from gradconceal.errors import GradconcealError
from gradconceal.preserve import preserved_model, preserved_rng

log = logging.getLogger(__name__)

# The concealment checks look at this many images: enough for a stable median, few enough for --quick.
QUICK_IMAGES_LARGE = 8  # images of 100k pixels or more (ImageNet-sized)
QUICK_IMAGES_SMALL = 32
# Images of the full audit when n is not given (the photos are used whole).
DEFAULT_IMAGES = 64


def audit(
    model: Union[str, nn.Module],
    data: Any = None,
    *,
    defense: DefenseArg = None,
    quick: bool = False,
    n: Optional[int] = None,
    eps: float = 8 / 255,
    seed: int = 0,
    batch_size: Optional[int] = None,
) -> AuditReport:
    """Audit ``model`` (a zoo name or a pixel-space module) behind ``defense`` for gradient masking.

    ``data``: a source name (default by input size: ``photos`` or ``fashion-mnist``), a dataset or an
    (images, labels) pair; ``n`` images are used (all photos; 64 otherwise). ``quick`` runs only the
    concealment checks (a few forward/backward passes); the full audit adds the attack-based checks.
    ``eps`` is the Linf budget of the attacks, in [0, 1] pixels. ``seed`` decides every random draw of the
    audit and of the model's random layers during it: the same model, data and seed give the same report,
    whatever draws the model made before and whatever the state of torch's global RNG.

    Before any check the model is probed once (``gradconceal.attacks.probe.probe_model``): an output that is
    not (N, classes) logits, parameters of another dtype than the images, NaN/inf logits on the clean images
    or too few classes for the labels end the audit with one line. The model's mode is kept; its buffers
    and the global random generators are as they were when the audit returns.
    """
    with preserved_rng():
        return _audit(model, data, defense=defense, quick=quick, n=n, eps=eps, seed=seed, batch_size=batch_size)


def _audit(
    model: Union[str, nn.Module],
    data: Any,
    *,
    defense: DefenseArg,
    quick: bool,
    n: Optional[int],
    eps: float,
    seed: int,
    batch_size: Optional[int],
) -> AuditReport:
    started = time.perf_counter()
    if not isinstance(quick, bool):
        raise GradconcealError(f"quick must be True or False, got {quick!r}")
    if not (isinstance(eps, (int, float)) and 0 < float(eps) <= 1):
        raise GradconcealError(f"eps must be in (0, 1] (Linf, [0, 1] pixels), got {eps!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise GradconcealError(f"seed must be a non-negative integer, got {seed!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise GradconcealError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    name = model if isinstance(model, str) else ""
    if isinstance(model, str):
        from gradconceal.models.zoo import load_model

        model = load_model(model)
    target = resolve_target(model, defense, name=name, seed=seed)
    if _has_training_layers(target.model):
        log.warning("the model is in training mode: dropout and batch statistics make its output random, "
                    "which the audit will report; call model.eval() to audit the deployed model")
    # Every draw of the model's randomness comes from ``seed``: resize-and-pad layers get fresh generators, and
    # whatever draws from torch's global RNG (dropout in training mode, a user's random layer) starts from it
    # (``audit`` restores the global RNG afterwards). The verdict then never depends on the draws the model
    # made before (an evaluation's attacks) or on the state of the caller's RNG.
    with preserved_model(target.model), reseeded_randomness(target.model, seed):
        torch.default_generator.manual_seed(seed)
        if torch.cuda.is_initialized():  # the devices ``preserved_rng`` restores; others stay unseeded
            torch.cuda.manual_seed_all(seed)
        return _run_checks(target, data, quick=quick, n=n, eps=eps, seed=seed, batch_size=batch_size,
                           started=started)


def _has_training_layers(model: nn.Module) -> bool:
    """True when a layer whose output depends on the mode (batch norm, dropout) is in training mode."""
    kinds = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
    return any(m.training for m in model.modules() if isinstance(m, kinds))


def _run_checks(target: AuditTarget, data: Any, *, quick: bool, n: Optional[int], eps: float, seed: int,
                batch_size: Optional[int], started: float) -> AuditReport:
    """Everything after the model is resolved: data, the probe, the concealment and attack checks, the verdict."""
    if n is None:
        source = data if data is not None else default_data(target.model)
        n = None if source == "photos" else DEFAULT_IMAGES
    images = load_audit_data(data, n, target.model)
    device = model_device(target.model)
    # Channels-last pixels run depthwise convolutions (EfficientNet, ConvNeXt) several times faster on CPU;
    # the numbers do not change.
    images.images = images.images.to(device).contiguous(memory_format=torch.channels_last)
    images.labels = images.labels.to(device)
    per_image = int(images.images[0].numel())
    quick_count = min(len(images), QUICK_IMAGES_LARGE if per_image >= 100_000 else QUICK_IMAGES_SMALL)
    if quick:
        images = images.head(quick_count)
    judge = target.reference if target.reference is not None else target.model
    first_logits = probe_model(judge, images.images[:quick_count], model_name=target.name)
    check_num_classes(first_logits, images.labels, target.name)
    if target.reference is not None:  # the defence layers in front must keep the output finite logits too
        probe_model(target.model, images.images[:quick_count], model_name=f"{target.name} + {target.defense}")
    with torch.no_grad():
        predictions = first_logits.argmax(dim=1).tolist()
        if len(images) > quick_count and images.label_sets is not None:
            predictions += judge(images.images[quick_count:]).argmax(dim=1).tolist()
    labels = accepted_labels(images, predictions).to(device)
    x = images.images[:quick_count]
    findings = run_concealment_checks(target, x, labels[:quick_count], eps=float(eps), seed=seed,
                                      first_logits=first_logits[:quick_count])
    checks: List[CheckResult] = list(findings.checks)
    if not quick:
        from gradconceal.masking.attack_checks import run_attack_checks

        checks += run_attack_checks(target, images.images, labels, findings.localization,
                                    eps=float(eps), seed=seed, batch_size=batch_size)
    verdict = decide_verdict(checks)
    cause, remedy = explain(checks, findings.localization, verdict)
    report = AuditReport(
        checks=checks, verdict=verdict, model=target.name, defense=target.defense, data=images.name,
        images=len(images), quick=quick, cause=cause, remedy=remedy, layer=findings.localization.label,
        settings={"eps": float(eps), "seed": seed, "concealment_images": quick_count,
                  "device": str(device), "batch_size": batch_size},
    )
    report.seconds = time.perf_counter() - started
    log.info("audit of %s (defense %s): %s in %.1f s", target.name, target.defense, verdict, report.seconds)
    return report


def explain(checks: List[CheckResult], found: Localization, verdict: str) -> Tuple[str, str]:
    """(cause, remedy) in words: the layer that breaks the gradient, or randomness, or the flagged checks."""
    if verdict == NO_MASKING:
        return "", ""
    flagged = {c.name for c in checks if c.flagged}
    causes = []
    if found.found:
        causes.append(f"{found.label} {found.how}")
    if "randomized_output" in flagged:
        where = ", ".join(found.random_stages) or "the model"
        causes.append(f"the output is random ({where})")
    if not causes:
        causes.append("flagged: " + ", ".join(c.title for c in checks if c.flagged))
    remedy = remedy_for(found, found.module)
    if not remedy and "randomized_output" in flagged:
        remedy = "EOT: average gradients over the model's randomness (adaptive_view(model, eot_samples=N))"
    if not remedy:
        remedy = "judge the model by black-box (Square) and transfer attacks, not by gradient attacks"
    return "; ".join(causes), remedy
