"""ImageNet-1k images from a folder: the standard one-folder-per-synset layout, or a flat folder plus a labels file.

Class indices always follow the sorted ImageNet-1k synset order (the order torchvision's ImageFolder gives the
full 1000-folder validation set, and the order pretrained models use), also when a folder holds only a few
synsets. Labels files hold synset IDs (``n01440764``), never the devkit's 1-based ILSVRC IDs, in one of two forms:

- one synset per line, line i labelling the i-th image file in sorted file-name order;
- ``filename synset`` per line (whitespace or comma between; extra fields ignored, so Kaggle's
  ``LOC_val_solution.csv`` works; a file name may omit its extension); only the listed files are used.

Synset-folder datasets are ordered round-robin over classes (each class's first image, then each class's
second, ...), so ``limit=N`` takes a class-balanced sample instead of the first classes only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

from torch import Tensor
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from gradconceal.data.base import FileImageDataset
from gradconceal.data.classes import imagenet_class_names, imagenet_synset_index, imagenet_synsets
from gradconceal.data.images import center_crop_transform
from gradconceal.errors import GradconcealError, suggest


def load_imagenet(
    path: Union[str, Path],
    labels_file: Optional[Union[str, Path]] = None,
    *,
    transform: Optional[Callable[..., Tensor]] = None,
) -> FileImageDataset:
    """ImageNet images under ``path`` (synset folders, or flat with ``labels_file``); default resize 256, crop 224."""
    root = Path(path)
    if not root.is_dir():
        raise GradconcealError(f"ImageNet folder not found: {root}")
    transform = transform or center_crop_transform(224, resize=256, interpolation="bicubic")
    if labels_file is not None:
        items = _flat_items(root, Path(labels_file))
        source = str(labels_file)
    else:
        items = _synset_folder_items(root)
        source = str(root)
    return FileImageDataset(
        items, transform=transform, class_names=imagenet_class_names(), name=f"imagenet:{root}", source=source
    )


def _synset_folder_items(root: Path) -> List[Tuple[Path, int]]:
    """(file, class index) pairs of a one-folder-per-synset tree, round-robin over classes."""
    folders = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not folders:
        raise GradconcealError(
            f"{root} has no synset folders (n01440764/, ...); for a flat folder of images give a labels file: "
            f"'imagenet:{root}:labels.txt'"
        )
    index = imagenet_synset_index()
    for folder in folders:
        if folder not in index:
            raise GradconcealError(
                f"folder {root / folder} is not an ImageNet-1k synset ID{suggest(folder, imagenet_synsets())}"
            )
    class_to_idx = {folder: index[folder] for folder in folders}
    try:
        pairs = make_dataset(str(root), class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as error:
        raise GradconcealError(f"ImageNet folder {root}: {error}") from None
    by_class: Dict[int, List[Path]] = {}
    for file, label in pairs:
        by_class.setdefault(label, []).append(Path(file))
    items: List[Tuple[Path, int]] = []
    depth = max(len(files) for files in by_class.values())
    for rank in range(depth):
        for label in sorted(by_class):
            if rank < len(by_class[label]):
                items.append((by_class[label][rank], label))
    return items


def _flat_items(root: Path, labels_file: Path) -> List[Tuple[Path, int]]:
    """(file, class index) pairs of a flat folder labelled by ``labels_file``."""
    if not labels_file.is_file():
        raise GradconcealError(f"labels file not found: {labels_file}")
    try:
        text = labels_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise GradconcealError(f"cannot read labels file {labels_file}: {error}") from None
    rows = [(number, re.split(r"[\s,]+", line.strip())) for number, line in enumerate(text.splitlines(), 1)]
    rows = [(number, fields) for number, fields in rows if fields and fields[0] and not fields[0].startswith("#")]
    if not rows:
        raise GradconcealError(f"labels file {labels_file} is empty")
    if all(len(fields) == 1 for _, fields in rows):
        images = sorted(p for p in root.iterdir() if p.is_file() and p.name.lower().endswith(IMG_EXTENSIONS))
        if len(images) != len(rows):
            raise GradconcealError(
                f"labels file {labels_file} has {len(rows)} lines but {root} holds {len(images)} image files; "
                "one synset per line labels the image files in sorted name order"
            )
        return [(image, _synset_label(fields[0], labels_file, number)) for image, (number, fields) in zip(images, rows)]
    if len(rows[0][1]) > 1 and not any(char.isdigit() for char in rows[0][1][1]):
        rows = rows[1:]  # a header line such as 'ImageId,PredictionString'
    if not rows:
        raise GradconcealError(f"labels file {labels_file} holds a header line but no labels")
    by_name = {p.name: p for p in root.iterdir() if p.is_file()}
    by_stem = {p.stem: p for p in by_name.values() if p.name.lower().endswith(IMG_EXTENSIONS)}
    items: List[Tuple[Path, int]] = []
    for number, fields in rows:
        if len(fields) < 2:
            raise GradconcealError(
                f"line {number} of {labels_file} has one field, others have two: use 'filename synset' on every line"
            )
        image = by_name.get(fields[0]) or by_stem.get(fields[0])
        if image is None:
            raise GradconcealError(f"line {number} of {labels_file} names {fields[0]!r}, which is not a file in {root}")
        items.append((image, _synset_label(fields[1], labels_file, number)))
    return sorted(items, key=lambda item: item[0].name)


def _synset_label(token: str, labels_file: Path, number: int) -> int:
    """Class index of the synset ``token`` on line ``number``; raise naming the file for anything else."""
    index = imagenet_synset_index()
    if token in index:
        return index[token]
    if token.isdigit():
        raise GradconcealError(
            f"line {number} of {labels_file} holds the number {token}, not a synset ID: labels files need WordNet IDs "
            "(n01440764); the devkit's 1-based ILSVRC IDs follow another order and are not accepted"
        )
    raise GradconcealError(
        f"line {number} of {labels_file}: {token!r} is not an ImageNet-1k synset ID{suggest(token, imagenet_synsets())}"
    )

