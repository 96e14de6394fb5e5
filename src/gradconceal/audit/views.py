"""The adaptive view the audit attacks with: BPDA through whatever layer it located, EOT over randomness.

``gradconceal.attacks.adaptive_view`` bypasses GCM layers and averages over known random layers; a layer
the audit located that is not GCM (bit-depth reduction, a user's JPEG layer) is made straight-through
here: its forward output is kept, its backward is the identity (BPDA, Athalye et al. 2018).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from gradconceal.attacks import adaptive_view
from gradconceal.attacks.adaptive import random_layers
from gradconceal.defenses.concealment import GradientConcealment

_FORWARDED = ("input_size", "class_names", "num_classes", "mean", "std", "model_name")


class _KeepValue(torch.autograd.Function):
    """Forward: the layer's output; backward: the gradient passes to the layer's input unchanged."""

    @staticmethod
    def forward(ctx, x: Tensor, value: Tensor) -> Tensor:  # type: ignore[override]
        return value

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad, None


def _straight_through_hook(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
    x = inputs[0]
    if not (torch.is_grad_enabled() and isinstance(x, Tensor) and x.requires_grad and x.shape == output.shape):
        return output
    return _KeepValue.apply(x, output.detach())


class StraightThroughView(nn.Module):
    """``model`` with the backward pass of each of ``layers`` replaced by the identity (forward unchanged)."""

    def __init__(self, model: nn.Module, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.model = model
        self.layers: List[nn.Module] = list(layers)
        self.training = model.training  # a wrapper's own flag only; the model's mode is left alone
        for name in _FORWARDED:
            if hasattr(model, name) and not hasattr(self, name):
                setattr(self, name, getattr(model, name))

    def forward(self, x: Tensor) -> Tensor:
        handles = [layer.register_forward_hook(_straight_through_hook) for layer in self.layers]
        try:
            return self.model(x)
        finally:
            for handle in handles:
                handle.remove()


def attacker_view(model: nn.Module, extra_layer: Optional[nn.Module], eot_samples: int) -> Optional[nn.Module]:
    """BPDA through GCM layers and ``extra_layer``, EOT over random layers; None when nothing is to bypass."""
    has_gcm = any(isinstance(m, GradientConcealment) for m in model.modules())
    is_random = bool(random_layers(model))
    if isinstance(extra_layer, GradientConcealment):
        extra_layer = None
    if not (has_gcm or is_random or extra_layer is not None):
        return None
    inner = StraightThroughView(model, [extra_layer]) if extra_layer is not None else model
    view = adaptive_view(inner, bpda=has_gcm, eot_samples=eot_samples if is_random else 1)
    view.training = model.training  # the view's own flag (a new module starts in training mode)
    return view


def view_name(model: nn.Module, extra_layer: Optional[nn.Module], eot_samples: int) -> str:
    """How the attacker's view differs from plain autograd, in words for the report."""
    parts = []
    if any(isinstance(m, GradientConcealment) for m in model.modules()):
        parts.append("BPDA through GCM")
    if extra_layer is not None and not isinstance(extra_layer, GradientConcealment):
        parts.append(f"BPDA through {type(extra_layer).__name__}")
    if random_layers(model):
        parts.append(f"EOT x{eot_samples}")
    return " + ".join(parts) or "plain"
