"""Gradient-masking audit: checks with thresholds and reasons, and a verdict on whether a defence hides gradients.

``audit(model, data)`` runs the concealment checks (gradient size, autograd vs finite differences, gradient
stability, forward equivalence, randomised output, the layer that shatters the gradient) and, unless
``quick=True``, the published attack-based checks (iterative vs single-step, eps sweep, black-box, transfer,
adaptive, random noise, loss progress).
"""

import sys
import types

from gradconceal.audit.api import audit
from gradconceal.audit.result import CONFIRMED, NO_MASKING, SUSPECTED, VERDICTS, AuditReport, CheckResult

__all__ = ["AuditReport", "CheckResult", "CONFIRMED", "NO_MASKING", "SUSPECTED", "VERDICTS", "audit"]


class _CallableModule(types.ModuleType):
    """``gradconceal.audit`` is both this package and, called, the ``audit`` function.

    ``from gradconceal import audit`` finds the subpackage once it is imported (a package attribute wins
    over the top-level lazy ``__getattr__``), so the package itself must be callable for that import to
    give users the function the docs promise.
    """

    def __call__(self, *args, **kwargs) -> AuditReport:
        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
