"""Sample photos shipped inside installed packages (scikit-image, matplotlib, scikit-learn) with hand-checked labels.

Nine real photos are enough to check that an ImageNet model is wired up right (weights, normalisation, class
order) and to run small attack demos offline. Labels live in ``photos.json`` beside this file, each with the
reason it was chosen; several labels may be right for one photo (``label_sets``).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

import torch

from gradconceal.data.base import TensorImageDataset
from gradconceal.data.classes import imagenet_class_names
from gradconceal.data.images import center_crop_transform, open_rgb
from gradconceal.errors import GradconcealError

PHOTO_SIZE = 224
# Shorter side straight to 224 (no 256 -> 224 crop): the photos are framed on their subject, and on them
# EfficientNet-Lite0 gets 8/9 right this way against 7/9 with resize 256 + crop 224 (gradconceal.models.pretrained).
# At another size ('photos@240') likewise: shorter side to the size, then the central square.
PHOTO_RESIZE = 224
_LABELS_FILE = Path(__file__).with_name("photos.json")


def photo_records() -> List[Dict[str, Any]]:
    """The entries of ``photos.json``: name, package, file, labels (primary first), label_names, reason."""
    with open(_LABELS_FILE, encoding="utf-8") as handle:
        return list(json.load(handle)["photos"])


def photo_path(record: Dict[str, Any]) -> Path:
    """Where the photo of ``record`` lies inside its installed package (no download, no import of the package)."""
    spec = importlib.util.find_spec(record["package"])
    if spec is None or not spec.submodule_search_locations:
        raise GradconcealError(
            f"photo {record['name']!r} comes with the Python package {record['package']!r}, which is not installed"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / record["file"]
    if not path.is_file():
        raise GradconcealError(f"photo {record['name']!r}: file {path} is missing from package {record['package']!r}")
    return path


class PhotoDataset(TensorImageDataset):
    """The sample photos as 3 x ``size`` x ``size`` pixels in [0, 1] (224: the 'photos' source, else 'photos@SIZE');
    ``targets`` = primary labels, ``label_sets`` = accepted."""

    def __init__(self, limit: Optional[int] = None, *, size: int = PHOTO_SIZE) -> None:
        records = photo_records()[:limit] if limit is not None else photo_records()
        resize = PHOTO_RESIZE if size == PHOTO_SIZE else size
        transform = center_crop_transform(size, resize=resize, interpolation="bicubic")
        images = torch.stack([transform(open_rgb(photo_path(record))) for record in records])
        super().__init__(
            images,
            [int(record["labels"][0]) for record in records],
            class_names=imagenet_class_names(),
            name="photos" if size == PHOTO_SIZE else f"photos@{size}",
            source=str(_LABELS_FILE),
        )
        self.label_sets: List[Set[int]] = [set(int(label) for label in record["labels"]) for record in records]
        self.photo_names: List[str] = [str(record["name"]) for record in records]
