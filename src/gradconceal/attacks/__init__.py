"""Attacks on pixel-space classifiers, sharing one threat-model vocabulary and one per-sample result.

``PGD(model, norm="linf", eps=8/255, steps=10)(images, labels)`` returns adversarial images;
``.perturb(...)`` returns an ``AttackResult``. ``adaptive_view(defended)`` is what adaptive attacks
differentiate (BPDA, EOT); ``gradconceal.attacks.presets`` holds the paper's and the adaptive protocols.
"""

from gradconceal.attacks.adaptive import AdaptiveView, adaptive_view
from gradconceal.attacks.apgd import APGD
from gradconceal.attacks.base import Attack, AttackResult, RunState
from gradconceal.attacks.cw import CW
from gradconceal.attacks.fab import FAB, FABResult, robust_accuracy_at
from gradconceal.attacks.fgsm import FGSM
from gradconceal.attacks.pgd import PGD
from gradconceal.attacks.registry import create_attack, list_attacks
from gradconceal.attacks.square import Square
from gradconceal.attacks.threat import NORMS, ThreatModel
from gradconceal.attacks.transfer import Transfer

__all__ = [
    "APGD",
    "AdaptiveView",
    "Attack",
    "AttackResult",
    "CW",
    "FAB",
    "FABResult",
    "FGSM",
    "NORMS",
    "PGD",
    "RunState",
    "Square",
    "ThreatModel",
    "Transfer",
    "adaptive_view",
    "create_attack",
    "list_attacks",
    "robust_accuracy_at",
]
