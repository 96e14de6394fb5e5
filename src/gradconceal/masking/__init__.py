"""Gradient-masking audit: checks with thresholds and reasons, and a verdict on whether a defence hides gradients.

``audit(model, data)`` runs the concealment checks (gradient size, autograd vs finite differences, gradient
stability, forward equivalence, randomised output, the layer that shatters the gradient) and, unless
``quick=True``, the published attack-based checks (iterative vs single-step, eps sweep, black-box, transfer,
adaptive, random noise, loss progress). The same function is ``gradconceal.audit``.
"""

from gradconceal.masking.api import audit
from gradconceal.masking.result import CONFIRMED, NO_MASKING, SUSPECTED, VERDICTS, AuditReport, CheckResult

__all__ = ["AuditReport", "CheckResult", "CONFIRMED", "NO_MASKING", "SUSPECTED", "VERDICTS", "audit"]
