"""PixelModel: a classifier that takes [0, 1] pixels, with its normalisation built in and its metadata attached.

Attacks and budgets live in pixel space (as in the paper), so every model the zoo returns is one of these.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from gradconceal.defenses.concealment import Normalize


class PixelModel(nn.Module):
    """``net(normalize(x))`` for x in [0, 1]; carries ``input_size``, ``class_names``, ``mean``, ``std``."""

    def __init__(
        self,
        net: nn.Module,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        input_size: Sequence[int],
        class_names: Optional[Sequence[str]] = None,
        model_name: str = "",
        architecture: str = "",
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net
        self.mean: Tuple[float, ...] = tuple(float(m) for m in mean)
        self.std: Tuple[float, ...] = tuple(float(s) for s in std)
        self.input_size: Tuple[int, ...] = tuple(int(v) for v in input_size)  # (C, H, W)
        self.class_names: Optional[List[str]] = list(class_names) if class_names is not None else None
        self.model_name = model_name
        self.architecture = architecture or model_name
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)

    @property
    def num_classes(self) -> Optional[int]:
        """Number of output classes, from the class names when known."""
        return len(self.class_names) if self.class_names is not None else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.normalize(x)
        if self.channels_last and x.ndim == 4:  # convolutions run faster on NHWC tensors on CPU
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def extra_repr(self) -> str:
        return f"name={self.model_name!r}, input_size={self.input_size}"
