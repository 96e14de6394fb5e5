"""Projected gradient descent (Madry et al. 2018) in Linf, L2 and L1, with random start and restarts.

Linf steps along ``sign(grad)``, L2 along ``grad / ||grad||_2``; both then clip to the ball and the box
(as foolbox, which the paper's benchmark used for these norms). L1 has two steps:

* ``l1_step="dense"`` (the paper's preset): IBM ART's PGD with ``norm=1``, which RobustART used: a step of
  L1 length ``alpha`` along ``grad / ||grad||_1`` (spread over every pixel), clip to the box, then rescale
  the perturbation into the L1 ball. It is weak in high dimension: each pixel moves by a tiny amount.
* ``l1_step="sparse"`` (our stronger option): the step of L1 length ``alpha`` goes to the ``k`` movable
  pixels with the largest |gradient| (``k = ceil(l1_sparsity * C*H*W)``, 1 % by default, as SLIDE's 99th
  percentile), then the exact Euclidean projection onto the L1 ball intersected with the [0, 1] box.

Where runs start (``start``, with ``random_start=True``):

* ``"foolbox"`` (default): every run starts uniformly in the ball (foolbox's random start, which RobustART and
  so the paper preset use); in high dimension that is next to the ball's surface, and on the Fashion-MNIST CNN
  it makes PGD-L2 weaker than starting at the clean image (docs/attacks.md).
* ``"clean-first"``: the first run starts at the clean image, so a random start never makes the attack weaker
  than plain PGD; each restart starts at a random point (``restart_offset``: Linf uniform in the cube; L2 and
  L1 a uniform direction times a radius uniform in [0, eps], as torchattacks' PGDL2).
"""

from __future__ import annotations

import math
from typing import Optional

from torch import Tensor, nn

from gradconceal.attacks import checks
from gradconceal.attacks.base import Attack, RunState
from gradconceal.attacks.geometry import ascent_direction, project_l1_box, random_in_ball, sparse_l1_direction
from gradconceal.attacks.randomness import SampleRandom
from gradconceal.attacks.threat import Number
from gradconceal.errors import GradconcealError

L1_STEPS = ("dense", "sparse")
STARTS = ("clean-first", "foolbox")


def restart_offset(rows: Tensor, random: SampleRandom, like: Tensor, norm: str, eps: float) -> Tensor:
    """A restart's random offset, one per row: Linf uniform in the cube; L2 and L1 a direction uniform on the
    norm's unit sphere times a radius uniform in [0, eps] (torchattacks' PGDL2), so restarts also try points
    near the clean image instead of only next to the ball's surface (where a uniform point of the ball lies)."""
    shape = tuple(like.shape[1:])
    if norm == "linf":
        return random_in_ball(rows, random, like, norm, eps)
    if norm == "l2":
        direction = random.normal(rows, shape).flatten(1)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
    else:  # uniform on the L1 sphere: normalised exponentials (uniform on the simplex) with random signs
        size = math.prod(shape)
        draws = random.exponential(rows, (size,))
        signs = random.uniform(rows, (size,)).lt(0.5).to(draws.dtype) * 2 - 1
        direction = draws / draws.sum(dim=1, keepdim=True) * signs
    radius = random.uniform(rows, (1,)) * eps
    return (direction * radius).view(-1, *shape).to(like.dtype)


def start_offset(origin: Tensor, rows: Tensor, random: SampleRandom, norm: str, eps: float, *, random_start: bool,
                 start: str, restart: int) -> Tensor:
    """Where run ``restart`` (0 = the first) of a PGD-style attack starts, as an offset from the clean image
    (before projection to the box).

    ``start="clean-first"``: zero for the first run, ``restart_offset`` for the others; ``"foolbox"``: uniform in
    the ball for every run. Without ``random_start`` every run starts at the clean image (zero offset).
    """
    if not random_start or (start == "clean-first" and restart == 0):
        return origin.new_zeros(origin.shape)
    if start == "clean-first":
        return restart_offset(rows, random, origin, norm, eps)
    return random_in_ball(rows, random, origin, norm, eps)


