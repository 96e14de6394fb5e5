"""Bit-depth reduction (feature squeezing, Xu et al. 2018): a deterministic, non-differentiable input defence.

Rounding pixels to ``2**bits`` grey levels has a zero gradient almost everywhere, so gradient attacks see a
flat loss and fail, while the attacker who differentiates through it as the identity (BPDA) does not. The
layer is here as a known case of gradient masking that the audit must flag, next to GCM.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gradconceal.errors import GradconcealError


class BitDepthReduction(nn.Module):
    """Clamp to [0, 1] and round each pixel to one of ``2**bits`` evenly spaced levels (gradient: zero)."""

    def __init__(self, bits: int = 4) -> None:
        super().__init__()
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
            raise GradconcealError(f"BitDepthReduction needs an integer bits in [1, 16], got bits={bits!r}")
        self.bits = bits

    @property
    def levels(self) -> int:
        """Number of grey levels per channel after the reduction."""
        return 2**self.bits

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_floating_point(x):
            raise GradconcealError(f"BitDepthReduction needs floating-point input, got dtype {x.dtype}")
        top = float(self.levels - 1)
        return torch.round(x.clamp(0.0, 1.0) * top) / top

    def extra_repr(self) -> str:
        return f"bits={self.bits}"
