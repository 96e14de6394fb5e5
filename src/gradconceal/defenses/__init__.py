"""Defence layers: gradient concealment (GCM) and the challenge solution's randomisation."""

from gradconceal.defenses.concealment import ConcealedModel, DefendedModel, GradientConcealment, Normalize, conceal
from gradconceal.defenses.quantization import BitDepthReduction
from gradconceal.defenses.randomization import RandomResizePad

__all__ = ["BitDepthReduction", "ConcealedModel", "DefendedModel", "Normalize", "GradientConcealment", "RandomResizePad", "conceal"]
