"""Adversarial examples for training: the challenge recipe's FGSM pair and Madry-style PGD (Linf).

They are always computed on the UNDEFENDED model. Through GCM the input gradient is ~1e12 with a
pseudo-random sign, so an FGSM step through it is random noise, not an adversarial direction; the
recipe trains on the plain network and GCM is added at test time only (``conceal(model)``).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradconceal.defenses.concealment import DefendedModel, GradientConcealment
from gradconceal.errors import GradconcealError


def undefended(model: nn.Module) -> nn.Module:
    """The network without its input defences: ``model.base`` for a DefendedModel (recursively), else ``model``.

    Raises GradconcealError when a GradientConcealment layer is still inside, since gradients through it are noise.
    """
    view = model
    while isinstance(view, DefendedModel):
        if not isinstance(view.normalize, nn.Identity):
            raise GradconcealError(
                "train a DefendedModel whose base takes [0, 1] pixels (a PixelModel from load_model); "
                "this one normalises between its defences and its base"
            )
        view = view.base
    for name, module in view.named_modules():
        if isinstance(module, GradientConcealment):
            raise GradconcealError(
                f"the model to train holds a GradientConcealment layer at {name or 'top level'!r}; train the "
                "undefended model and add GCM at test time (gradients through GCM are noise)"
            )
    return view


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Temporarily switch ``model`` to eval mode (batch norm uses running statistics, no BN updates)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def fgsm_pair(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: float,
    targets: Tensor,
    *,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Tuple[Tensor, Tensor]:
    """The recipe's two FGSM examples: untargeted (away from ``labels``) and targeted (toward ``targets``).

    One forward pass, two input gradients; pixels stay in [0, 1]. ``model`` must be undefended.
    """
    x = images.detach().clone().requires_grad_(True)
    with autocast():
        logits = model(x).float()
    loss_true = F.cross_entropy(logits, labels)
    loss_target = F.cross_entropy(logits, targets)
    (grad_true,) = torch.autograd.grad(loss_true, x, retain_graph=True)
    (grad_target,) = torch.autograd.grad(loss_target, x)
    untargeted = (images + eps * grad_true.sign()).clamp_(0.0, 1.0)
    targeted = (images - eps * grad_target.sign()).clamp_(0.0, 1.0)
    return untargeted.detach(), targeted.detach()


def random_other_classes(labels: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """A uniformly random class different from each label (the targeted FGSM example's target)."""
    shift = torch.randint(1, num_classes, labels.shape, generator=generator).to(labels.device)
    return (labels + shift) % num_classes


def pgd_linf(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float,
    steps: int,
    step_size: float,
    generator: torch.Generator,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Tensor:
    """Untargeted Linf PGD with a uniform random start (Madry et al.), for adversarial training."""
    noise = torch.rand(images.shape, generator=generator).to(images.device, images.dtype)
    adversarial = (images + (2 * noise - 1) * eps).clamp_(0.0, 1.0)
    for _ in range(steps):
        x = adversarial.detach().requires_grad_(True)
        with autocast():
            loss = F.cross_entropy(model(x).float(), labels)
        (grad,) = torch.autograd.grad(loss, x)
        adversarial = x.detach() + step_size * grad.sign()
        adversarial = torch.min(torch.max(adversarial, images - eps), images + eps).clamp_(0.0, 1.0)
    return adversarial.detach()
