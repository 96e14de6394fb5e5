"""Training for the project's models: plain, the challenge recipe (FGSM regularisation), PGD adversarial training.

Adversarial examples are always made on the undefended network; GCM is added at test time (``conceal``).
"""

from gradconceal.training.adversarial import fgsm_pair, pgd_linf, undefended
from gradconceal.training.config import PRESETS, TrainConfig, make_config, to_command
from gradconceal.training.trainer import TrainResult, build_model, evaluate_accuracy, train

__all__ = [
    "PRESETS",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "evaluate_accuracy",
    "fgsm_pair",
    "make_config",
    "pgd_linf",
    "to_command",
    "train",
    "undefended",
]
