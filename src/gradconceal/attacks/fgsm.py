"""FGSM (Goodfellow et al. 2015): one step of the full budget along the loss gradient's steepest ascent.

In Linf this is ``x + eps * sign(grad)``; in L2 and L1 it is the fast gradient method (FGM) with the
normalised gradient (the dense L1 direction, as IBM ART's FGM).
"""

from __future__ import annotations

from torch import Tensor, nn

from gradconceal.attacks.base import Attack, RunState
from gradconceal.attacks.geometry import ascent_direction
from gradconceal.attacks.threat import Number


class FGSM(Attack):
    """Single-step attack: ``FGSM(model, norm="linf", eps=8/255)``."""

    name = "fgsm"

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: str = "linf",
        eps: Number = 8 / 255,
        loss: str = "ce",
        targeted: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(model, norm=norm, eps=eps, loss=loss, targeted=targeted, seed=seed, early_stop=False)

    def run(self, images: Tensor, labels: Tensor, state: RunState) -> Tensor:
        _, grad, _ = state.loss_gradient(state.all_rows(), images)
        return images + self.threat.eps * ascent_direction(grad, self.threat.norm)
