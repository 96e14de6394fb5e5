"""Random draws of an attack, from local generators only (torch's global RNG is never touched), and the
protocol by which attacks find a model's random layers.

A layer that draws randomness on each forward says so with ``stochastic = True`` (a whole model may too); a
random layer that can draw per sample (the evaluation's ``per_sample_seeds``) exposes ``seeded_per_sample``
and a ``select_rows(rows)`` context manager. Dropout in training mode counts as random. Attacks rely on these
attributes alone, never on a defence's class.

With ``sample_seeds`` every sample has its own generator, seeded from (attack seed, sample seed), so a
sample's random start or Square windows are the same whatever batch it is attacked in. Without them one
generator serves the batch (cheaper; results then depend on batch composition).
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads nearby seeds far apart
_MASK = (1 << 63) - 1


def mix_seeds(attack_seed: int, sample_seed: int) -> int:
    """One 63-bit seed from the attack's seed and a sample's seed (different pairs give unrelated streams)."""
    return (int(sample_seed) * _MIX + int(attack_seed) * 0xBF58476D1CE4E5B9 + 1) & _MASK


class SampleRandom:
    """Uniform, normal and exponential draws for a subset of a batch's rows, per sample or shared."""

    def __init__(self, seed: int, sample_seeds: Optional[Sequence[int]], size: int, device: torch.device) -> None:
        self.device = device
        self.per_sample = sample_seeds is not None
        if sample_seeds is not None:
            self._generators: List[torch.Generator] = [
                torch.Generator(device=device).manual_seed(mix_seeds(seed, s)) for s in sample_seeds
            ]
        else:
            self._generators = [torch.Generator(device=device).manual_seed(mix_seeds(seed, -1))]
        self.size = size

    def _draw(self, rows: Tensor, shape: Tuple[int, ...], kind: str) -> Tensor:
        if not self.per_sample:
            return self._one(self._generators[0], (int(rows.numel()), *shape), kind)
        if rows.numel() == 0:
            return torch.empty((0, *shape), device=self.device)
        return torch.stack([self._one(self._generators[i], shape, kind) for i in rows.tolist()])

    def _one(self, generator: torch.Generator, shape: Tuple[int, ...], kind: str) -> Tensor:
        if kind == "normal":
            return torch.randn(shape, generator=generator, device=self.device)
        values = torch.rand(shape, generator=generator, device=self.device)
        if kind == "exponential":
            return -torch.log1p(-values)
        return values

    def uniform(self, rows: Tensor, shape: Tuple[int, ...]) -> Tensor:
        """Uniform [0, 1) values of shape (len(rows), *shape), float32."""
        return self._draw(rows, tuple(shape), "uniform")

    def normal(self, rows: Tensor, shape: Tuple[int, ...]) -> Tensor:
        """Standard normal values of shape (len(rows), *shape), float32."""
        return self._draw(rows, tuple(shape), "normal")

    def exponential(self, rows: Tensor, shape: Tuple[int, ...]) -> Tensor:
        """Exponential(1) values of shape (len(rows), *shape), float32."""
        return self._draw(rows, tuple(shape), "exponential")


def random_layers(model: nn.Module) -> List[nn.Module]:
    """Modules of ``model`` (itself included) whose forward draws random numbers: those with ``stochastic = True``
    (resize-and-pad, or a model that says so), and dropout in training mode."""
    return [
        m for m in model.modules()
        if getattr(m, "stochastic", False) is True
        or (isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0)
    ]


def seeded_layers(model: nn.Module) -> List[nn.Module]:
    """The random layers of ``model`` that currently draw per sample (``seeded_per_sample`` is true)."""
    return [m for m in model.modules() if getattr(m, "seeded_per_sample", False) is True]


@contextlib.contextmanager
def sample_rows(model: nn.Module, rows: Sequence[int]) -> Iterator[None]:
    """Within the block, every per-sample-seeded layer of ``model`` knows its calls hold the seeded samples ``rows``
    (so that each sample's n-th draw is the same whatever batch it sits in)."""
    with contextlib.ExitStack() as stack:
        for layer in seeded_layers(model):
            # found by its attributes alone (the protocol above), so select_rows is looked up the same way
            select_rows: Callable[[Sequence[int]], ContextManager[object]] = getattr(layer, "select_rows")
            stack.enter_context(select_rows(rows))
        yield
