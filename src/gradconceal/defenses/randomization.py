"""Random resize-and-pad, the randomisation layer of the paper's challenge solution (after Xie et al. 2018).

Each call resizes the batch (nearest neighbour) to a random side in [min_size, size) and zero-pads it back
to ``size`` at a random offset. One draw per call is shared by the batch, as in the challenge code; the
evaluation runner can instead seed one draw per sample (``per_sample_seeds``) so that results do not
depend on how images are batched. Attacks that drop finished samples from their batch say which samples
a call holds (``select_rows``, through ``gradconceal.attacks.randomness.sample_rows``), so that each sample's n-th draw stays the same in any batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradconceal.errors import GradconcealError


@dataclass(frozen=True)
class ResizePadDraw:
    """One outcome of the layer's randomness: the resized side and the padding offset."""

    side: int
    top: int
    left: int


class RandomResizePad(nn.Module):
    """Nearest resize to a random side in [min_size, size), then zero-pad to ``size`` at a random offset.

    ``stochastic = True`` and ``seeded_per_sample``/``select_rows`` are the protocol by which attacks find and
    drive random layers (``gradconceal.attacks.randomness``).
    """

    stochastic = True

    def __init__(
        self,
        size: int = 224,
        min_size: int = 218,
        *,
        seed: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__()
        if not (0 < int(min_size) < int(size)):
            raise GradconcealError(f"RandomResizePad needs 0 < min_size < size, got min_size={min_size}, size={size}")
        self.size, self.min_size = int(size), int(min_size)
        self.seed = seed
        self.generator = generator
        self._fixed: Optional[ResizePadDraw] = None
        self._sample_seeds: Optional[Sequence[int]] = None
        self._sample_calls: List[int] = []  # per sample: how many calls it took part in (per_sample_seeds)
        self._rows: Optional[List[int]] = None  # which of the seeded samples the next calls hold

    # -- randomness ---------------------------------------------------------------------------------
    def _generator_for(self, device: torch.device) -> Optional[torch.Generator]:
        if self.generator is None and self.seed is not None:
            self.generator = torch.Generator(device="cpu").manual_seed(int(self.seed))
        return self.generator

    def sample_draw(self, generator: Optional[torch.Generator] = None) -> ResizePadDraw:
        """Draw a side and an offset (from ``generator``, the layer's own seed, or torch's global RNG)."""
        side = int(torch.randint(self.min_size, self.size, (1,), generator=generator).item())
        slack = self.size - side
        top, left = (int(v) for v in torch.randint(0, slack + 1, (2,), generator=generator).tolist())
        return ResizePadDraw(side, top, left)

    @contextlib.contextmanager
    def fixed(self, draw: ResizePadDraw) -> Iterator["RandomResizePad"]:
        """Within the block every call uses ``draw``: the layer becomes a deterministic function."""
        if not (self.min_size <= draw.side < self.size) or not (0 <= draw.top <= self.size - draw.side) \
                or not (0 <= draw.left <= self.size - draw.side):
            raise GradconcealError(f"draw {draw} is outside this layer's range (size={self.size}, min_size={self.min_size})")
        previous, self._fixed = self._fixed, draw
        try:
            yield self
        finally:
            self._fixed = previous

    @contextlib.contextmanager
    def per_sample_seeds(self, seeds: Sequence[int]) -> Iterator["RandomResizePad"]:
        """Within the block, sample i draws from its own seed and the number of calls it took part in.

        Sample i's n-th call gives it the same draw whatever batch it sits in, which makes evaluation
        results independent of batching and of the number of processes. Calls hold every sample, or the
        subset named by ``select_rows``.
        """
        saved = (self._sample_seeds, self._sample_calls, self._rows)
        self._sample_seeds = [int(s) for s in seeds]
        self._sample_calls, self._rows = [0] * len(self._sample_seeds), None
        try:
            yield self
        finally:
            self._sample_seeds, self._sample_calls, self._rows = saved

    @contextlib.contextmanager
    def drawing_from(self, generator: torch.Generator) -> Iterator["RandomResizePad"]:
        """Within the block, calls that are neither ``fixed`` nor seeded per sample draw from ``generator``
        (instead of the layer's own seed or torch's global RNG); afterwards the layer draws as before."""
        previous, self.generator = self.generator, generator
        try:
            yield self
        finally:
            self.generator = previous

    @property
    def seeded_per_sample(self) -> bool:
        """True inside ``per_sample_seeds``."""
        return self._sample_seeds is not None

    @contextlib.contextmanager
    def select_rows(self, rows: Sequence[int]) -> Iterator["RandomResizePad"]:
        """Within the block, calls hold only the seeded samples at positions ``rows`` (in that order)."""
        previous, self._rows = self._rows, [int(r) for r in rows]
        try:
            yield self
        finally:
            self._rows = previous

    # -- forward ------------------------------------------------------------------------------------
    def apply_draw(self, x: Tensor, draw: ResizePadDraw) -> Tensor:
        """Resize ``x`` (N, C, size, size) to ``draw.side`` (nearest) and zero-pad it at the draw's offset."""
        resized = F.interpolate(x, size=(draw.side, draw.side), mode="nearest")
        bottom = self.size - draw.side - draw.top
        right = self.size - draw.side - draw.left
        return F.pad(resized, (draw.left, right, draw.top, bottom), value=0.0)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[-1] != self.size or x.shape[-2] != self.size:
            raise GradconcealError(f"RandomResizePad(size={self.size}) needs (N, C, {self.size}, {self.size}) input, got {tuple(x.shape)}")
        if self._fixed is not None:
            return self.apply_draw(x, self._fixed)
        if self._sample_seeds is not None:
            if x.shape[0] == 0:  # an attack whose samples are all done may call with an empty batch
                return x
            rows = self._rows if self._rows is not None else range(len(self._sample_seeds))
            if len(rows) != x.shape[0]:
                raise GradconcealError(f"per_sample_seeds has {len(rows)} seeded sample(s) for a batch of {x.shape[0]}")
            outs = []
            for i, row in enumerate(rows):
                call = self._sample_calls[row]
                self._sample_calls[row] = call + 1
                g = torch.Generator(device="cpu").manual_seed((self._sample_seeds[row] * 1_000_003 + call) % (2**63 - 1))
                outs.append(self.apply_draw(x[i : i + 1], self.sample_draw(g)))
            return torch.cat(outs, dim=0)
        return self.apply_draw(x, self.sample_draw(self._generator_for(x.device)))

    def extra_repr(self) -> str:
        return f"size={self.size}, min_size={self.min_size}, seed={self.seed}"


@contextlib.contextmanager
def seeded_randomness(model: nn.Module, seeds: Sequence[int]) -> Iterator[None]:
    """Within the block, every random resize-and-pad layer of ``model`` draws per sample from ``seeds``
    (``RandomResizePad.per_sample_seeds``; an empty batch, which attacks send once every sample is done,
    passes through without a draw)."""
    with contextlib.ExitStack() as stack:
        for module in model.modules():
            if isinstance(module, RandomResizePad):
                stack.enter_context(module.per_sample_seeds(seeds))
        yield


@contextlib.contextmanager
def reseeded_randomness(model: nn.Module, seed: int) -> Iterator[None]:
    """Within the block, every random resize-and-pad layer of ``model`` draws from a fresh generator seeded
    from ``seed`` (the k-th such layer from ``seed * 1_000_003 + k``), whatever its own seed and the draws it
    made before: a check that calls the model (the masking audit) then sees the same draws on every run.
    Afterwards each layer continues its own stream where it left it."""
    with contextlib.ExitStack() as stack:
        layers = [m for m in model.modules() if isinstance(m, RandomResizePad)]
        for k, module in enumerate(layers):
            generator = torch.Generator(device="cpu").manual_seed((int(seed) * 1_000_003 + k) % (2**63 - 1))
            stack.enter_context(module.drawing_from(generator))
        yield
