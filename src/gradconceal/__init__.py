"""gradconceal: the Gradient Concealment Module (GCM) and an honest evaluation of it.

``conceal(model)`` puts GCM in front of any PyTorch classifier; ``load_model`` gives pixel-space models;
the attack, evaluation and audit modules measure what the defence buys against the paper's attacks and
against adaptive ones (BPDA, EOT, Square, transfer).
"""

from typing import Any

from gradconceal.defenses import DefendedModel, GradientConcealment, RandomResizePad, conceal
from gradconceal.errors import GradconcealError

from gradconceal._version import __version__ as __version__

__all__ = [
    "DefendedModel",
    "GradconcealError",
    "GradientConcealment",
    "RandomResizePad",
    "audit",
    "conceal",
    "evaluate",
    "load_model",
]


def __getattr__(name: str) -> Any:
    """Import the heavier entry points on first use, so ``import gradconceal`` stays fast."""
    if name == "load_model":
        from gradconceal.models.zoo import load_model

        return load_model
    if name == "evaluate":
        from gradconceal.evaluation.api import evaluate

        return evaluate
    if name == "audit":
        from gradconceal.masking.api import audit

        return audit
    raise AttributeError(f"module 'gradconceal' has no attribute {name!r}")
