"""Projected gradient descent (Madry et al. 2018) in Linf, L2 and L1, with random start and restarts.

Linf steps along ``sign(grad)``, L2 along ``grad / ||grad||_2``; both then clip to the ball and the box
(as foolbox, which the paper's benchmark used for these norms). L1 has two steps:

* ``l1_step="dense"`` (the paper's preset): IBM ART's PGD with ``norm=1``, which RobustART used: a step of
  L1 length ``alpha`` along ``grad / ||grad||_1`` (spread over every pixel), clip to the box, then rescale
  the perturbation into the L1 ball. It is weak in high dimension: each pixel moves by a tiny amount.
* ``l1_step="sparse"`` (our stronger option): the step of L1 length ``alpha`` goes to the ``k`` movable
  pixels with the largest |gradient| (``k = ceil(l1_sparsity * C*H*W)``, 1 % by default, as SLIDE's 99th
  percentile), then the exact Euclidean projection onto the L1 ball intersected with the [0, 1] box.
"""

from __future__ import annotations

import math
from typing import Optional

from torch import Tensor, nn

from gradconceal.attacks import checks
from gradconceal.attacks.base import Attack, RunState
from gradconceal.attacks.geometry import ascent_direction, project_l1_box, random_in_ball, sparse_l1_direction
from gradconceal.attacks.threat import Number
from gradconceal.errors import GradconcealError

L1_STEPS = ("dense", "sparse")


class PGD(Attack):
    """``PGD(model, norm="linf", eps=8/255, steps=10, alpha=2/255, random_start=True)``.

    ``alpha`` (step size, same units as ``eps``) defaults to ``2.5 * eps / steps`` (Madry et al.). Each
    restart after the first attacks only the samples not fooled yet.
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
        self.restarts = checks.positive_int("restarts", restarts)
        self.l1_step = checks.choice("l1_step", l1_step, L1_STEPS)
        if self.l1_step == "sparse" and self.threat.norm != "l1":
            raise GradconcealError(f"l1_step='sparse' applies to norm 'l1' only, got norm {self.threat.norm!r}")
        self.l1_sparsity = checks.positive_number("l1_sparsity", l1_sparsity)
        if self.l1_sparsity > 1:
            raise GradconcealError(f"l1_sparsity must be in (0, 1], got {l1_sparsity!r}")

    @property
    def deterministic(self) -> bool:
        return not self.random_start

    def __repr__(self) -> str:
        extra = f", l1_step={self.l1_step!r}" if self.threat.norm == "l1" else ""
        return (f"PGD({self.threat}, steps={self.steps}, alpha={self.alpha:.4g}, random_start={self.random_start}, "
                f"restarts={self.restarts}, loss={self.loss!r}{extra})")

    def run(self, images: Tensor, labels: Tensor, state: RunState) -> Tensor:
        last = images.clone()
        for restart in range(self.restarts):
            rows = state.all_rows() if restart == 0 else state.remaining()
            if rows.numel() == 0:
                break
            origin = images[rows]
            x = self._start(origin, rows, state)
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

    def _start(self, origin: Tensor, rows: Tensor, state: RunState) -> Tensor:
        if not self.random_start:
            return origin.clone()
        delta = random_in_ball(rows, state.random, origin, self.threat.norm, self.threat.eps)
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
