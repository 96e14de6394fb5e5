"""Files a run writes beside its records: the 8-bit PNGs of adversarial images, under collision-free names."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

from gradconceal.errors import GradconcealError


def safe_name(text: str) -> str:
    """A label as one file name inside the output folder: anything but letters, digits and ._+- becomes '_',
    and a leading dot too, so that no label ('..', '../x', '/abs') can name a folder outside it or a hidden file."""
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", text) or "_"
    return "_" + name[1:] if name.startswith(".") else name


def adversarial_path(out_dir: Path, model: str, defense: str, attack: str, index: int) -> Path:
    """Where the 8-bit PNG of one adversarial image is kept."""
    return out_dir / "adversarial" / safe_name(model) / safe_name(defense) / safe_name(attack) / f"{index:06d}.png"


def round_to_8bit(images: Tensor) -> Tensor:
    """Pixels rounded to the 256 levels a saved PNG holds."""
    return torch.round(images.clamp(0, 1) * 255) / 255


def save_png(image: Tensor, path: Path) -> None:
    """Save one C x H x W image in [0, 1] as an 8-bit PNG (grey or RGB)."""
    from PIL import Image

    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    picture = Image.fromarray(array[0].numpy(), mode="L") if array.shape[0] == 1 else Image.fromarray(
        array.permute(1, 2, 0).numpy())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path)
    except OSError as error:
        raise GradconcealError(f"cannot write adversarial image {path}: {error}; finished records are kept, "
                               "rerun to resume") from None
