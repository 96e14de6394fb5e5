"""The one dataset interface every data source returns: (C x H x W float pixels in [0, 1], int label) pairs."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from gradconceal._validate import integer
from gradconceal.data.images import open_rgb
from gradconceal.errors import GradconcealError

log = logging.getLogger(__name__)


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

    def batch(self, indices: Sequence[int]) -> Tensor:
        """The images at ``indices`` as one N x C x H x W tensor (a new tensor, never a view of stored images)."""
        return torch.stack([self[index][0] for index in indices])

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
        self._cache: Optional[Tensor] = None  # rows of decoded images, filled by preload()
        self._cache_rows: Dict[int, int] = {}  # dataset index -> row of _cache
        check_labels(self.targets, len(self.class_names), source or name)

    def __getitem__(self, index: int) -> Tuple[Tensor, int]:
        row = self._cache_rows.get(index)
        if row is not None and self._cache is not None:
            return self._cache[row].clone(), self.targets[index]
        return self.decode(index), self.targets[index]

    def decode(self, index: int) -> Tensor:
        """Read and transform image ``index`` from its file (never from the preloaded cache)."""
        path = self.files[index]
        image = self.transform(open_rgb(path))
        if not isinstance(image, Tensor) or image.ndim != 3:
            raise GradconcealError(f"transform must return a C x H x W tensor, got {type(image).__name__} for {path}")
        return image

    @property
    def preloaded(self) -> int:
        """How many images are served from memory (decoded once by ``preload``) instead of read on every access."""
        return len(self._cache_rows)

    def preload(
        self,
        indices: Optional[Iterable[int]] = None,
        *,
        workers: int = 0,
        pin_memory: bool = False,
        batch_size: int = 32,
        progress: bool = True,
    ) -> "FileImageDataset":
        """Decode the images at ``indices`` (all when None) once, so that later accesses are served from memory.

        Call it when the same images are read again and again (an evaluation reads each image once per attack):
        decoding a JPEG and resizing it costs milliseconds, serving it from memory microseconds. ``workers``
        processes decode in a torch DataLoader (0: in this process); the images and their order are the same for
        any number of workers. The cache is one N x C x H x W tensor of the transform's dtype: N 224-px images
        (3 x 224 x 224 float32) take N * 0.6 MB (1000 images: 0.6 GB; ImageNet's 50,000 validation images: 30 GB).
        ``pin_memory=True`` (only where CUDA is available) puts the cache in page-locked memory, so that
        ``batch(indices).to("cuda", non_blocking=True)`` copies without blocking. A file that cannot be read
        raises GradconcealError naming it, as on access. Calling it again replaces the cache. Returns self.
        """
        workers = integer(workers, "workers", minimum=0)
        batch_size = integer(batch_size, "batch_size", minimum=1)
        if not isinstance(pin_memory, bool):
            raise GradconcealError(f"pin_memory must be True or False, got {pin_memory!r}")
        if pin_memory and not torch.cuda.is_available():
            raise GradconcealError("pin_memory=True needs CUDA (page-locked memory serves copies to a GPU), "
                                   "but torch sees no CUDA device; leave it False on a CPU")
        wanted = _unique_indices(range(len(self)) if indices is None else indices, len(self), self.name)
        self._cache, self._cache_rows = None, {}  # the old cache is freed before the new one is filled
        if not wanted:
            return self
        from tqdm.auto import tqdm

        started = time.perf_counter()
        loader = DataLoader(_Decoding(self, wanted), batch_size=batch_size, shuffle=False, num_workers=workers,
                            collate_fn=_collate_decoded)
        cache: Optional[Tensor] = None
        rows: Dict[int, int] = {}
        with tqdm(total=len(wanted), desc=f"decoding {self.name}", unit="img", leave=False, dynamic_ncols=True,
                  delay=2.0, disable=not progress) as bar:
            for batch_indices, images, error in loader:
                if images is None:
                    raise GradconcealError(error)
                if cache is None:
                    cache = torch.empty((len(wanted), *images.shape[1:]), dtype=images.dtype, pin_memory=pin_memory)
                elif images.shape[1:] != cache.shape[1:]:
                    raise GradconcealError(
                        f"transform gives {_shape(images[0])} for {self.files[batch_indices[0]]} but "
                        f"{_shape(cache[0])} for {self.files[wanted[0]]}; preload needs one image size"
                    )
                first = len(rows)
                cache[first:first + len(batch_indices)] = images
                rows.update((index, first + offset) for offset, index in enumerate(batch_indices))
                bar.update(len(batch_indices))
        self._cache, self._cache_rows = cache, rows
        seconds = time.perf_counter() - started
        log.info("%s: decoded %d images in %.1f s (%.0f images/s, %d workers)%s", self.name, len(rows), seconds,
                 len(rows) / max(seconds, 1e-9), workers, ", pinned" if pin_memory else "")
        return self

    def batch(self, indices: Sequence[int]) -> Tensor:
        """The images at ``indices`` as one N x C x H x W tensor, in page-locked memory when the cache is."""
        cache = self._cache
        if cache is None or not all(index in self._cache_rows for index in indices):
            return super().batch(indices)
        rows = torch.tensor([self._cache_rows[index] for index in indices], dtype=torch.long)
        out = torch.empty((len(indices), *cache.shape[1:]), dtype=cache.dtype, pin_memory=cache.is_pinned())
        return torch.index_select(cache, 0, rows, out=out)

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
            self._cache_rows = {index: row for index, row in self._cache_rows.items() if index < limit}
        return self


class _Decoding(Dataset):
    """The items a preload's DataLoader yields: (dataset index, file, image or None, error message or '')."""

    def __init__(self, dataset: FileImageDataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Tuple[int, str, Optional[Tensor], str]:
        index = self.indices[position]
        try:
            return index, str(self.dataset.files[index]), self.dataset.decode(index), ""
        except GradconcealError as error:  # carried back as text: a worker's exception would arrive wrapped
            return index, str(self.dataset.files[index]), None, str(error)


def _collate_decoded(items: List[Tuple[int, str, Optional[Tensor], str]]) -> Tuple[List[int], Optional[Tensor], str]:
    """(indices, stacked images, '') for a batch; (indices, None, message) when an image failed or sizes differ."""
    indices = [index for index, _, _, _ in items]
    for _, _, _, error in items:
        if error:
            return indices, None, error
    images = [image for _, _, image, _ in items if image is not None]
    for _, path, image, _ in items:
        if image is not None and image.shape != images[0].shape:
            return indices, None, (f"transform gives {_shape(image)} for {path} but {_shape(images[0])} for "
                                   f"{items[0][1]}; preload needs one image size")
    return indices, torch.stack(images), ""


def _shape(image: Tensor) -> str:
    return " x ".join(str(int(size)) for size in image.shape)


def _unique_indices(indices: Iterable[int], length: int, name: str) -> List[int]:
    """``indices`` in their order, each once; raise naming the first one outside ``0 .. length - 1``."""
    seen: Dict[int, None] = {}
    for index in indices:
        value = integer(index, "preload index")
        if not 0 <= value < length:
            raise GradconcealError(f"preload index {value} is out of range: {name} has {length} images")
        seen.setdefault(value, None)
    return list(seen)


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
