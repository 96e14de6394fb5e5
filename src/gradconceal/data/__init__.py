"""Data sources behind one interface: ``load_dataset(spec)`` -> ImageDataset of ([0, 1] pixels C x H x W, label).

Specs: ``photos`` (sample photos shipped by installed packages, hand-labelled for ImageNet), ``imagenet:PATH``
(one folder per synset) or ``imagenet:PATH:LABELS`` (flat folder + labels file), ``fashion-mnist[:DIR]``
(IDX files; Debian's dataset-fashion-mnist by default) and ``digits`` (scikit-learn's 8 x 8 digits).
``photos@SIZE`` and ``imagenet@SIZE:PATH[:LABELS]`` give SIZE x SIZE images instead of 224 x 224.
"""

from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor

from gradconceal._validate import optional_integer
from gradconceal.data.base import FileImageDataset, ImageDataset, TensorImageDataset, label_sets_hit
from gradconceal.data.classes import FASHION_MNIST_CLASSES, imagenet_class_names, imagenet_synsets
from gradconceal.data.images import center_crop_transform, open_rgb, resize_for_crop
from gradconceal.data.sources import KINDS, DataSource, check_data_source, parse_data_source
from gradconceal.errors import GradconcealError

__all__ = [
    "FASHION_MNIST_CLASSES",
    "DataSource",
    "FileImageDataset",
    "ImageDataset",
    "TensorImageDataset",
    "center_crop_transform",
    "imagenet_class_names",
    "imagenet_synsets",
    "label_sets_hit",
    "load_dataset",
    "open_rgb",
    "parse_data_source",
]

SOURCES = KINDS


def load_dataset(
    spec: str,
    *,
    split: str = "test",
    limit: Optional[int] = None,
    transform: Optional[Callable[..., Tensor]] = None,
    download: bool = False,
    workers: Optional[int] = None,
    pin_memory: bool = False,
) -> ImageDataset:
    """Open the data source ``spec``; ``limit`` keeps the first N images (deterministic order).

    ``transform`` (PIL RGB image -> tensor) replaces the default resize 256 / crop 224 of ImageNet folders;
    ``imagenet@SIZE:PATH`` resizes to round(SIZE / 0.875) and crops SIZE instead (timm's default crop_pct);
    ``photos@SIZE`` resizes the photos' shorter side to SIZE and crops SIZE, as ``photos`` does at 224.
    ``download=True`` lets Fashion-MNIST be fetched by torchvision when its files are not found.
    ``workers`` (an int >= 0) decodes an ImageNet folder's images once, up front, in that many DataLoader
    worker processes (0: in this process), and serves them from memory after (``FileImageDataset.preload``:
    N 224-px images take N * 0.6 MB); None (the default) reads each image from its file on every access.
    ``pin_memory=True`` (with ``workers``, where CUDA is available) keeps those images in page-locked memory.
    The other sources are held in memory already: ``workers`` and ``pin_memory`` change nothing for them.
    The source string is read by ``gradconceal.data.sources``, the parser the spec checks sources with.
    """
    source = parse_data_source(spec)
    limit = optional_integer(limit, "limit", minimum=1)
    workers = optional_integer(workers, "workers", minimum=0)
    if not isinstance(pin_memory, bool):
        raise GradconcealError(f"pin_memory must be True or False, got {pin_memory!r}")
    if pin_memory and workers is None:
        raise GradconcealError("pin_memory=True applies to images decoded up front: give workers too (0 or more)")
    if transform is not None and source.kind != "imagenet":
        raise GradconcealError(f"transform applies to 'imagenet:PATH' data only, not {spec!r}")
    if transform is not None and source.size is not None:
        raise GradconcealError(
            f"give the image size in the source ({spec!r}) or a transform, not both: the transform decides the size"
        )
    check_data_source(source, split=split, download=download)
    if source.kind == "photos":
        from gradconceal.data.photos import PhotoDataset

        return PhotoDataset(limit=limit) if source.size is None else PhotoDataset(limit=limit, size=source.size)
    if source.kind == "digits":
        from gradconceal.data.digits import load_digits

        return load_digits(split).take(limit)
    if source.kind == "fashion-mnist":
        from gradconceal.data.fashion_mnist import load_fashion_mnist

        return load_fashion_mnist(source.folder, split=split, download=download).take(limit)
    from gradconceal.data.imagenet import load_imagenet

    assert source.folder is not None  # parse_data_source refuses 'imagenet' without a folder
    if source.size is not None:
        transform = center_crop_transform(source.size, resize=resize_for_crop(source.size), interpolation="bicubic")
    dataset = load_imagenet(source.folder, source.labels, transform=transform).take(limit)
    if workers is not None:
        dataset.preload(workers=workers, pin_memory=pin_memory)
    return dataset
