"""Attack losses on logits, per sample and oriented so that the attack always maximises them.

``ce``: cross-entropy of the true class (targeted: minus that of the target). ``margin``: best other logit
minus the true one (Carlini-Wagner's margin; targeted: target minus the best other). ``dlr``: the
difference-of-logits ratio of Croce & Hein (2020), invariant to logit shift and scale; its targeted form
divides by ``z_pi1 - (z_pi3 + z_pi4) / 2``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

LOSSES: Tuple[str, ...] = ("ce", "margin", "dlr")


def min_classes(loss: str, targeted: bool) -> int:
    """The fewest classes a model needs for ``loss`` (DLR reads the 3rd, targeted DLR the 4th largest logit)."""
    if loss == "dlr":
        return 4 if targeted else 3
    return 2


def _others_max(logits: Tensor, cls: Tensor) -> Tensor:
    """The largest logit of each row excluding column ``cls``."""
    masked = logits.scatter(1, cls.view(-1, 1), float("-inf"))
    return masked.amax(dim=1)


def _picked(logits: Tensor, cls: Tensor) -> Tensor:
    return logits.gather(1, cls.view(-1, 1)).squeeze(1)


def attack_loss(name: str, logits: Tensor, labels: Tensor, targets: Optional[Tensor] = None) -> Tensor:
    """Per-sample loss ``name`` to maximise; with ``targets`` the targeted form (towards ``targets``)."""
    z = logits.float()
    if name == "ce":
        if targets is None:
            return F.cross_entropy(z, labels, reduction="none")
        return -F.cross_entropy(z, targets, reduction="none")
    if name == "margin":
        if targets is None:
            return _others_max(z, labels) - _picked(z, labels)
        return _picked(z, targets) - _others_max(z, targets)
    if name == "dlr":
        ranked = z.sort(dim=1, descending=True).values
        if targets is None:
            return -(_picked(z, labels) - _others_max(z, labels)) / (ranked[:, 0] - ranked[:, 2] + 1e-12)
        scale = ranked[:, 0] - 0.5 * (ranked[:, 2] + ranked[:, 3]) + 1e-12
        return -(_picked(z, labels) - _picked(z, targets)) / scale
    raise ValueError(f"unknown loss {name!r}")  # validated before any attack runs


def is_success(logits: Tensor, labels: Tensor, targets: Optional[Tensor]) -> Tensor:
    """Bool per sample: the prediction is the target (with ``targets``) or anything but the label.

    Never for a sample with a NaN or infinite logit: its argmax is an artefact (NaN wins it), not a decision.
    """
    predicted = logits.argmax(dim=1)
    finite = torch.isfinite(logits).all(dim=1)
    if targets is not None:
        return (predicted == targets) & finite
    return (predicted != labels) & finite


def ranked_wrong_classes(logits: Tensor, labels: Tensor, count: int) -> Tensor:
    """The ``count`` most likely classes other than the label, best first: shape (N, count)."""
    masked = logits.float().scatter(1, labels.view(-1, 1), float("-inf"))
    return masked.topk(count, dim=1).indices
