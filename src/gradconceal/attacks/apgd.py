"""APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness"): PGD without a step-size choice.

The step starts at ``2 * eps`` and is halved at checkpoints (after 22 % of the steps, then at shrinking
intervals down to 6 %) when fewer than ``rho`` of the steps since the last checkpoint raised the loss, or
when the step was kept last time and the best loss has not moved; the iterate then restarts from the
best point. Steps use momentum 0.75. Losses: ``ce``, ``dlr`` (shift- and scale-invariant), ``margin``.

``targeted=True`` without explicit targets is AutoAttack's APGD-T: the targeted loss towards each of the
``n_target_classes`` most likely wrong classes in turn (``restarts`` runs each), success = misclassified.

Starts as PGD's (``gradconceal.attacks.pgd.start_offset``): ``start="foolbox"`` (default) draws every run's
start uniformly in the ball; ``"clean-first"`` starts each target's first run at the clean image and its
restarts at random points.
"""

from __future__ import annotations

import math
from typing import List

import torch
from torch import Tensor, nn

from gradconceal.attacks import checks
from gradconceal.attacks.base import Attack, RunState
from gradconceal.attacks.geometry import ascent_direction
from gradconceal.attacks.pgd import STARTS, start_offset
from gradconceal.attacks.threat import Number
from gradconceal.errors import GradconcealError


def checkpoints(steps: int) -> List[int]:
    """Iterations after which APGD may halve its step: ``p_0 = 0, p_1 = 0.22, p_j+1 = p_j + max(p_j - p_j-1 - 0.03, 0.06)``."""
    points, previous, current = [], 0.0, 0.22
    while current <= 1:
        points.append(math.ceil(current * steps))
        previous, current = current, current + max(current - previous - 0.03, 0.06)
    return sorted(set(p for p in points if 0 < p < steps))


class APGD(Attack):
    """``APGD(model, norm="linf", eps=8/255, steps=100, loss="ce")``; ``loss="dlr", targeted=True`` is APGD-T."""

    name = "apgd"
    norms = ("linf", "l2")

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: str = "linf",
        eps: Number = 8 / 255,
        steps: int = 100,
        restarts: int = 1,
        loss: str = "ce",
        targeted: bool = False,
        n_target_classes: int = 9,
        rho: float = 0.75,
        momentum: float = 0.75,
        random_start: bool = True,
        start: str = "foolbox",
        seed: int = 0,
        early_stop: bool = True,
        check_every: int = 3,
    ) -> None:
        super().__init__(model, norm=norm, eps=eps, loss=loss, targeted=targeted, seed=seed,
                         early_stop=early_stop, check_every=check_every)
        self.steps = checks.positive_int("steps", steps)
        self.restarts = checks.positive_int("restarts", restarts)
        self.n_target_classes = checks.positive_int("n_target_classes", n_target_classes)
        self.rho = checks.positive_number("rho", rho)
        self.momentum = checks.positive_number("momentum", momentum)
        if self.rho > 1 or self.momentum > 1:
            raise GradconcealError(f"rho and momentum must be in (0, 1], got rho={rho!r}, momentum={momentum!r}")
        self.random_start = checks.boolean("random_start", random_start)
        self.start = checks.choice("start", start, STARTS)
        self._checkpoints = set(checkpoints(self.steps))

    @property
    def deterministic(self) -> bool:
        return not self.random_start or (self.start == "clean-first" and self.restarts == 1)

    def __repr__(self) -> str:
        kind = "APGD-T" if self.targeted else "APGD"
        return f"{kind}({self.threat}, steps={self.steps}, restarts={self.restarts}, loss={self.loss!r})"

    def run(self, images: Tensor, labels: Tensor, state: RunState) -> Tensor:
        last = images.clone()
        rounds = 1
        if self.targeted and state.goal is None:
            rounds = min(self.n_target_classes, int(state.clean_logits.shape[1]) - 1)
        for target_rank in range(rounds):
            if self.targeted and state.goal is None:
                state.targets = state.wrong_class(target_rank)
            for restart in range(self.restarts):
                rows = state.all_rows() if target_rank == 0 and restart == 0 else state.remaining()
                if rows.numel() == 0:
                    return last
                rows, x = self._single_run(images, rows, state, restart)
                last[rows] = x
        return last

    def _single_run(self, images: Tensor, rows: Tensor, state: RunState, restart: int = 0):
        """One APGD run from a fresh start on ``rows``; returns the rows still running and their best points."""
        norm, eps = self.threat.norm, self.threat.eps
        origin = images[rows]
        if self.random_start and not (self.start == "clean-first" and restart == 0):
            offset = start_offset(origin, rows, state.random, norm, eps, random_start=True, start=self.start,
                                  restart=restart)
            x = self.threat.project(origin, origin + offset)
        else:
            x = origin.clone()
        loss, grad, logits = state.loss_gradient(rows, x)
        state.record(rows, x, logits)
        count = rows.numel()
        step = torch.full((count,), 2 * eps, device=x.device, dtype=x.dtype)
        x_best, loss_best, grad_best = x.clone(), loss.clone(), grad.clone()
        x_previous = x.clone()
        loss_previous = loss.clone()
        increases = torch.zeros(count, device=x.device)
        loss_best_at_check = loss_best.clone()
        reduced_at_check = torch.ones(count, dtype=torch.bool, device=x.device)
        since_check = 0
        for iteration in range(self.steps):
            weight = self.momentum if iteration > 0 else 1.0
            direction = ascent_direction(grad, norm)
            z = self.threat.project(origin, x + step.view(-1, 1, 1, 1) * direction)
            moved = self.threat.project(origin, x + weight * (z - x) + (1 - weight) * (x - x_previous))
            x_previous, x = x, moved
            loss, grad, logits = state.loss_gradient(rows, x)
            state.record(rows, x, logits)
            increases += (loss > loss_previous).float()
            loss_previous = loss
            better = loss > loss_best
            x_best = torch.where(better.view(-1, 1, 1, 1), x, x_best)
            grad_best = torch.where(better.view(-1, 1, 1, 1), grad, grad_best)
            loss_best = torch.where(better, loss, loss_best)
            since_check += 1
            if iteration + 1 in self._checkpoints:
                oscillating = increases <= self.rho * since_check
                stalled = ~reduced_at_check & (loss_best_at_check >= loss_best)
                reduce = oscillating | stalled
                reduced_at_check = reduce
                loss_best_at_check = loss_best.clone()
                step = torch.where(reduce, step / 2, step)
                x = torch.where(reduce.view(-1, 1, 1, 1), x_best, x)
                grad = torch.where(reduce.view(-1, 1, 1, 1), grad_best, grad)
                increases.zero_()
                since_check = 0
            if state.check_due(iteration, self.steps):
                (rows, origin, x, x_previous, grad, step, x_best, loss_best, grad_best, loss_previous,
                 increases, loss_best_at_check, reduced_at_check) = state.drop_fooled(
                    rows, origin, x, x_previous, grad, step, x_best, loss_best, grad_best, loss_previous,
                    increases, loss_best_at_check, reduced_at_check)
                if rows.numel() == 0:  # every sample fooled: the remaining steps would act on nothing
                    break
        return rows, x_best
