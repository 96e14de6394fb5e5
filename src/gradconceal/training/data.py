"""Training and test data as batches: small data sets held in memory as one tensor, large ones streamed.

Batch order comes from a permutation the trainer draws from its own generator, so a seed fixes the order
and a resumed run continues it.
"""

from __future__ import annotations

import logging
from typing import Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from gradconceal.errors import GradconcealError

log = logging.getLogger(__name__)

# Data sets whose pixels fit in this many bytes are stacked once into one tensor (Fashion-MNIST: 188 MB).
IN_MEMORY_BYTES = 2 * 1024**3


# Sources that are one set of images (a folder): the spec itself says which images, there is no split.
SINGLE_SET_SOURCES = ("imagenet", "photos")


def is_single_set(spec: str) -> bool:
    """True for data sources without train/test splits (an ImageNet-layout folder, the sample photos)."""
    return spec.partition(":")[0] in SINGLE_SET_SOURCES


def load_split(spec: str, split: str, limit: Optional[int]) -> Dataset:
    """The ``split`` ("train"/"test") of ``spec`` via ``gradconceal.data.load_dataset``; a folder is its own split."""
    from gradconceal.data import load_dataset

    return load_dataset(spec, split="test" if is_single_set(spec) else split, limit=limit)


class BatchSource:
    """Yields (images, labels) batches of a data set in a given index order."""

    def __init__(self, dataset: Dataset, *, workers: int = 0) -> None:
        self.dataset = dataset
        self.workers = workers
        self.images: Optional[Tensor] = None
        self.labels: Optional[Tensor] = None
        size = len(dataset)  # type: ignore[arg-type]  # torch's Dataset declares no __len__ (ours have one)
        if size == 0:
            raise GradconcealError(f"data set {getattr(dataset, 'name', '?')!r} is empty")
        first, _ = dataset[0]
        self.image_size = tuple(int(v) for v in first.shape)
        if size * first.numel() * 4 <= IN_MEMORY_BYTES:
            self.images, self.labels = _stack(dataset)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # torch's Dataset declares no __len__ (ours have one)

    def batches(self, order: Sequence[int] | Tensor, batch_size: int) -> Iterator[Tuple[Tensor, Tensor]]:
        """Batches of ``batch_size`` in ``order`` (the last one may be smaller)."""
        order = torch.as_tensor(order, dtype=torch.long)
        if self.images is not None and self.labels is not None:
            for start in range(0, len(order), batch_size):
                index = order[start : start + batch_size]
                yield self.images[index], self.labels[index]
            return
        loader = DataLoader(
            Subset(self.dataset, order.tolist()), batch_size=batch_size, shuffle=False, num_workers=self.workers
        )
        for images, labels in loader:
            yield images.float(), labels.long()


def _stack(dataset: Dataset) -> Tuple[Tensor, Tensor]:
    """All images and labels of ``dataset`` as two tensors (float32 N x C x H x W, int64 N)."""
    images = getattr(dataset, "images", None)
    labels = getattr(dataset, "targets", None)
    if isinstance(images, Tensor) and images.is_floating_point() and images.ndim == 4 and labels is not None:
        return images.float(), torch.as_tensor(labels, dtype=torch.long)
    items = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]  # Dataset declares no __len__
    stacked = torch.stack([image.float() for image, _ in items])
    targets = torch.as_tensor([int(label) for _, label in items], dtype=torch.long)
    log.debug("stacked %d images of shape %s in memory", len(items), tuple(stacked.shape[1:]))
    return stacked, targets
