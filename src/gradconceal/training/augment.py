"""Batch augmentation with torchvision transforms v2: per-image crop/flip/erasing, then CutMix or MixUp.

torchvision draws from the global RNG; the trainer calls these inside ``torch.random.fork_rng`` seeded from
its own generator, so the draws are reproducible and the caller's global RNG is left untouched.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor
from torchvision.transforms import v2

from gradconceal.training.config import TrainConfig


class Augmenter:
    """Applies the config's image augmentation to each image of a batch, and its label mixing to the batch."""

    def __init__(self, config: TrainConfig, image_size: Sequence[int], num_classes: int) -> None:
        steps = []
        height, width = image_size[1], image_size[2]
        if config.crop_padding > 0:
            steps.append(v2.RandomCrop((height, width), padding=config.crop_padding))
        if config.hflip:
            steps.append(v2.RandomHorizontalFlip())
        if config.erasing > 0:
            steps.append(v2.RandomErasing(p=config.erasing, value=0.0))
        self.per_image: Optional[v2.Compose] = v2.Compose(steps) if steps else None
        self.mix: Optional[v2.Transform] = None
        self.mix_prob = config.mix_prob
        if config.mix == "cutmix+mixup":
            self.mix = v2.RandomChoice(
                [
                    v2.CutMix(alpha=config.cutmix_alpha, num_classes=num_classes),
                    v2.MixUp(alpha=config.mixup_alpha, num_classes=num_classes),
                ]
            )

    def images(self, images: Tensor) -> Tensor:
        """Independently augmented copies of each image (draws from the global RNG)."""
        if self.per_image is None:
            return images
        return torch.stack([self.per_image(image) for image in images])

    def mixed(self, images: Tensor, labels: Tensor) -> Optional[Tuple[Tensor, Tensor]]:
        """CutMix or MixUp of the batch with soft labels, with probability ``mix_prob``; None when not mixing."""
        if self.mix is None or float(torch.rand(())) >= self.mix_prob:
            return None
        return self.mix(images, labels)
