"""Validation of attack settings and of the batch an attack is called on: clear errors before any work."""

from __future__ import annotations

import math
import numbers
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from gradconceal import _validate as check
from gradconceal.errors import GradconcealError

IMAGE_DTYPES = (torch.float32, torch.float64)


def positive_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (bools, floats and strings refused: ``gradconceal._validate.integer``)."""
    return check.integer(value, name, minimum=minimum)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def boolean(name: str, value: object) -> bool:
    """``value`` if it is a bool (no truthy strings such as 'false')."""
    return check.boolean(value, name)


def choice(name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` lower-cased if it is one of ``choices``."""
    return check.choice(value, name, choices)


def positive_number(name: str, value: object) -> float:
    """A finite number > 0 (strings such as '2/255' accepted)."""
    return check.number(value, name, minimum=0, above=True, fractions=True)


def model_device(model: nn.Module) -> Optional[torch.device]:
    """The device of the model's first parameter or buffer (None for a model without any)."""
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return None


def check_images(images: object, model: nn.Module) -> Tensor:
    """A detached (N, C, H, W) float32/float64 batch in [0, 1] on the model's device, or a clear error."""
    if not isinstance(images, Tensor):
        raise GradconcealError(f"images must be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        hint = " (add the batch dimension with images.unsqueeze(0))" if images.ndim == 3 else ""
        raise GradconcealError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}{hint}")
    if images.shape[0] == 0:
        raise GradconcealError("images is an empty batch (N = 0)")
    if images.dtype not in IMAGE_DTYPES:
        hint = " (divide uint8 images by 255)" if not images.dtype.is_floating_point else (
            " (keep images float32; run a half-precision model under torch.autocast)"
        )
        raise GradconcealError(f"images must be float32 or float64, got {images.dtype}{hint}")
    device = model_device(model)
    if device is not None and device != images.device:
        raise GradconcealError(
            f"images are on {images.device} but the model is on {device}; move the images (attacks never move the model)"
        )
    expected = getattr(model, "input_size", None)
    if expected is not None and tuple(int(v) for v in images.shape[1:]) != tuple(int(v) for v in expected):
        raise GradconcealError(f"images have shape (C, H, W) = {tuple(images.shape[1:])}, the model expects {tuple(expected)}")
    if not bool(torch.isfinite(images).all()):
        raise GradconcealError("images contain NaN or infinite values")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 1:
        raise GradconcealError(
            f"images must be pixels in [0, 1], got values in [{low:.4g}, {high:.4g}] "
            "(normalisation belongs inside the model, e.g. PixelModel or conceal(model, mean, std))"
        )
    return images.detach()


def check_labels(labels: object, count: int, device: torch.device, name: str = "labels") -> Tensor:
    """Integer class indices, one per image, as an int64 tensor on ``device``."""
    if isinstance(labels, (list, tuple)):
        if not all(_is_int(v) for v in labels):
            raise GradconcealError(f"{name} must be integer class indices, got {list(labels)[:5]}...")
        labels = torch.tensor([int(v) for v in labels], dtype=torch.int64)
    if not isinstance(labels, Tensor):
        raise GradconcealError(f"{name} must be a tensor of class indices, got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise GradconcealError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    if labels.ndim != 1 or labels.shape[0] != count:
        raise GradconcealError(f"{name} must have shape ({count},), one per image, got {tuple(labels.shape)}")
    if count and int(labels.min()) < 0:
        raise GradconcealError(f"{name} must be >= 0, got {int(labels.min())}")
    return labels.to(device=device, dtype=torch.int64)


def check_label_range(labels: Tensor, num_classes: int, name: str = "labels") -> None:
    """Raise if any label is >= the number of classes the model outputs."""
    largest = int(labels.max())
    if largest >= num_classes:
        raise GradconcealError(f"{name} must be < {num_classes} (the model's number of classes), got {largest}")


def check_sample_seeds(sample_seeds: object, count: int) -> Optional[List[int]]:
    """None or a list of ``count`` integer seeds."""
    if sample_seeds is None:
        return None
    if isinstance(sample_seeds, Tensor):
        if sample_seeds.dtype.is_floating_point:
            raise GradconcealError(f"sample_seeds must be integers, got dtype {sample_seeds.dtype}")
        sample_seeds = sample_seeds.flatten().tolist()
    try:
        seeds = list(sample_seeds)  # type: ignore[call-overload]  # any iterable; anything else is the TypeError below
    except TypeError:
        raise GradconcealError(f"sample_seeds must be a list of integers, got {type(sample_seeds).__name__}") from None
    if len(seeds) != count or not all(_is_int(s) for s in seeds):
        raise GradconcealError(f"sample_seeds must be {count} integers (one per image), got {seeds[:5]}... ({len(seeds)})")
    return [int(s) for s in seeds]


def image_shape_of(model: nn.Module) -> Optional[Tuple[int, int, int]]:
    """The (C, H, W) a model declares through ``input_size``, if any."""
    size = getattr(model, "input_size", None)
    if size is None:
        return None
    values = tuple(int(v) for v in size)
    if len(values) != 3 or math.prod(values) <= 0:
        return None
    channels, height, width = values
    return channels, height, width
