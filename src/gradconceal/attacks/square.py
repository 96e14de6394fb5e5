"""Square attack (Andriushchenko et al. 2020): score-based black-box search with random square updates.

It never looks at a gradient, so gradient concealment cannot stop it. Each query changes one random
square window (side set by the schedule ``p``, halved at 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000
of 10,000 rescaled queries) and keeps the change if the loss (the logit margin by default) improves.
Linf: windows set to ``x +- eps`` per channel, from vertical-stripe initialisation. L2: the paper's
centre-weighted square patterns, mass moved between two windows, perturbation kept at norm ``eps``.
Windows and signs are drawn per sample, so with ``sample_seeds`` a sample's queries do not depend on its
batch. ``n_queries`` bounds the queries of each sample (the initial point included).
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor, nn

from gradconceal.attacks import checks
from gradconceal.attacks.base import Attack, RunState
from gradconceal.attacks.threat import Number, lp_norms
from gradconceal.errors import GradconcealError

_CHUNK = 100  # iterations whose random numbers are drawn at once
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(iteration: int, n_queries: int, p_init: float) -> float:
    """Share ``p`` of the image a window covers at ``iteration`` (the schedule rescaled to 10,000 queries)."""
    position = int(iteration / n_queries * 10000)
    return p_init / 2 ** sum(position > mark for mark in _HALVINGS)


def _rings(height: int, width: int) -> Tensor:
    """Concentric rectangles weighted ``sum_{k >= d} 1/(k+1)^2`` (d = ring index), unit L2 norm."""
    if height == 0:
        return torch.zeros(0, width)
    centre_r, centre_c = height // 2, width // 2
    rings = max(centre_r + 1, centre_c + 1)
    r = torch.arange(height).view(-1, 1)
    c = torch.arange(width).view(1, -1)
    distance = torch.maximum((r - centre_r).abs(), (c - centre_c).abs())
    weights = 1.0 / torch.arange(1, rings + 1, dtype=torch.float32) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[d] = sum_{k >= d} weights[k]
    values = tail[distance.clamp(max=rings - 1)]
    return values / values.norm()


def square_pattern(side: int) -> Tensor:
    """The L2 update pattern of a ``side`` x ``side`` window: rings on top, negated rings below, unit norm."""
    pattern = torch.cat([_rings(side // 2, side), -_rings(side - side // 2, side)], dim=0)
    return pattern / pattern.norm()


def _window_mask(top: Tensor, left: Tensor, side: int, height: int, width: int) -> Tensor:
    """(N, 1, H, W) bool: the ``side`` x ``side`` window at (top, left) of each sample."""
    r = torch.arange(height, device=top.device).view(1, -1)
    c = torch.arange(width, device=top.device).view(1, -1)
    in_rows = (r >= top.view(-1, 1)) & (r < top.view(-1, 1) + side)
    in_cols = (c >= left.view(-1, 1)) & (c < left.view(-1, 1) + side)
    return (in_rows[:, None, :, None] & in_cols[:, None, None, :])


def _placed(patterns: Tensor, top: Tensor, left: Tensor, height: int, width: int) -> Tensor:
    """(N, 1, H, W): each sample's (side x side) pattern written at (top, left), zero elsewhere."""
    count, side = patterns.shape[0], patterns.shape[-1]
    r = torch.arange(height, device=top.device).view(1, -1) - top.view(-1, 1)
    c = torch.arange(width, device=top.device).view(1, -1) - left.view(-1, 1)
    inside = ((r >= 0) & (r < side))[:, :, None] & ((c >= 0) & (c < side))[:, None, :]
    index = torch.arange(count, device=top.device).view(-1, 1, 1)
    values = patterns[index, r.clamp(0, side - 1)[:, :, None], c.clamp(0, side - 1)[:, None, :]]
    return (values * inside).unsqueeze(1)


def _positions(uniform: Tensor, side: int, extent: int) -> Tensor:
    """Window offsets in [0, extent - side] from uniform draws."""
    return (uniform * (extent - side + 1)).long().clamp_(0, extent - side)