class PGD(Attack):
    """``PGD(model, norm="linf", eps=8/255, steps=10, alpha=2/255, random_start=True)``.

    ``alpha`` (step size, same units as ``eps``) defaults to ``2.5 * eps / steps`` (Madry et al.). Each
    restart after the first attacks only the samples not fooled yet. ``start="clean-first"`` runs the first
    run from the clean image and the restarts from random points (never weaker than no random start);
    ``"foolbox"`` (default, the paper preset's) starts every run uniformly in the ball.
    """

    name = "pgd"

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: str = "linf",
        eps: Number = 8 / 255,
        steps: int = 10,
        alpha: Optional[Number] = None,
        random_start: bool = True,
        start: str = "foolbox",
        restarts: int = 1,
        loss: str = "ce",
        targeted: bool = False,
        l1_step: str = "dense",
        l1_sparsity: float = 0.01,
        seed: int = 0,
        early_stop: bool = True,
        check_every: int = 3,
    ) -> None:
        super().__init__(model, norm=norm, eps=eps, loss=loss, targeted=targeted, seed=seed,
                         early_stop=early_stop, check_every=check_every)
        self.steps = checks.positive_int("steps", steps)
        self.alpha = checks.positive_number("alpha", alpha) if alpha is not None else 2.5 * self.threat.eps / self.steps
        self.random_start = checks.boolean("random_start", random_start)
        self.start = checks.choice("start", start, STARTS)
        self.restarts = checks.positive_int("restarts", restarts)
        self.l1_step = checks.choice("l1_step", l1_step, L1_STEPS)
        if self.l1_step == "sparse" and self.threat.norm != "l1":
            raise GradconcealError(f"l1_step='sparse' applies to norm 'l1' only, got norm {self.threat.norm!r}")
        self.l1_sparsity = checks.positive_number("l1_sparsity", l1_sparsity)
        if self.l1_sparsity > 1:
            raise GradconcealError(f"l1_sparsity must be in (0, 1], got {l1_sparsity!r}")

    @property
    def deterministic(self) -> bool:
        return not self.random_start or (self.start == "clean-first" and self.restarts == 1)

    def __repr__(self) -> str:
        extra = f", l1_step={self.l1_step!r}" if self.threat.norm == "l1" else ""
        return (f"PGD({self.threat}, steps={self.steps}, alpha={self.alpha:.4g}, random_start={self.random_start}, "
                f"start={self.start!r}, restarts={self.restarts}, loss={self.loss!r}{extra})")

    def run(self, images: Tensor, labels: Tensor, state: RunState) -> Tensor:
        last = images.clone()
        for restart in range(self.restarts):
            rows = state.all_rows() if restart == 0 else state.remaining()
            if rows.numel() == 0:
                break
            origin = images[rows]
            x = self._start(origin, rows, state, restart)
            for step in range(self.steps):
                _, grad, logits = state.loss_gradient(rows, x)
                state.record(rows, x, logits)
                x = self._step(x, origin, grad)
                if state.check_due(step, self.steps):
                    rows, x, origin = state.drop_fooled(rows, x, origin)
                    if rows.numel() == 0:  # every sample fooled: nothing left to attack
                        break
            last[rows] = x
            if restart + 1 < self.restarts:
                state.record(rows, x, state.logits(rows, x))
        return last

    def _start(self, origin: Tensor, rows: Tensor, state: RunState, restart: int) -> Tensor:
        delta = start_offset(origin, rows, state.random, self.threat.norm, self.threat.eps,
                             random_start=self.random_start, start=self.start, restart=restart)
        if self.l1_step == "sparse":
            return origin + project_l1_box(delta, origin, self.threat.eps)
        return (origin + delta).clamp_(0.0, 1.0)

    def _step(self, x: Tensor, origin: Tensor, grad: Tensor) -> Tensor:
        norm, eps = self.threat.norm, self.threat.eps
        if norm != "l1":
            return self.threat.project(origin, x + self.alpha * ascent_direction(grad, norm))
        if self.l1_step == "sparse":
            k = math.ceil(self.l1_sparsity * grad[0].numel())
            moved = x + self.alpha * sparse_l1_direction(grad, x, k)
            return origin + project_l1_box(moved - origin, origin, eps)
        # ART's order: step, clip to the box, then rescale into the ball (which keeps it in the box)
        return self.threat.project(origin, (x + self.alpha * ascent_direction(grad, "l1")).clamp_(0.0, 1.0))
