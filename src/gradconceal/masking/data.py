"""The images an audit runs on: a data source name, a dataset, or an (images, labels) pair, as tensors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Set

import torch
from torch import Tensor, nn

from gradconceal.errors import GradconcealError

# The data an audit uses when none is named, by the model's input size.
DEFAULT_DATA = {(3, 224, 224): "photos", (1, 28, 28): "fashion-mnist"}


@dataclass
class AuditData:
    """Pixels in [0, 1] (N, C, H, W), integer labels, and the data's name for the report."""

    images: Tensor
    labels: Tensor
    name: str
    label_sets: Optional[List[Set[int]]] = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def head(self, count: int) -> "AuditData":
        """The first ``count`` images (with their labels and label sets)."""
        sets = self.label_sets[:count] if self.label_sets is not None else None
        return AuditData(self.images[:count], self.labels[:count], self.name, sets)


def default_data(model: nn.Module) -> str:
    """The data source that suits the model's input size (photos for 224 x 224 RGB, Fashion-MNIST for 28 x 28 grey)."""
    size = tuple(getattr(model, "input_size", ()) or ())
    if size in DEFAULT_DATA:
        return DEFAULT_DATA[size]
    raise GradconcealError(
        f"no default data for a model with input_size={size or 'unknown'}; pass data "
        "(a source such as 'imagenet:PATH', a dataset, or an (images, labels) pair)"
    )


def load_audit_data(data: Any, n: Optional[int], model: nn.Module) -> AuditData:
    """Take the first ``n`` images of ``data`` and check that they fit the model's input size."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise GradconcealError(f"n must be a positive integer or None, got {n!r}")
    label_sets = None
    if data is None:
        data = default_data(model)
    if isinstance(data, str):
        from gradconceal.data import load_dataset

        dataset = load_dataset(data, limit=n)
        name = data
    elif isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor):
        images, labels = data
        images, labels = images[:n], torch.as_tensor(labels)[:n]
        return _checked(AuditData(images, labels.long(), "tensors"), model)
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        dataset, name = data, str(getattr(data, "name", type(data).__name__))
    else:
        raise GradconcealError(f"data must be a source name, a dataset or an (images, labels) pair, got {type(data).__name__}")
    count = len(dataset) if n is None else min(n, len(dataset))
    if count == 0:
        raise GradconcealError(f"data {name!r} has no images")
    pairs = [dataset[i] for i in range(count)]
    images = torch.stack([image for image, _ in pairs])
    labels = torch.as_tensor([int(label) for _, label in pairs], dtype=torch.long)
    given_sets = getattr(dataset, "label_sets", None)
    if given_sets is not None:
        label_sets = [set(s) for s in list(given_sets)[:count]]
    return _checked(AuditData(images, labels, name, label_sets), model)


def _checked(data: AuditData, model: nn.Module) -> AuditData:
    """Refuse images of the wrong shape or outside [0, 1] before any check runs."""
    images = data.images
    if images.ndim != 4 or images.shape[0] == 0:
        raise GradconcealError(f"images must be a non-empty N x C x H x W tensor, got shape {tuple(images.shape)}")
    if not torch.is_floating_point(images):
        raise GradconcealError(f"images must be float pixels in [0, 1], got dtype {images.dtype}")
    if data.labels.shape != (images.shape[0],):
        raise GradconcealError(f"need one label per image: {images.shape[0]} images, labels of shape {tuple(data.labels.shape)}")
    if not bool(torch.isfinite(images).all()):
        raise GradconcealError("images must be pixels in [0, 1], got NaN or infinite values")
    if bool((data.labels < 0).any()):
        raise GradconcealError(f"labels must be class indices >= 0, got {int(data.labels.min())}")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 1:
        raise GradconcealError(f"images must be pixels in [0, 1], got values in [{low:.3g}, {high:.3g}]")
    size = tuple(getattr(model, "input_size", ()) or ())
    if size and tuple(images.shape[1:]) != size:
        raise GradconcealError(f"data {data.name!r} has images of size {tuple(images.shape[1:])}, the model takes {size}")
    return data


def accepted_labels(data: AuditData, predictions: Sequence[int]) -> Tensor:
    """Labels to attack: where an image accepts several labels and the model predicts one of them, that one."""
    if data.label_sets is None:
        return data.labels
    chosen = [int(p) if int(p) in accepted else int(label)
              for p, accepted, label in zip(predictions, data.label_sets, data.labels.tolist())]
    return torch.as_tensor(chosen, dtype=torch.long)
