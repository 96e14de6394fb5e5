"""Class lists of the data sources: ImageNet-1k synsets and names (offline, from timm's bundled tables) and small sets."""

from __future__ import annotations

import functools
from typing import Dict, List, Tuple

FASHION_MNIST_CLASSES: Tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGITS_CLASSES: Tuple[str, ...] = tuple(str(digit) for digit in range(10))


@functools.lru_cache(maxsize=1)
def imagenet_synsets() -> Tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet IDs in class-index order (sorted, as torchvision's ImageFolder orders them)."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo("imagenet-1k").label_names())


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> Tuple[str, ...]:
    """Human-readable names of the 1000 ImageNet-1k classes in class-index order (e.g. 281: 'tabby, tabby cat')."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    return tuple(info.label_descriptions())


@functools.lru_cache(maxsize=1)
def imagenet_synset_index() -> Dict[str, int]:
    """Map from ImageNet-1k synset ID to its class index."""
    return {synset: index for index, synset in enumerate(imagenet_synsets())}


def imagenet_names_for(indices: List[int]) -> List[str]:
    """Class names of the given ImageNet-1k indices."""
    names = imagenet_class_names()
    return [names[index] for index in indices]
