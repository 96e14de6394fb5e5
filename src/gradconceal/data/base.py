"""The one dataset interface every data source returns: (C x H x W float pixels in [0, 1], int label) pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import Tensor
from torch.utils.data import Dataset

from gradconceal.data.images import open_rgb
from gradconceal.errors import GradconcealError


class ImageDataset(Dataset):
    """Labelled images for classifiers: ``ds[i] == (pixels CxHxW in [0, 1], label)``, with names and sizes attached."""

    name: str
    class_names: List[str]
    targets: List[int]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Tuple[Tensor, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def image_size(self) -> Tuple[int, int, int]:
        """(channels, height, width) of every image this dataset yields."""
        raise NotImplementedError  # pragma: no cover - abstract

    @property
    def num_classes(self) -> int:
        """Number of classes (the length of ``class_names``)."""
        return len(self.class_names)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, images={len(self)}, image_size={self.image_size})"


class TensorImageDataset(ImageDataset):
    """Images held in memory as one N x C x H x W tensor (uint8 0..255, or float already in [0, 1])."""

    def __init__(
        self,
        images: Tensor,
        targets: Sequence[int],
        *,
        class_names: Sequence[str],
        name: str,
        source: str = "",
        scale: Optional[float] = None,
    ) -> None:
        if images.ndim != 4 or images.shape[0] != len(targets):
            raise GradconcealError(
                f"{name}: expected N x C x H x W images matching {len(targets)} labels, got shape {tuple(images.shape)}"
            )
        self.images = images
        self.targets = [int(t) for t in targets]
        self.class_names = list(class_names)
        self.name = name
        self._scale = float(scale) if scale is not None else (255.0 if images.dtype == torch.uint8 else 1.0)
        check_labels(self.targets, len(self.class_names), source or name)

    @property
    def image_size(self) -> Tuple[int, int, int]:
        _, channels, height, width = self.images.shape  # N x C x H x W, checked in __init__
        return int(channels), int(height), int(width)

    def __getitem__(self, index: int) -> Tuple[Tensor, int]:
        image = self.images[index].to(torch.float32)
        if self._scale != 1.0:
            image = image / self._scale
        return image, self.targets[index]

    def take(self, limit: Optional[int]) -> "TensorImageDataset":
        """Keep the first ``limit`` images (all when None), in place; returns self."""
        if limit is not None and limit < len(self):
            self.images = self.images[:limit]
            self.targets = self.targets[:limit]
        return self


class FileImageDataset(ImageDataset):
    """Images read from files on access and turned into tensors by ``transform`` (PIL RGB image -> CxHxW tensor)."""

    def __init__(
        self,
        items: Sequence[Tuple[Path, int]],
        *,
        transform: Callable[..., Tensor],
        class_names: Sequence[str],
        name: str,
        source: str = "",
    ) -> None:
        self.files: List[Path] = [Path(path) for path, _ in items]
        self.targets = [int(label) for _, label in items]
        self.class_names = list(class_names)
        self.name = name
        self.transform = transform
        self._image_size: Optional[Tuple[int, int, int]] = None
        check_labels(self.targets, len(self.class_names), source or name)

    def __getitem__(self, index: int) -> Tuple[Tensor, int]:
        path = self.files[index]
        image = self.transform(open_rgb(path))
        if not isinstance(image, Tensor) or image.ndim != 3:
            raise GradconcealError(f"transform must return a C x H x W tensor, got {type(image).__name__} for {path}")
        return image, self.targets[index]

    @property
    def image_size(self) -> Tuple[int, int, int]:
        if self._image_size is None:
            if not self.files:
                raise GradconcealError(f"{self.name}: no images, so no image size")
            channels, height, width = self[0][0].shape  # C x H x W, checked in __getitem__
            self._image_size = (int(channels), int(height), int(width))
        return self._image_size

    def take(self, limit: Optional[int]) -> "FileImageDataset":
        """Keep the first ``limit`` images (all when None), in place; returns self."""
        if limit is not None and limit < len(self):
            self.files = self.files[:limit]
            self.targets = self.targets[:limit]
        return self


def check_labels(targets: Sequence[int], num_classes: int, source: Union[str, Path]) -> None:
    """Raise naming ``source`` when a label is outside ``0 .. num_classes - 1``."""
    for index, label in enumerate(targets):
        if not 0 <= label < num_classes:
            raise GradconcealError(
                f"label {label} of item {index} in {source} is out of range: {num_classes} classes (0..{num_classes - 1})"
            )


def label_sets_hit(predictions: Sequence[int], label_sets: Sequence[Set[int]]) -> List[bool]:
    """Per image, whether the prediction is one of that image's accepted labels."""
    if len(predictions) != len(label_sets):
        raise GradconcealError(f"got {len(predictions)} predictions for {len(label_sets)} images")
    return [int(p) in accepted for p, accepted in zip(predictions, label_sets)]
