"""The bare loops: the least work an attack of each kind can do, written inline with no checks or records.

Each is the attack's gradient evaluations at the batch given and its projection, nothing more; the time an
attack library takes beyond these is its overhead. They are what ``ours / bare`` ratios divide by.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _input_gradient(model: nn.Module, x: Tensor, labels: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), labels)
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def _l2_unit(grad: Tensor) -> Tensor:
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    return grad / norms.view(-1, 1, 1, 1)


def _project_l2(images: Tensor, x: Tensor, eps: float) -> Tensor:
    delta = x - images
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    factor = (eps / norms).clamp(max=1.0).view(-1, 1, 1, 1)
    return (images + delta * factor).clamp(0.0, 1.0)


def bare_pgd(model: nn.Module, images: Tensor, labels: Tensor, *, norm: str, eps: float, alpha: float, steps: int,
             generator: torch.Generator) -> Tensor:
    """PGD in Linf or L2 from a random start: ``steps`` forward+backward passes and projections."""
    if norm == "linf":
        noise = torch.rand(images.shape, generator=generator, device=images.device) * (2 * eps) - eps
        x = (images + noise).clamp(0.0, 1.0)
    else:
        noise = torch.randn(images.shape, generator=generator, device=images.device)
        radius = torch.rand(images.shape[0], generator=generator, device=images.device).view(-1, 1, 1, 1) * eps
        x = (images + _l2_unit(noise) * radius).clamp(0.0, 1.0)
    for _ in range(steps):
        grad = _input_gradient(model, x, labels)
        if norm == "linf":
            x = torch.minimum(torch.maximum(x + alpha * grad.sign(), images - eps), images + eps).clamp_(0.0, 1.0)
        else:
            x = _project_l2(images, x + alpha * _l2_unit(grad), eps)
    return x.detach()


def bare_fgsm(model: nn.Module, images: Tensor, labels: Tensor, *, eps: float) -> Tensor:
    """FGSM in Linf: one forward+backward pass and a signed step of the whole budget."""
    grad = _input_gradient(model, images, labels)
    return (images + eps * grad.sign()).clamp(0.0, 1.0).detach()
