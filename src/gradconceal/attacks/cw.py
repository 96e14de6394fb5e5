"""Carlini & Wagner's L2 attack (2017) with a budget: success counts only within ``eps`` in L2.

Minimises ``||x' - x||_2^2 + c * max(z_y - max_{j != y} z_j, -kappa)`` over ``x' = (tanh(w) + 1) / 2`` with
Adam, and binary-searches ``c`` per sample (x10 until a first success, then bisection). A sample counts as
fooled as soon as an iterate is misclassified within the L2 budget; early stop drops it from the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gradconceal.attacks import checks
from gradconceal.attacks.base import Attack, RunState
from gradconceal.attacks.threat import Number, lp_norms, parse_number
from gradconceal.errors import GradconcealError

_TANH_SHRINK = 1 - 1e-6  # keeps atanh finite at pixels of exactly 0 or 1


class CW(Attack):
    """``CW(model, eps=8.0, steps=100, binary_search_steps=5, lr=0.01, initial_const=0.1, kappa=0)``."""

    name = "cw"
    norms = ("l2",)
    losses = ("margin",)

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: str = "l2",
        eps: Number = 8.0,
        steps: int = 100,
        binary_search_steps: int = 5,
        lr: float = 0.01,
        initial_const: float = 0.1,
        kappa: float = 0.0,
        targeted: bool = False,
        seed: int = 0,
        early_stop: bool = True,
        check_every: int = 3,
    ) -> None:
        super().__init__(model, norm=norm, eps=eps, loss="margin", targeted=targeted, seed=seed,
                         early_stop=early_stop, check_every=check_every)
        self.steps = checks.positive_int("steps", steps)
        self.binary_search_steps = checks.positive_int("binary_search_steps", binary_search_steps)
        self.lr = checks.positive_number("lr", lr)
        self.initial_const = checks.positive_number("initial_const", initial_const)
        self.kappa = parse_number(kappa, "kappa")
        if self.kappa < 0:
            raise GradconcealError(f"kappa must be a number >= 0, got {kappa!r}")

    def __repr__(self) -> str:
        return (f"CW({self.threat}, steps={self.steps}, binary_search_steps={self.binary_search_steps}, "
                f"lr={self.lr:g}, initial_const={self.initial_const:g}, kappa={self.kappa:g})")

    def run(self, images: Tensor, labels: Tensor, state: RunState) -> Tensor:
        count = images.shape[0]
        device = images.device
        const = torch.full((count,), self.initial_const, device=device)
        lower = torch.zeros(count, device=device)
        upper = torch.full((count,), float("inf"), device=device)
        smallest = torch.full((count,), float("inf"), device=device)
        closest = images.clone()  # smallest misclassified perturbation found (maybe beyond the budget)
        w_start = torch.atanh((images * 2 - 1) * _TANH_SHRINK)
        for _ in range(self.binary_search_steps):
            rows = state.remaining()
            if rows.numel() == 0:
                break
            origin, w = images[rows], w_start[rows].clone()
            c = const[rows]
            first, second = torch.zeros_like(w), torch.zeros_like(w)
            found = torch.zeros(rows.numel(), dtype=torch.bool, device=device)
            for step in range(self.steps):
                x = (torch.tanh(w) + 1) / 2
                margin, grad_margin, logits = state.loss_gradient(rows, x)
                distance = lp_norms(x - origin, "l2")
                misclassified = state.success(rows, logits)
                state.record(rows, x, logits, allowed=distance <= self.threat.eps)
                found |= misclassified
                improved = misclassified & (distance < smallest[rows])
                smallest[rows] = torch.where(improved, distance, smallest[rows])
                closest[rows] = torch.where(improved.view(-1, 1, 1, 1), x.detach(), closest[rows])
                # d/dx of ||x - x0||^2 + c * max(-margin, -kappa); the hinge is flat once margin >= kappa
                active = (margin < self.kappa).to(x.dtype).view(-1, 1, 1, 1)
                grad_x = 2 * (x - origin) - c.view(-1, 1, 1, 1) * active * grad_margin
                grad_w = grad_x * (1 - torch.tanh(w) ** 2) / 2
                first.mul_(0.9).add_(grad_w, alpha=0.1)
                second.mul_(0.999).addcmul_(grad_w, grad_w, value=0.001)
                corrected = (first / (1 - 0.9 ** (step + 1))) / ((second / (1 - 0.999 ** (step + 1))).sqrt() + 1e-8)
                w = w - self.lr * corrected
                if state.check_due(step, self.steps):
                    rows, origin, w, c, first, second, found = state.drop_fooled(rows, origin, w, c, first, second, found)
                    if rows.numel() == 0:  # every sample done: the remaining steps would act on nothing
                        break
            self._update_constants(rows, found, const, lower, upper)
        return closest

    @staticmethod
    def _update_constants(rows: Tensor, found: Tensor, const: Tensor, lower: Tensor, upper: Tensor) -> None:
        """Binary search on ``c``: lower it after a success, raise it (x10 until bounded) after a failure."""
        c = const[rows]
        upper[rows] = torch.where(found, torch.minimum(upper[rows], c), upper[rows])
        lower[rows] = torch.where(found, lower[rows], torch.maximum(lower[rows], c))
        bounded = torch.isfinite(upper[rows])
        const[rows] = torch.where(bounded, (lower[rows] + upper[rows]) / 2, c * 10)
