"""scikit-learn's handwritten digits (1,797 images of 8 x 8 grey pixels, values 0..16 scaled to [0, 1]).

There is no official split: ``train`` is the first 1,437 images and ``test`` the last 360 (an 80/20 cut in
file order, so every run sees the same images).
"""

from __future__ import annotations

import torch

from gradconceal.data.base import TensorImageDataset
from gradconceal.data.classes import DIGITS_CLASSES
from gradconceal.errors import GradconcealError

DIGITS_TRAIN_SIZE = 1437


def load_digits(split: str = "test") -> TensorImageDataset:
    """The digits ``split`` ('train' or 'test') as 1 x 8 x 8 images in [0, 1]."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    targets = torch.as_tensor(bunch.target, dtype=torch.int64)
    if split == "train":
        images, targets = images[:DIGITS_TRAIN_SIZE], targets[:DIGITS_TRAIN_SIZE]
    elif split == "test":
        images, targets = images[DIGITS_TRAIN_SIZE:], targets[DIGITS_TRAIN_SIZE:]
    else:
        raise GradconcealError(f"split must be 'train' or 'test' for digits, got {split!r}")
    return TensorImageDataset(
        images.contiguous(), targets.tolist(), class_names=DIGITS_CLASSES, name=f"digits:{split}", scale=1.0
    )
