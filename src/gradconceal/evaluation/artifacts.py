"""Files a run writes beside its records: the 8-bit PNGs of adversarial images, under collision-free names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Sequence

import torch
from torch import Tensor

from gradconceal.errors import GradconcealError


def safe_name(text: str) -> str:
    """A label as one file name inside the output folder: anything but letters, digits and ._+- becomes '_',
    and a leading dot too, so that no label ('..', '../x', '/abs') can name a folder outside it or a hidden file."""
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", text) or "_"
    return "_" + name[1:] if name.startswith(".") else name


def gallery_name(model: str, defense: str) -> str:
    """The file name of a row's gallery in the report folder."""
    return f"gallery_{safe_name(model)}_{safe_name(defense)}.png"


def check_distinct_names(models: Sequence[str], defenses: Sequence[str], attacks: Sequence[str]) -> None:
    """Refuse labels that would share a file or folder of the report (``safe_name`` replaces characters, and some
    file systems ignore case): each model, defence and attack label, and each row's gallery, must map to its
    own name. Raises ``GradconcealError`` naming both labels and the shared name."""
    groups = [("model", [(m, safe_name(m)) for m in models]), ("defence", [(d, safe_name(d)) for d in defenses]),
              ("attack", [(a, safe_name(a)) for a in attacks]),
              ("row", [(f"{m}/{d}", gallery_name(m, d)) for m in models for d in defenses])]
    for what, pairs in groups:
        seen: Dict[str, str] = {}
        for label, name in pairs:
            other = seen.setdefault(name.casefold(), label)
            if other != label:
                raise GradconcealError(
                    f"{what} labels {other!r} and {label!r} would share the file name {name!r} in the report folder "
                    "(characters outside letters, digits and ._+- become '_', and case may be ignored); give one "
                    "another 'label'")


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
