"""Gradient probes the concealment checks share: the loss they differentiate and a staged backward pass.

The probed loss is the logit margin ``z_other - z_label`` with ``other`` the strongest wrong class at the
clean image, held fixed: unlike cross-entropy it does not saturate on confident images, and with the pair
fixed it is as smooth as the network itself, so finite differences of it are meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from gradconceal.masking.target import Stage


def strongest_other(logits: Tensor, labels: Tensor) -> Tensor:
    """Per sample, the class with the largest logit other than the label."""
    masked = logits.detach().clone()
    masked.scatter_(1, labels.view(-1, 1), float("-inf"))
    return masked.argmax(dim=1)


def pair_margin(logits: Tensor, labels: Tensor, other: Tensor) -> Tensor:
    """``z_other - z_label`` per sample: positive once the image is misclassified as ``other``."""
    return logits.gather(1, other.view(-1, 1)).squeeze(1) - logits.gather(1, labels.view(-1, 1)).squeeze(1)


@dataclass
class StagedPass:
    """Logits of one forward pass and the loss gradient at the input of every stage (index 0: the pixels)."""

    logits: Tensor
    inputs: List[Tensor]
    grads: List[Tensor]

    def split(self, size: int) -> "Tuple[StagedPass, StagedPass]":
        """The first ``size`` samples and the rest, as two passes (views; the graph stays with ``self``)."""
        head = StagedPass(self.logits[:size], [t[:size] for t in self.inputs], [g[:size] for g in self.grads])
        tail = StagedPass(self.logits[size:], [t[size:] for t in self.inputs], [g[size:] for g in self.grads])
        return head, tail


def staged_pass(stages: Sequence[Stage], x: Tensor, labels: Tensor, other: Tensor, *, keep_graph: bool = False) -> StagedPass:
    """Run ``x`` through the stages and differentiate the pair margin w.r.t. each stage's input.

    A stage whose output is cut from the graph (``detach``, integer ops) gives zero gradients on its input
    side, which is what an attacker would get there too.
    """
    start = x.detach().clone().requires_grad_(True)
    inputs = [start]
    h = start
    for i, stage in enumerate(stages):
        h = stage.module(h)
        if i < len(stages) - 1:
            if not h.requires_grad:
                h = h.detach().requires_grad_(True)
            inputs.append(h)
    logits = h
    loss = pair_margin(logits, labels, other).sum()
    if not loss.requires_grad:
        grads = [torch.zeros_like(t) for t in inputs]
    else:
        found = torch.autograd.grad(loss, inputs, allow_unused=True, retain_graph=keep_graph)
        grads = [g.detach() if g is not None else torch.zeros_like(t) for g, t in zip(found, inputs)]
    return StagedPass(logits.detach(), inputs, grads)


def flat(t: Tensor) -> Tensor:
    """Per-sample rows: (N, everything else), in float64 so that 1e12-sized gradients square safely."""
    return t.detach().reshape(t.shape[0], -1).double()


def norms(t: Tensor, p: float = 2.0) -> Tensor:
    """Per-sample ``p``-norm of a batch of gradients."""
    return flat(t).norm(p=p, dim=1)


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample cosine similarity; NaN where either vector is zero or not finite."""
    fa, fb = flat(a), flat(b)
    na, nb = fa.norm(dim=1), fb.norm(dim=1)
    cos = (fa * fb).sum(dim=1) / (na * nb)
    bad = (na == 0) | (nb == 0) | ~torch.isfinite(na) | ~torch.isfinite(nb)
    return torch.where(bad, torch.full_like(cos, float("nan")), cos)


def median(values: Tensor) -> float:
    """Median of the finite values (NaN when there are none); +inf values count as large."""
    v = values.detach().double().flatten()
    v = v[~torch.isnan(v)]
    if v.numel() == 0:
        return float("nan")
    return float(v.sort().values[(v.numel() - 1) // 2])


def grey_level_noise(x: Tensor, size: float, generator: torch.Generator) -> Tensor:
    """Uniform noise in [-size, size] per pixel, drawn from a local generator on the CPU."""
    noise = torch.rand(x.shape, generator=generator, dtype=torch.float64) * 2 - 1
    return (noise * size).to(dtype=x.dtype, device=x.device)
