"""Data sources behind one interface: ``load_dataset(spec)`` -> ImageDataset of ([0, 1] pixels C x H x W, label).

Specs: ``photos`` (sample photos shipped by installed packages, hand-labelled for ImageNet), ``imagenet:PATH``
(one folder per synset) or ``imagenet:PATH:LABELS`` (flat folder + labels file), ``fashion-mnist[:DIR]``
(IDX files; Debian's dataset-fashion-mnist by default) and ``digits`` (scikit-learn's 8 x 8 digits).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from torch import Tensor

from gradconceal.data.base import FileImageDataset, ImageDataset, TensorImageDataset, label_sets_hit
from gradconceal.data.classes import FASHION_MNIST_CLASSES, imagenet_class_names, imagenet_synsets
from gradconceal.data.images import center_crop_transform, open_rgb
from gradconceal.errors import GradconcealError, suggest

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FileImageDataset",
    "ImageDataset",
    "TensorImageDataset",
    "center_crop_transform",
    "imagenet_class_names",
    "imagenet_synsets",
    "label_sets_hit",
    "load_dataset",
    "open_rgb",
]

SOURCES = ("photos", "imagenet", "fashion-mnist", "digits")


def load_dataset(
    spec: str,
    *,
    split: str = "test",
    limit: Optional[int] = None,
    transform: Optional[Callable[..., Tensor]] = None,
    download: bool = False,
) -> ImageDataset:
    """Open the data source ``spec``; ``limit`` keeps the first N images (deterministic order).

    ``transform`` (PIL RGB image -> tensor) replaces the default resize 256 / crop 224 of ImageNet folders;
    ``download=True`` lets Fashion-MNIST be fetched by torchvision when its files are not found.
    """
    if not isinstance(spec, str) or not spec:
        raise GradconcealError(f"data spec must be a non-empty string such as 'photos', got {spec!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise GradconcealError(f"limit must be a positive integer or None, got {limit!r}")
    source, _, rest = spec.partition(":")
    if transform is not None and source != "imagenet":
        raise GradconcealError(f"transform applies to 'imagenet:PATH' data only, not {spec!r}")
    if source in ("photos", "digits") and rest:
        raise GradconcealError(f"data source {source!r} takes no argument, got {spec!r}")
    if source in ("photos", "imagenet") and split != "test":
        raise GradconcealError(
            f"split must be 'test' for {source!r} data (the folder or photo set decides the images), got {split!r}"
        )
    if source == "photos":
        from gradconceal.data.photos import PhotoDataset

        return PhotoDataset(limit=limit)
    if source == "digits":
        from gradconceal.data.digits import load_digits

        return load_digits(split).take(limit)
    if source == "fashion-mnist":
        from gradconceal.data.fashion_mnist import load_fashion_mnist

        return load_fashion_mnist(rest or None, split=split, download=download).take(limit)
    if source == "imagenet":
        from gradconceal.data.imagenet import load_imagenet

        if not rest:
            raise GradconcealError("imagenet data needs a folder: 'imagenet:PATH' or 'imagenet:PATH:LABELS'")
        path, labels = rest, None
        if not Path(rest).exists() and ":" in rest:
            path, labels = rest.rsplit(":", 1)
        return load_imagenet(path, labels, transform=transform).take(limit)
    raise GradconcealError(f"unknown data source {spec!r}{suggest(source, SOURCES)}; known: {', '.join(SOURCES)}")
