"""The gradient facts that explain GCM, measured on real data: what its forward keeps and what its backward hides."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradconceal.errors import GradconcealError


@dataclass(frozen=True)
class GradientFacts:
    """Vanilla vs defended model on the same images (input gradients of the cross-entropy loss)."""

    images: int
    sign_agreement: float  # share of input-gradient components whose sign agrees (0.5 = coin flip)
    gradient_norm_ratio: float  # median over images of ||grad defended|| / ||grad vanilla||
    max_input_change: float  # max |defences(x) - x| at the model's input
    max_logit_difference: float  # max |defended(x) - vanilla(x)| over all logits
    same_top1: float  # share of images with the same top-1 prediction

    def as_dict(self) -> Dict[str, float]:
        """The facts as a plain dict (for JSON reports)."""
        return asdict(self)

    def lines(self) -> list:
        """Human-readable lines, one fact each, with what is expected under GCM."""
        return [
            f"gradient sign agreement, GCM vs vanilla: {self.sign_agreement:.3f} (0.5 = random)",
            f"gradient norm ratio, GCM / vanilla (median): {self.gradient_norm_ratio:.3g} (GCM: > 1e6)",
            f"max |GCM(x) - x| at the model input: {self.max_input_change:.3g} (GCM: about 1e-8)",
            f"max |logits GCM - logits vanilla|: {self.max_logit_difference:.3g} (small: about 1e-6)",
            f"same top-1 prediction: {self.same_top1:.0%} of {self.images} images",
        ]


def _input_gradient(model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    x = images.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), labels, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def gradient_facts(vanilla: nn.Module, defended: nn.Module, images: Tensor, labels: Optional[Tensor] = None) -> GradientFacts:
    """Measure the facts on ``images`` (N, C, H, W in [0, 1]); labels default to vanilla's top-1.

    ``defended`` is typically ``conceal(vanilla)``; its input defences (``.defenses``) give the input change.
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise GradconcealError(f"images must be a non-empty (N, C, H, W) batch, got shape {tuple(images.shape)}")
    with torch.no_grad():
        vanilla_logits = vanilla(images)
        defended_logits = defended(images)
        defences = getattr(defended, "defenses", None)
        max_input_change = float((defences(images) - images).abs().max()) if defences is not None else 0.0
    if labels is None:
        labels = vanilla_logits.argmax(dim=1)
    grad_vanilla = _input_gradient(vanilla, images, labels).flatten(1).double()
    grad_defended = _input_gradient(defended, images, labels).flatten(1).double()
    agree = (torch.sign(grad_vanilla) == torch.sign(grad_defended)).double().mean()
    ratio = grad_defended.norm(dim=1) / grad_vanilla.norm(dim=1).clamp_min(1e-30)
    return GradientFacts(
        images=int(images.shape[0]),
        sign_agreement=float(agree),
        gradient_norm_ratio=float(ratio.median()),
        max_input_change=max_input_change,
        max_logit_difference=float((defended_logits.double() - vanilla_logits.double()).abs().max()),
        same_top1=float((defended_logits.argmax(1) == vanilla_logits.argmax(1)).double().mean()),
    )
