"""FAB (Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive boundary attack").

A minimum-norm attack in Linf and L2. Each step linearises the model at the iterate ``x``: for the wrong class
``j`` whose decision boundary is closest (``|z_j - z_y| / ||grad(z_j - z_y)||_dual``; FAB-T: the target alone)
it projects both ``x`` and the clean image ``x0`` onto that boundary's hyperplane intersected with the [0, 1]
box (exact minimal-norm projections, ``boundary_step``), and moves to

    ((x + eta * d_x) * (1 - a) + (x0 + eta * d_x0) * a).clamp(0, 1),   a = min(|d_x| / (|d_x| + |d_x0|), alpha_max)

so that it crosses the boundary (overshoot ``eta``) while staying close to ``x0``. Once ``x`` fools the model
it is kept if its norm is the smallest so far, and pulled back towards ``x0`` (``x0 + beta * (x - x0)``).

The first run starts at the clean image; each restart starts at a random point of radius
``min(best norm so far, eps) / 2`` (the paper's rule). ``targeted=True`` without explicit targets is FAB-T as
AutoAttack runs it: one run per each of the ``n_target_classes`` most likely wrong classes; success is any
misclassification. With early stop (default), later runs attack only the samples not fooled within ``eps``
(AutoAttack's cascade); ``early_stop=False`` runs every restart and target on every sample, so that the
minimal norms are the smallest over all runs. A run is never cut short: its point is to shrink the norm.

``FAB.perturb`` returns a ``FABResult``: the usual per-sample record plus ``min_norm``, the smallest norm of a
perturbation found that fools the model (0 for samples the model already gets wrong and for samples with
non-finite logits or gradients, which are never robust; +inf for a sample never fooled). Robust accuracy at
any budget up to ``eps`` follows from it with ``robust_accuracy_at``; above ``eps`` it is an upper bound
(FAB minimises the norm, but the cascade stops at ``eps``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from gradconceal.attacks import checks
from gradconceal.attacks.base import Attack, AttackResult, RunState
from gradconceal.attacks.randomness import sample_rows
from gradconceal.attacks.threat import Number, lp_norms
from gradconceal.errors import GradconcealError

_EXCLUDED = 1e10  # distance given to the true class so that it is never the closest boundary


@dataclass
class FABResult(AttackResult):
    """``AttackResult`` plus ``min_norm``: per sample, the smallest perturbation norm found that fools the model
    (0 when the clean image is already wrong or the sample is non-finite, +inf when never fooled); on the CPU."""

    min_norm: Optional[Tensor] = None

    def robust_accuracy_at(self, eps_values: Union[float, Sequence[float]]) -> List[float]:
        """Robust accuracy at each budget in ``eps_values`` (``robust_accuracy_at(self.min_norm, ...)``)."""
        assert self.min_norm is not None  # set by FAB.perturb
        return robust_accuracy_at(self.min_norm, eps_values)


def robust_accuracy_at(min_norms: Tensor, eps_values: Union[float, Sequence[float]], rtol: float = 1e-5) -> List[float]:
    """Share of samples whose smallest fooling norm exceeds each budget: robust accuracy at every ``eps`` at once.

    ``min_norms`` as in ``FABResult.min_norm`` (0: not robust at any budget; +inf: robust at every budget). A norm
    within ``rtol`` of a budget counts as inside it, as ``ThreatModel.contains`` does.
    """
    values = [float(eps_values)] if isinstance(eps_values, (int, float)) else [float(e) for e in eps_values]
    if min_norms.ndim != 1 or min_norms.numel() == 0:
        raise GradconcealError(f"min_norms must be a non-empty 1-d tensor, got shape {tuple(min_norms.shape)}")
    if any(not math.isfinite(e) or e < 0 for e in values):
        raise GradconcealError(f"eps_values must be finite and >= 0, got {values}")
    norms = min_norms.detach().double().cpu()
    if bool(torch.isnan(norms).any()) or bool((norms < 0).any()):
        raise GradconcealError("min_norms must be >= 0 or +inf (no NaN)")
    return [float((norms > e * (1 + rtol)).double().mean()) for e in values]


def _level(weight: Tensor, breakpoint: Tensor, target: Tensor) -> Tensor:
    """Per row, the smallest ``s >= 0`` with ``sum_i weight_i * min(s, breakpoint_i) = target`` (weights and
    target >= 0); the largest breakpoint where even ``s = inf`` falls short. The sum is piecewise linear and
    non-decreasing in ``s`` with kinks at the breakpoints, so sorting them gives ``s`` exactly."""
    kinks, order = breakpoint.sort(dim=1)
    weights = weight.gather(1, order)
    weight_below = weights.cumsum(dim=1)  # weight of the coordinates already capped at each kink
    capped = (weights * kinks).cumsum(dim=1)
    total = weight_below[:, -1:]
    at_kinks = kinks * (total - weight_below) + capped  # the sum at s = each kink
    reached = at_kinks >= target.unsqueeze(1)
    first = reached.to(torch.int64).argmax(dim=1, keepdim=True)
    before = (first - 1).clamp_min(0)
    has_before = first > 0
    weight_before = torch.where(has_before, weight_below.gather(1, before), torch.zeros_like(total))
    capped_before = torch.where(has_before, capped.gather(1, before), torch.zeros_like(total))
    slope = (total - weight_before).clamp_min(torch.finfo(total.dtype).tiny)
    level = ((target.unsqueeze(1) - capped_before) / slope).squeeze(1)
    return torch.where(reached.any(dim=1), level, kinks[:, -1])


def boundary_step(points: Tensor, normal: Tensor, offset: Tensor, norm: str) -> Tensor:
    """The smallest ``d`` in ``norm`` (linf or l2) with ``<normal, points + d> = offset`` and ``points + d`` in
    [0, 1], per row of the flat (N, D) inputs; where the box makes the hyperplane unreachable, the ``d`` that
    gets closest (every coordinate moved to its box edge on the side that helps). Computed in float64."""
    t, w = points.double(), normal.double()
    gap = offset.double() - (w * t).sum(dim=1)  # <w, d> must equal gap
    side = torch.where(gap >= 0, 1.0, -1.0).to(w.dtype).unsqueeze(1)
    v = w * side
    room = torch.where(v > 0, 1.0 - t, t).clamp_min(0.0)
    moves = v != 0
    if norm == "linf":
        weight, scale = v.abs(), torch.ones_like(v)
        breakpoint = torch.where(moves, room, torch.zeros_like(room))
    else:
        weight, scale = v * v, v.abs()
        breakpoint = torch.where(moves, room / v.abs().clamp_min(1e-300), torch.zeros_like(room))
    level = _level(weight, breakpoint, gap.abs())
    d = v.sign() * scale * torch.minimum(level.unsqueeze(1), breakpoint)
    return d.to(points.dtype)


class FAB(Attack):
    """``FAB(model, norm="linf", eps=8/255, steps=100)``; ``targeted=True`` is FAB-T (``n_target_classes`` runs).

    ``eps`` is the budget success is judged at (and the scale of restarts); ``perturb`` returns a ``FABResult``
    whose ``min_norm`` gives robust accuracy at every smaller budget.
    """

    name = "fab"
    norms = ("linf", "l2")
    losses = ("ce",)  # FAB follows logit differences, not a loss; the setting exists only in the base

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: str = "linf",
        eps: Number = 8 / 255,
        steps: int = 100,
        restarts: int = 1,
        targeted: bool = False,
        n_target_classes: int = 9,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        seed: int = 0,
        early_stop: bool = True,
    ) -> None:
        super().__init__(model, norm=norm, eps=eps, targeted=targeted, seed=seed, early_stop=early_stop)
        self.steps = checks.positive_int("steps", steps)
        self.restarts = checks.positive_int("restarts", restarts)
        self.n_target_classes = checks.positive_int("n_target_classes", n_target_classes)
        self.alpha_max = checks.positive_number("alpha_max", alpha_max)
        if self.alpha_max > 1:
            raise GradconcealError(f"alpha_max must be in (0, 1], got {alpha_max!r}")
        self.eta = checks.positive_number("eta", eta)
        if self.eta < 1:
            raise GradconcealError(f"eta must be >= 1 (it overshoots the boundary), got {eta!r}")
        self.beta = checks.positive_number("beta", beta)
        if self.beta >= 1:
            raise GradconcealError(f"beta must be in (0, 1), got {beta!r}")
        self._found: Optional[Tensor] = None  # min norms of the call in progress, read back by perturb

    @property
    def deterministic(self) -> bool:
        return self.restarts == 1

    def __repr__(self) -> str:
        kind = "FAB-T" if self.targeted else "FAB"
        return f"{kind}({self.threat}, steps={self.steps}, restarts={self.restarts})"

    def perturb(
        self,
        images: Tensor,
        labels: Tensor,
        sample_seeds: Optional[Sequence[int]] = None,
        *,
        target_labels: Optional[Tensor] = None,
        clean_logits: Optional[Tensor] = None,
    ) -> FABResult:
        """``Attack.perturb`` plus ``min_norm`` per sample (see ``FABResult``)."""
        self._found = None
        try:
            result = super().perturb(images, labels, sample_seeds, target_labels=target_labels,
                                     clean_logits=clean_logits)
            min_norm = torch.zeros(len(result), dtype=torch.float32)
            active = result.clean_correct.nonzero().flatten()
            if self._found is not None and active.numel():
                min_norm[active] = self._found.float().cpu()
        finally:
            self._found = None
        # the verified final image may fool a random model by chance: a fooling image bounds the minimal norm
        min_norm = torch.where(result.fooled, torch.minimum(min_norm, result.norms.float()), min_norm)
        assert result.non_finite is not None
        min_norm = torch.where(result.non_finite, torch.zeros_like(min_norm), min_norm)
        return FABResult(**{**result.__dict__, "min_norm": min_norm})

    def run(self, images: Tensor, labels: Tensor, state: RunState) -> Tensor:
        count = images.shape[0]
        best = images.clone()
        min_norm = torch.full((count,), math.inf, device=images.device)
        best_logits = state.clean_logits.clone()
        fixed_targets = state.goal is not None or not self.targeted
        rounds = 1 if fixed_targets else min(self.n_target_classes, int(state.clean_logits.shape[1]) - 1)
        for target_rank in range(rounds):
            if not fixed_targets:
                state.targets = state.wrong_class(target_rank)
            for restart in range(self.restarts):
                if self.early_stop and (target_rank or restart):
                    rows = (~(min_norm <= self.threat.eps * (1 + 1e-5))).nonzero().flatten()
                else:
                    rows = state.all_rows()
                if rows.numel() == 0:
                    break
                self._single_run(images, rows, state, restart, best, min_norm, best_logits)
        within = min_norm <= self.threat.eps * (1 + 1e-5)
        state.record(state.all_rows(), best, best_logits, allowed=within)
        self._found = min_norm
        return torch.where(torch.isfinite(min_norm).view(-1, 1, 1, 1), best, images)

    def _single_run(self, images: Tensor, rows: Tensor, state: RunState, restart: int, best: Tensor,
                    min_norm: Tensor, best_logits: Tensor) -> None:
        """One FAB run on ``rows``; updates ``best``, ``min_norm`` and ``best_logits`` in place."""
        norm = self.threat.norm
        origin = images[rows]
        x = origin.clone()
        if restart > 0:
            radius = torch.minimum(min_norm[rows], torch.full_like(min_norm[rows], self.threat.eps)) / 2
            x = (origin + self._random_direction(rows, state, origin) * radius.view(-1, 1, 1, 1)).clamp(0.0, 1.0)
        flat_origin = origin.flatten(1)
        for _ in range(self.steps):
            gaps, grads = self._boundaries(rows, x, state)
            dual = grads.flatten(2).abs().sum(dim=2) if norm == "linf" else grads.flatten(2).norm(dim=2)
            nearest = (gaps.abs() / (dual + 1e-12)).argmin(dim=1)
            picked = torch.arange(rows.numel(), device=x.device)
            gap, normal = gaps[picked, nearest], grads[picked, nearest].flatten(1)
            flat_x = x.flatten(1)
            offset = (normal * flat_x).sum(dim=1) - gap  # the linearised boundary: <normal, z> = offset
            d_x = boundary_step(flat_x, normal, offset, norm).view_as(x)
            d_origin = boundary_step(flat_origin, normal, offset, norm).view_as(x)
            size_x = lp_norms(d_x, norm).clamp_min(1e-8)
            size_origin = lp_norms(d_origin, norm).clamp_min(1e-8)
            mix = (size_x / (size_x + size_origin)).clamp(0.0, self.alpha_max).view(-1, 1, 1, 1).to(x.dtype)
            x = ((x + self.eta * d_x) * (1 - mix) + (origin + self.eta * d_origin) * mix).clamp(0.0, 1.0)
            logits = state.logits(rows, x)
            fooled = state.success(rows, logits)
            sizes = lp_norms(x - origin, norm).to(min_norm.dtype)
            better = fooled & (sizes < min_norm[rows])
            best[rows] = torch.where(better.view(-1, 1, 1, 1), x, best[rows])
            best_logits[rows] = torch.where(better.view(-1, 1), logits.float(), best_logits[rows])
            min_norm[rows] = torch.where(better, sizes, min_norm[rows])
            x = torch.where(fooled.view(-1, 1, 1, 1), origin + (x - origin) * self.beta, x)

    def _random_direction(self, rows: Tensor, state: RunState, like: Tensor) -> Tensor:
        """A random perturbation of norm 1 per row: Linf a uniform draw scaled to max 1, L2 a Gaussian direction."""
        shape = tuple(like.shape[1:])
        if self.threat.norm == "linf":
            draw = state.random.uniform(rows, shape) * 2 - 1
        else:
            draw = state.random.normal(rows, shape)
        size = lp_norms(draw, self.threat.norm).clamp_min(1e-12)
        return (draw / size.view(-1, *([1] * len(shape)))).to(like.dtype)

    def _boundaries(self, rows: Tensor, x: Tensor, state: RunState) -> Tuple[Tensor, Tensor]:
        """Logit gaps ``z_j - z_y`` (N, K) and their input gradients (N, K, ...) at ``x``; the true class's gap is
        set huge so it is never the nearest. Targeted (FAB-T): the target's gap alone (K = 1). EOT views average
        over ``eot_samples`` draws. Each backward pass counts as one gradient evaluation."""
        labels = state.labels[rows]
        targets = state.targets[rows] if self.targeted and state.targets is not None else None
        positions = [state.positions[r] for r in rows.tolist()] if state.positions is not None else None
        gaps_sum: Optional[Tensor] = None
        grads_sum: Optional[Tensor] = None
        passes = 0
        for _ in range(state.eot_samples):
            point = x.detach().requires_grad_(True)
            holding = sample_rows(state.model, positions) if positions is not None else contextlib.nullcontext()
            with torch.enable_grad(), holding:
                logits = state.model(point).float()
            true_logit = logits.gather(1, labels.view(-1, 1))
            if targets is not None:
                gaps = logits.gather(1, targets.view(-1, 1)) - true_logit
            else:
                gaps = logits - true_logit
            columns = gaps.shape[1]
            grads = []
            for column in range(columns):
                (grad,) = torch.autograd.grad(gaps[:, column].sum(), point, retain_graph=column + 1 < columns)
                grads.append(grad)
            passes += columns
            stacked = torch.stack(grads, dim=1)
            state.note_non_finite(rows, logits.detach(), stacked)
            gaps = gaps.detach()
            gaps_sum = gaps if gaps_sum is None else gaps_sum + gaps
            grads_sum = stacked if grads_sum is None else grads_sum + stacked
        assert gaps_sum is not None and grads_sum is not None
        state.grad_evals.index_add_(0, rows, torch.full_like(rows, passes))
        gaps_mean, grads_mean = gaps_sum / state.eot_samples, grads_sum / state.eot_samples
        if targets is None:
            gaps_mean = gaps_mean.scatter(1, labels.view(-1, 1), _EXCLUDED)
        return gaps_mean, grads_mean
