"""Reading image files into RGB: grey, palette, RGBA and 16-bit images are converted, broken files named in the error."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Callable, Union

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision import transforms

from gradconceal.files import open_regular
from gradconceal.errors import GradconcealError

log = logging.getLogger(__name__)

CROP_PCT = 0.875  # timm's default share of the resized image the centre crop keeps (224 of 256)

_INTERPOLATIONS = {
    "bilinear": transforms.InterpolationMode.BILINEAR,
    "bicubic": transforms.InterpolationMode.BICUBIC,
    "nearest": transforms.InterpolationMode.NEAREST,
}


def open_rgb(path: Union[str, Path]) -> Image.Image:
    """Decode ``path`` fully into an 8-bit RGB PIL image; raise GradconcealError naming the file if it cannot be.

    Only a regular file is read: a named pipe or a device with an image's name is refused, never waited on.
    """
    path = Path(path)
    try:
        handle = open_regular(path, "image", "only regular files are read as images")
    except FileNotFoundError:
        raise GradconcealError(f"image file not found: {path}") from None
    except OSError as error:
        raise GradconcealError(f"cannot read image {path}: {error.strerror or error}") from None
    try:
        # Pillow warns about damage it can read past (bad EXIF tags, ...): logged with the file's name instead,
        # and dropped when the file cannot be read at all (the error says so).
        with handle, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Image.open(handle) as image:
                image.load()
                rgb = to_rgb(image)
                rgb = rgb.copy() if rgb is image else rgb
        for warning in caught:
            log.warning("image %s: %s", path, warning.message)
        return rgb
    except GradconcealError as error:
        raise GradconcealError(f"cannot read image {path}: {error}") from None
    except UnidentifiedImageError:
        raise GradconcealError(f"cannot read image {path}: not an image file, or empty") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise GradconcealError(f"cannot read image {path}: {error} (corrupt or truncated?)") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB version of ``image``: 16/32-bit integer and float grey images are rescaled, not clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():
            raise GradconcealError("it has NaN or infinite pixel values")
        if image.mode == "F":
            peak = 1.0 if values.size and float(np.nanmax(values)) <= 1.0 else 255.0
        else:
            peak = 255.0 if values.size and float(values.max()) <= 255 else 65535.0
        grey = np.clip(np.nan_to_num(values) / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(grey, mode="L")
    return image if image.mode == "RGB" else image.convert("RGB")


def center_crop_transform(
    size: int = 224, resize: int = 256, interpolation: str = "bicubic"
) -> Callable[[Image.Image], Tensor]:
    """PIL image -> [0, 1] tensor: shorter side to ``resize``, then the central ``size`` x ``size`` square."""
    if interpolation not in _INTERPOLATIONS:
        raise GradconcealError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {interpolation!r}")
    if size < 1 or resize < size:
        raise GradconcealError(f"need 1 <= size <= resize, got size={size}, resize={resize}")
    return transforms.Compose(
        [
            transforms.Resize(resize, interpolation=_INTERPOLATIONS[interpolation], antialias=True),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
        ]
    )


def resize_for_crop(size: int, crop_pct: float = CROP_PCT) -> int:
    """The shorter side to resize to before a centre crop of ``size`` keeps ``crop_pct`` of it: 256 for 224."""
    if size < 1 or not 0 < crop_pct <= 1:
        raise GradconcealError(f"need size >= 1 and 0 < crop_pct <= 1, got size={size}, crop_pct={crop_pct}")
    return round(size / crop_pct)
