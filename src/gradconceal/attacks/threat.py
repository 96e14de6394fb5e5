"""The threat model every attack shares: a norm and a budget ``eps`` in [0, 1]-pixel units.

``ThreatModel("linf", "8/255")`` validates once (clear errors naming the argument), measures perturbations
(``norms``) and projects candidates back into the budget and the [0, 1] box (``project``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple, Union

import torch
from torch import Tensor

from gradconceal import _validate as check
from gradconceal.errors import GradconcealError, suggest

NORMS: Tuple[str, ...] = ("linf", "l2", "l1")
_NORM_ALIASES = {"linf": "linf", "inf": "linf", "l_inf": "linf", "l-inf": "linf", "l2": "l2", "l1": "l1"}

Number = Union[int, float, str]


def parse_number(value: object, name: str) -> float:
    """A finite float from a number or a string such as ``"8/255"`` or ``"0.03"``; errors name ``name``."""
    return check.number(value, name, fractions=True)


def parse_norm(norm: object) -> str:
    """The canonical norm name (``linf``, ``l2`` or ``l1``) for user spellings such as ``"Linf"`` or ``"L2"``."""
    key = str(norm).strip().lower() if isinstance(norm, str) else None
    if key is None or key not in _NORM_ALIASES:
        raise GradconcealError(f"norm must be one of {list(NORMS)}, got {norm!r}{suggest(str(norm).lower(), NORMS)}")
    return _NORM_ALIASES[key]


def format_eps(eps: float) -> str:
    """``8/255`` for budgets that are whole 255ths, else the number (``8``, ``0.5``, ``1600``)."""
    k = eps * 255
    if abs(k - round(k)) < 1e-6 and eps < 1 and round(k) > 0:
        return f"{round(k)}/255"
    return f"{eps:g}"


@dataclass(frozen=True, init=False)
class ThreatModel:
    """A perturbation budget: ``||x_adv - x||_norm <= eps`` and ``0 <= x_adv <= 1``."""

    norm: str = "linf"
    eps: float = 8 / 255

    def __init__(self, norm: str = "linf", eps: Number = 8 / 255) -> None:
        """Check both once: ``norm`` in any spelling (``"Linf"``), ``eps`` a number or a string such as ``"8/255"``."""
        canonical = parse_norm(norm)
        budget = check.number(eps, "eps", minimum=0, above=True, fractions=True, detail=f" for norm {canonical!r}")
        if canonical == "linf":
            check.check_range(budget, "eps", maximum=1, shown=eps, detail=" for norm 'linf' (pixels are in [0, 1])")
        object.__setattr__(self, "norm", canonical)
        object.__setattr__(self, "eps", budget)

    def __str__(self) -> str:
        label = {"linf": "Linf", "l2": "L2", "l1": "L1"}[self.norm]
        return f"{label} {format_eps(self.eps)}"

    def max_distance(self, image_shape: Sequence[int]) -> float:
        """The largest distance in this norm between two images of ``image_shape`` (C, H, W) in [0, 1]."""
        size = math.prod(int(v) for v in image_shape)
        return {"linf": 1.0, "l2": math.sqrt(size), "l1": float(size)}[self.norm]

    def check_image_shape(self, image_shape: Sequence[int]) -> None:
        """Raise if ``eps`` exceeds the largest possible distance for images of ``image_shape``."""
        largest = self.max_distance(image_shape)
        if self.eps > largest * (1 + 1e-9):
            shape = "x".join(str(int(v)) for v in image_shape)
            raise GradconcealError(
                f"eps={self.eps:g} for norm {self.norm!r} exceeds the largest possible distance between two "
                f"{shape} images in [0, 1] ({largest:.6g}); every image would be inside the budget"
            )

    def norms(self, delta: Tensor) -> Tensor:
        """Per-sample norm of a batch of perturbations (float32, shape (N,))."""
        return lp_norms(delta, self.norm)

    def contains(self, original: Tensor, candidate: Tensor, rtol: float = 1e-5) -> Tensor:
        """Bool per sample: ``candidate`` lies in [0, 1] and within the budget (up to float rounding, ``rtol``)."""
        in_box = ((candidate >= 0) & (candidate <= 1)).flatten(1).all(dim=1)
        return in_box & (self.norms(candidate - original) <= self.eps * (1 + rtol)).to(in_box.device)

    def project(self, original: Tensor, candidate: Tensor) -> Tensor:
        """``candidate`` moved into the budget around ``original`` (rescaled for L2/L1) and into [0, 1]."""
        delta = candidate - original
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            norms = lp_norms(delta, self.norm).to(delta.dtype)
            factor = (self.eps / norms.clamp_min(1e-30)).clamp(max=1.0)
            delta = delta * factor.view(-1, *([1] * (delta.ndim - 1)))
        return (original + delta).clamp(0.0, 1.0)


def lp_norms(delta: Tensor, norm: str) -> Tensor:
    """Per-sample L-inf, L2 or L1 norm of ``delta`` (N, ...), computed in float32 or wider."""
    flat = delta.detach().flatten(1)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    return flat.abs().sum(dim=1)
