"""The attacker's view of a defended model: BPDA through concealment layers, EOT over random layers.

``adaptive_view(model)`` finds every ``GradientConcealment`` and random layer (``RandomResizePad``, dropout
in training mode) inside any model on its own, and returns a module whose forward is the model's own,
unchanged. Nothing in the defence knows about attacks; the view is chosen by the attack spec.

* BPDA (Athalye et al. 2018): the backward pass of each concealment layer is the identity. GCM's forward
  is ``x + 1e-8 * sin(1e20 * x)``, equal to ``x`` up to 1e-8, so the identity is its true smooth
  approximation and the gradient the attacker gets is the undefended model's.
* EOT: attacks read ``view.eot_samples`` and average the *loss gradient* over that many forward/backward
  passes, each with a fresh draw of the random layers. We average gradients of the loss, not logits: the
  deployed model makes one random draw per query, so the attacker wants to raise the expected loss
  ``E_r[L(f_r(x))]``, whose gradient is the mean of the per-draw gradients (Athalye et al.'s EOT). Averaged
  logits would attack the mean prediction of an ensemble nobody deploys, and a draw's graph is freed
  before the next, so memory stays that of one forward + backward whatever ``eot_samples`` is.
"""

from __future__ import annotations

import logging
from typing import List, Sequence

import torch
from torch import Tensor, nn

from gradconceal.attacks import checks
from gradconceal.attacks.randomness import random_layers
from gradconceal.defenses.concealment import GradientConcealment
from gradconceal.errors import GradconcealError

logger = logging.getLogger(__name__)

_FORWARDED = ("input_size", "class_names", "num_classes", "mean", "std", "model_name")


class _IdentityBackward(torch.autograd.Function):
    """Returns ``value`` (the layer's real output) but passes the gradient to ``x`` unchanged."""

    @staticmethod
    def forward(ctx, x: Tensor, value: Tensor) -> Tensor:
        return value

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def _straight_through(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
    """Forward hook: keep the concealment layer's output, replace its backward by the identity."""
    x = inputs[0]
    if not (torch.is_grad_enabled() and isinstance(x, Tensor) and x.requires_grad and x.shape == output.shape):
        return output
    return _IdentityBackward.apply(x, output.detach())


class AdaptiveView(nn.Module):
    """A model seen by an adaptive attacker; same forward, BPDA backward and/or EOT gradient averaging.

    ``bpda_layers`` adds layers of any kind (a JPEG or bit-depth layer) whose backward becomes the identity
    too, for input-shaped layers that approximate the identity.
    """

    model: nn.Module

    def __init__(self, model: nn.Module, *, bpda: bool = True, eot_samples: int = 1,
                 bpda_layers: Sequence[nn.Module] = ()) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise GradconcealError(f"adaptive_view needs a torch.nn.Module, got {type(model).__name__}")
        if isinstance(model, AdaptiveView):
            model = model.model
        self.model = model
        # A view of an eval-mode model is in eval mode too; only the view's own flag is set, never the
        # model's layers (``train()`` would recurse and undo a mix such as frozen batch norm in a training model).
        self.training = model.training
        self.bpda = checks.boolean("bpda", bpda)
        self.eot_samples = checks.positive_int("eot_samples", eot_samples)
        self.concealment_layers: List[GradientConcealment] = [
            m for m in model.modules() if isinstance(m, GradientConcealment)
        ]
        self.random_layers: List[nn.Module] = random_layers(model)
        self.bpda_layers: List[nn.Module] = list(bpda_layers)
        if not all(isinstance(layer, nn.Module) for layer in self.bpda_layers):
            raise GradconcealError("bpda_layers must be torch.nn.Module layers of the model")
        for name in _FORWARDED:
            if hasattr(model, name) and not hasattr(self, name):
                setattr(self, name, getattr(model, name))
        if self.bpda and not self.concealment_layers and not self.bpda_layers:
            logger.info("adaptive_view: no GradientConcealment layer in the model; BPDA is plain autograd here")
        if self.eot_samples > 1 and not self.random_layers:
            logger.warning("adaptive_view: no random layer found; the %d EOT draws will give the same gradient "
                           "unless the model has randomness of its own", self.eot_samples)

    @property
    def straight_through_layers(self) -> List[nn.Module]:
        """The layers whose backward pass this view replaces by the identity."""
        return [*(self.concealment_layers if self.bpda else []), *self.bpda_layers]

    def forward(self, x: Tensor) -> Tensor:
        layers = self.straight_through_layers
        if not (layers and torch.is_grad_enabled()):
            return self.model(x)
        handles = [layer.register_forward_hook(_straight_through) for layer in layers]
        try:
            return self.model(x)
        finally:
            for handle in handles:
                handle.remove()

    def extra_repr(self) -> str:
        return (f"bpda={self.bpda} ({len(self.concealment_layers)} concealment layers), "
                f"eot_samples={self.eot_samples} ({len(self.random_layers)} random layers)")


def adaptive_view(
    model: nn.Module, bpda: bool = True, eot_samples: int = 1, bpda_layers: Sequence[nn.Module] = ()
) -> AdaptiveView:
    """The view an adaptive attacker differentiates: BPDA through GCM layers, EOT over ``eot_samples`` draws."""
    return AdaptiveView(model, bpda=bpda, eot_samples=eot_samples, bpda_layers=bpda_layers)