class Square(Attack):
    """``Square(model, norm="linf", eps=8/255, n_queries=5000, p_init=0.8)``; Linf and L2."""

    name = "square"
    norms = ("linf", "l2")

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: str = "linf",
        eps: Number = 8 / 255,
        n_queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        loss: str = "margin",
        targeted: bool = False,
        seed: int = 0,
        early_stop: bool = True,
        check_every: int = 3,
    ) -> None:
        super().__init__(model, norm=norm, eps=eps, loss=loss, targeted=targeted, seed=seed,
                         early_stop=early_stop, check_every=check_every)
        self.n_queries = checks.positive_int("n_queries", n_queries)
        self.p_init = checks.positive_number("p_init", p_init)
        if self.p_init > 1:
            raise GradconcealError(f"p_init must be in (0, 1], got {p_init!r}")
        self.restarts = checks.positive_int("restarts", restarts)

    @property
    def deterministic(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Square({self.threat}, n_queries={self.n_queries}, p_init={self.p_init:g}, loss={self.loss!r})"

    def run(self, images: Tensor, labels: Tensor, state: RunState) -> Tensor:
        last = images.clone()
        for restart in range(self.restarts):
            rows = state.all_rows() if restart == 0 else state.remaining()
            if rows.numel() == 0:
                break
            rows, x = self._single_run(images, rows, state)
            last[rows] = x
        return last

    def _single_run(self, images: Tensor, rows: Tensor, state: RunState) -> Tuple[Tensor, Tensor]:
        origin = images[rows]
        channels, height, width = origin.shape[1:]
        x = self._initial(origin, rows, state)
        logits = state.logits(rows, x)
        state.record(rows, x, logits)
        loss_best = state.loss_values(rows, logits)
        iterations = self.n_queries - 1
        draws = origin.new_empty(0)
        for i in range(iterations):
            if i % _CHUNK == 0:
                draws = state.random.uniform(rows, (_CHUNK, channels + 5)).to(origin.dtype)
            u = draws[:, i % _CHUNK]
            p = square_fraction(i, self.n_queries, self.p_init)
            if self.threat.norm == "linf":
                candidate = self._linf_candidate(origin, x, u, p)
            else:
                candidate = self._l2_candidate(origin, x, u, p)
            logits = state.logits(rows, candidate)
            state.record(rows, candidate, logits)
            loss = state.loss_values(rows, logits)
            better = loss > loss_best
            x = torch.where(better.view(-1, 1, 1, 1), candidate, x)
            loss_best = torch.where(better, loss, loss_best)
            if state.check_due(i, iterations):
                rows, origin, x, loss_best, draws = state.drop_fooled(rows, origin, x, loss_best, draws)
                if rows.numel() == 0:
                    break
        return rows, x

    def _initial(self, origin: Tensor, rows: Tensor, state: RunState) -> Tensor:
        count, channels, height, width = origin.shape
        eps = self.threat.eps
        if self.threat.norm == "linf":
            stripes = state.random.uniform(rows, (channels, 1, width)).lt(0.5).to(origin.dtype) * 2 - 1
            return (origin + eps * stripes).clamp(0.0, 1.0)
        side = max(height // 5, 1)
        start = (height - 5 * side) // 2
        tops = [start + k * side for k in range(height // side) if start + (k + 1) * side <= height]
        lefts = [start + k * side for k in range(width // side) if start + (k + 1) * side <= width]
        draws = state.random.uniform(rows, (len(tops) * len(lefts), channels + 1)).to(origin.dtype)
        pattern = square_pattern(side).to(origin)
        delta = torch.zeros_like(origin)
        for block, (top, left) in enumerate((t, l) for t in tops for l in lefts):
            flip = draws[:, block, 0] < 0.5
            patterns = torch.where(flip.view(-1, 1, 1), pattern.t(), pattern)
            signs = draws[:, block, 1:].lt(0.5).to(origin.dtype) * 2 - 1
            delta[:, :, top:top + side, left:left + side] += patterns.unsqueeze(1) * signs.view(count, channels, 1, 1)
        return self._at_budget(origin, delta)

    def _at_budget(self, origin: Tensor, delta: Tensor) -> Tensor:
        """``origin + delta`` rescaled to L2 norm ``eps``, clipped to the box."""
        norms = lp_norms(delta, "l2").clamp_min(1e-12).to(delta.dtype)
        return (origin + delta * (self.threat.eps / norms).view(-1, 1, 1, 1)).clamp(0.0, 1.0)

    def _linf_candidate(self, origin: Tensor, x: Tensor, u: Tensor, p: float) -> Tensor:
        channels, height, width = origin.shape[1:]
        side = max(int(round(math.sqrt(p * height * width))), 1)
        side = min(side, min(height, width) - 1) if min(height, width) > 1 else 1
        mask = _window_mask(_positions(u[:, 0], side, height), _positions(u[:, 1], side, width), side, height, width)
        signs = (u[:, 5:5 + channels].lt(0.5).to(origin.dtype) * 2 - 1).view(-1, channels, 1, 1)
        window = (origin + self.threat.eps * signs).clamp(0.0, 1.0)
        unchanged = torch.where(mask, (window - x).abs(), 0.0).flatten(1).amax(dim=1) < 1e-7
        signs = torch.where(unchanged.view(-1, 1, 1, 1), -signs, signs)  # a query must change something
        window = (origin + self.threat.eps * signs).clamp(0.0, 1.0)
        return torch.where(mask, window, x)

    def _l2_candidate(self, origin: Tensor, x: Tensor, u: Tensor, p: float) -> Tensor:
        count, channels, height, width = origin.shape
        side = max(int(round(math.sqrt(p * height * width))), 3)
        side += 1 - side % 2
        side = min(side, height, width)
        first = _window_mask(_positions(u[:, 0], side, height), _positions(u[:, 1], side, width), side, height, width)
        second = _window_mask(_positions(u[:, 2], side, height), _positions(u[:, 3], side, width), side, height, width)
        first_f, union_f = first.to(x.dtype), (first | second).to(x.dtype)
        delta = x - origin
        in_first = delta * first_f
        norm_first = in_first.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()
        norm_image = lp_norms(delta, "l2").to(x.dtype).view(-1, 1, 1, 1)
        norm_union = lp_norms(delta * union_f, "l2").to(x.dtype).view(-1, 1, 1, 1)
        pattern = square_pattern(side).to(x)
        patterns = torch.where((u[:, 4] < 0.5).view(-1, 1, 1), pattern.t(), pattern).expand(count, side, side)
        top, left = _positions(u[:, 0], side, height), _positions(u[:, 1], side, width)
        signs = (u[:, 5:5 + channels].lt(0.5).to(x.dtype) * 2 - 1).view(-1, channels, 1, 1)
        new = _placed(patterns, top, left, height, width) * signs + in_first / (norm_first + 1e-12)
        room = ((self.threat.eps ** 2 - norm_image ** 2).clamp_min(0.0) / channels + norm_union ** 2).sqrt()
        new = new / (new.pow(2).sum(dim=(2, 3), keepdim=True).sqrt() + 1e-12) * room
        delta = delta * (1 - union_f) + new
        return self._at_budget(origin, delta)
