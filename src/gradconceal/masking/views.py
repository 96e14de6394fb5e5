"""The adaptive view the audit attacks with: BPDA through whatever layer it located, EOT over randomness.

``gradconceal.attacks.adaptive_view`` bypasses GCM layers and averages over known random layers; a layer
the audit located that is not GCM (bit-depth reduction, a user's JPEG layer) is made straight-through
here: its forward output is kept, its backward is the identity (BPDA, Athalye et al. 2018).
"""

from __future__ import annotations

from typing import Optional, Sequence

from torch import nn

from gradconceal.attacks.adaptive import adaptive_view
from gradconceal.attacks.plan import view_applies
from gradconceal.attacks.randomness import random_layers
from gradconceal.defenses.concealment import GradientConcealment


def straight_through_view(model: nn.Module, layers: Sequence[nn.Module]) -> nn.Module:
    """``model`` with the backward of each of ``layers`` replaced by the identity, forward unchanged (BPDA)."""
    return adaptive_view(model, bpda=True, bpda_layers=list(layers))


def attacker_view(model: nn.Module, extra_layer: Optional[nn.Module], eot_samples: int) -> Optional[nn.Module]:
    """BPDA through GCM layers and ``extra_layer``, EOT over random layers where the EOT view applies
    (``view_applies``, the rule the evaluation uses); None when nothing is to bypass."""
    has_gcm = any(isinstance(m, GradientConcealment) for m in model.modules())
    is_random = view_applies("bpda+eot", random=bool(random_layers(model)))
    if isinstance(extra_layer, GradientConcealment):
        extra_layer = None
    if not (has_gcm or is_random or extra_layer is not None):
        return None
    layers = [extra_layer] if extra_layer is not None else []
    return adaptive_view(model, bpda=has_gcm or bool(layers), eot_samples=eot_samples if is_random else 1,
                         bpda_layers=layers)


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
