"""Steps and projections in the three norms: steepest-ascent directions, random starts, exact L1-box projection.

Everything works on a batch (N, C, H, W) with one budget for all samples, in the tensor's own dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gradconceal.attacks.randomness import SampleRandom


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Reshape (N,) to (N, 1, 1, 1) (as many ones as ``like`` has trailing dims) for broadcasting."""
    return values.view(-1, *([1] * (like.ndim - 1)))


def finite_gradient(grad: Tensor) -> Tensor:
    """The gradient scaled per sample so its largest entry is 1, with NaN as 0 and +-inf kept as +-1.

    Concealed models give gradients of about 1e12 (inf in float16); scaling first keeps L2/L1
    normalisation finite without changing any direction.
    """
    flat = grad.flatten(1)
    infinite = torch.isinf(flat)
    flat = torch.nan_to_num(flat, nan=0.0, posinf=0.0, neginf=0.0)
    scale = flat.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(flat.dtype).tiny)
    flat = flat / scale
    flat = torch.where(infinite.any(dim=1, keepdim=True), torch.where(infinite, grad.flatten(1).sign(), 0.0), flat)
    return flat.view_as(grad)


def ascent_direction(grad: Tensor, norm: str) -> Tensor:
    """The unit-norm steepest-ascent direction: ``sign(g)`` (Linf), ``g/||g||_2`` (L2), ``g/||g||_1`` (L1, dense).

    The dense L1 direction is the one of IBM ART's PGD with ``norm=1``, which RobustART (the paper's
    benchmark) used: the step spreads its L1 length over every pixel in proportion to the gradient.
    """
    if norm == "linf":
        return grad.sign()
    unit = finite_gradient(grad)
    p = 2 if norm == "l2" else 1
    norms = unit.flatten(1).norm(p=p, dim=1).clamp_min(1e-12)
    return unit / _per_sample(norms, unit)


def sparse_l1_direction(grad: Tensor, images: Tensor, k: int) -> Tensor:
    """Steepest L1 ascent restricted to the ``k`` largest-|gradient| pixels that can still move: unit L1 length.

    Pixels already at the box edge the gradient pushes towards are left out (they cannot move), so each
    step spends its whole length; this is the top-k step of Tramer & Boneh's SLIDE and of APGD-L1.
    """
    flat = finite_gradient(grad).flatten(1)
    x = images.flatten(1)
    movable = ((flat > 0) & (x < 1)) | ((flat < 0) & (x > 0))
    score = torch.where(movable, flat.abs(), torch.full_like(flat, -1.0))
    k = max(1, min(int(k), flat.shape[1]))
    top = score.topk(k, dim=1).indices
    chosen = torch.zeros_like(flat).scatter_(1, top, 1.0) * movable
    count = chosen.sum(dim=1, keepdim=True).clamp_min(1.0)
    return (flat.sign() * chosen / count).view_as(grad)


def project_l1_box(delta: Tensor, images: Tensor, eps: float) -> Tensor:
    """Exact Euclidean projection of each ``delta`` onto ``{d : ||d||_1 <= eps, 0 <= images + d <= 1}``.

    The solution is ``sign(v) * clip(|v| - lam, 0, cap)`` with ``cap`` the room to the box edge on
    v's side and ``lam >= 0`` the smallest value meeting the budget. ``sum clip(|v| - lam, 0, cap)``
    is piecewise linear in ``lam`` with kinks at ``|v| - cap`` and ``|v|``; sorting the kinks gives
    ``lam`` exactly (in float64), no iteration.
    """
    shape, dtype = delta.shape, delta.dtype
    v = delta.flatten(1).double()
    x = images.flatten(1).double()
    cap = torch.where(v >= 0, 1.0 - x, x).clamp_min(0.0)
    size = v.abs()
    boxed = torch.minimum(size, cap)
    over = boxed.sum(dim=1) > eps
    if not bool(over.any()):
        return (v.sign() * boxed).to(dtype).view(shape)
    a, c = size[over], cap[over]
    kinks = torch.cat([a - c, a], dim=1)
    slopes = torch.cat([-torch.ones_like(a), torch.ones_like(a)], dim=1)
    kinks, order = kinks.sort(dim=1)
    slopes = slopes.gather(1, order).cumsum(dim=1)  # slope of the sum just after each kink
    gaps = kinks.diff(dim=1)
    total = c.sum(dim=1, keepdim=True)  # the sum for lam below every kink
    values = total + torch.cat([torch.zeros_like(total), (slopes[:, :-1] * gaps).cumsum(dim=1)], dim=1)
    first_below = (values <= eps).to(torch.int64).argmax(dim=1, keepdim=True)  # exists: the sum is 0 at max|v|
    before = (first_below - 1).clamp_min(0)
    lam = kinks.gather(1, before) + (eps - values.gather(1, before)) / slopes.gather(1, before).clamp(max=-1.0)
    result = boxed.clone()
    result[over] = (a - lam.clamp_min(0.0)).clamp_min(0.0).minimum(c)
    return (v.sign() * result).to(dtype).view(shape)


def random_in_ball(rows: Tensor, random: SampleRandom, like: Tensor, norm: str, eps: float) -> Tensor:
    """Points drawn uniformly from the ``norm`` ball of radius ``eps`` (one per row), shaped like ``like``.

    Linf: uniform in the cube. L2: Gaussian direction, radius ``eps * u**(1/d)``. L1: signed
    exponentials divided by their sum plus one more exponential (uniform in the cross-polytope).
    """
    shape = tuple(like.shape[1:])
    d = math.prod(shape)
    if norm == "linf":
        return (random.uniform(rows, shape) * 2 - 1).mul_(eps).to(like.dtype)
    if norm == "l2":
        direction = random.normal(rows, shape).flatten(1)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        radius = random.uniform(rows, (1,)).pow(1.0 / d) * eps
        return (direction * radius).view(-1, *shape).to(like.dtype)
    draws = random.exponential(rows, (d + 1,))
    signs = random.uniform(rows, (d,)).lt(0.5).to(draws.dtype) * 2 - 1
    point = draws[:, :d] / draws.sum(dim=1, keepdim=True) * signs * eps
    return point.view(-1, *shape).to(like.dtype)
