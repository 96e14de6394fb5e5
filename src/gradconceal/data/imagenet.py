"""ImageNet-1k images from a folder: the standard one-folder-per-synset layout, or a flat folder plus a labels file.

Class indices always follow the sorted ImageNet-1k synset order (the order torchvision's ImageFolder gives the
full 1000-folder validation set, and the order pretrained models use), also when a folder holds only a few
synsets. Labels files hold synset IDs (``n01440764``), never the devkit's 1-based ILSVRC IDs, in one of two forms:

- one synset per line, line i labelling the i-th image file in sorted file-name order;
- ``filename synset`` per line (whitespace or comma between; extra fields ignored, so Kaggle's
  ``LOC_val_solution.csv`` works; a file name may omit its extension); only the listed files are used.

Synset-folder datasets are ordered round-robin over classes (each class's first image, then each class's
second, ...), so ``limit=N`` takes a class-balanced sample instead of the first classes only.

Links and special files (``docs/errors.md``): each image file is read once. A symbolic link to a folder is
followed unless it leads back to a folder above it (a loop: skipped with a warning); a link to an image
already read for the same class is counted once (with a warning); one file reached from two class folders
(a linked class folder, a link to another class's image) is refused, since it would carry two labels. A hard
link is a file of its own (two names, two images). Only regular files are read: a named pipe, socket, device
or broken link with an image's name is refused before any image is read, as are folders that cannot be listed.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple, Union

from torch import Tensor
from torchvision.datasets.folder import IMG_EXTENSIONS

from gradconceal.data.base import FileImageDataset
from gradconceal.data.classes import imagenet_class_names, imagenet_synset_index, imagenet_synsets
from gradconceal.files import open_regular, special_file_kind
from gradconceal.data.images import center_crop_transform
from gradconceal.errors import GradconcealError, suggest

log = logging.getLogger(__name__)


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
    by_class: Dict[int, List[Path]] = {}
    first_seen: Dict[str, Tuple[Path, str]] = {}  # real path of each image -> (where it was found, its class folder)
    for folder in folders:
        files = by_class.setdefault(index[folder], [])
        for file in _class_images(root, folder):
            real = os.path.realpath(file)
            if real in first_seen:
                earlier, earlier_folder = first_seen[real]
                if earlier_folder != folder:
                    raise GradconcealError(
                        f"image file {real} is in two class folders through a symbolic link, {earlier_folder} (as "
                        f"{earlier}) and {folder} (as {file}); one image cannot have two labels: remove the link"
                    )
                log.warning("image %s is a link to %s, already read for %s: counted once", file, earlier, folder)
                continue
            first_seen[real] = (file, folder)
            files.append(file)
        if not files:
            raise GradconcealError(
                f"class folder {root / folder} holds no image files ({', '.join(IMG_EXTENSIONS)}); "
                "add its images or remove the folder"
            )
    items: List[Tuple[Path, int]] = []
    depth = max(len(files) for files in by_class.values())
    for rank in range(depth):
        for label in sorted(by_class):
            if rank < len(by_class[label]):
                items.append((by_class[label][rank], label))
    return items


def _class_images(root: Path, folder: str) -> List[Path]:
    """The image files under ``root/folder`` in torchvision's order (by folder path, then by name), each checked
    to be a regular file; links to folders are followed, except back to a folder above (a loop)."""
    top = os.path.join(str(root), folder)
    listed = sorted(_walk(top, (os.path.realpath(str(root)), os.path.realpath(top)), set()))
    images: List[Path] = []
    for directory, names in listed:
        for name in sorted(names):
            if name.lower().endswith(IMG_EXTENSIONS):
                images.append(_regular_image(Path(directory, name), root))
    return images


def _walk(directory: str, above: Tuple[str, ...], walked: Set[str]) -> Iterator[Tuple[str, List[str]]]:
    """(folder, names of its non-folder entries) for ``directory`` and every folder below it.

    ``above`` holds the real paths of the folders from the data folder down to ``directory``: a link back to one
    of them is a loop and is not followed. ``walked`` holds the real folders already listed for this class: a
    second link to one adds nothing and is not listed again.
    """
    walked.add(os.path.realpath(directory))
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as error:
        raise GradconcealError(
            f"cannot list folder {directory} of the data: {error.strerror or error}; fix its permissions or remove it"
        ) from None
    folders: List[str] = []
    others: List[str] = []
    for entry in entries:
        try:
            is_folder = entry.is_dir()  # follows links
        except OSError:
            is_folder = False
        (folders if is_folder else others).append(entry.name)
    yield directory, others
    for name in folders:
        path = os.path.join(directory, name)
        real = os.path.realpath(path)
        if real in above:
            log.warning("not following %s: a symbolic link to %s, a folder above it (a loop)", path, real)
            continue
        if real in walked:
            continue
        yield from _walk(path, above + (real,), walked)


def _regular_image(path: Path, root: Path) -> Path:
    """``path`` if it is a regular file (or a link to one); raise naming what it is otherwise."""
    kind = special_file_kind(path)
    if kind is not None:
        raise GradconcealError(
            f"image {path} is {kind}, not a regular file; only regular files are read as images: remove it from {root}"
        )
    return path


def _flat_items(root: Path, labels_file: Path) -> List[Tuple[Path, int]]:
    """(file, class index) pairs of a flat folder labelled by ``labels_file``."""
    try:
        with open_regular(labels_file, "labels file", "give a text file of synset IDs") as handle:
            text = handle.read().decode("utf-8")
    except FileNotFoundError:
        raise GradconcealError(f"labels file not found: {labels_file}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise GradconcealError(f"cannot read labels file {labels_file}: {error}") from None
    rows = [(number, re.split(r"[\s,]+", line.strip())) for number, line in enumerate(text.splitlines(), 1)]
    rows = [(number, fields) for number, fields in rows if fields and fields[0] and not fields[0].startswith("#")]
    if not rows:
        raise GradconcealError(f"labels file {labels_file} is empty")
    if all(len(fields) == 1 for _, fields in rows):
        images = sorted(_regular_image(p, root) for p in _flat_entries(root) if p.name.lower().endswith(IMG_EXTENSIONS))
        if len(images) != len(rows):
            raise GradconcealError(
                f"labels file {labels_file} has {len(rows)} lines but {root} holds {len(images)} image files; "
                "one synset per line labels the image files in sorted name order"
            )
        items: List[Tuple[Path, int]] = [
            (image, _synset_label(fields[0], labels_file, number)) for image, (number, fields) in zip(images, rows)
        ]
        return _read_once(items, labels_file)
    if len(rows[0][1]) > 1 and not any(char.isdigit() for char in rows[0][1][1]):
        rows = rows[1:]  # a header line such as 'ImageId,PredictionString'
    if not rows:
        raise GradconcealError(f"labels file {labels_file} holds a header line but no labels")
    by_name = {p.name: p for p in _flat_entries(root)}
    by_stem = {p.stem: p for p in by_name.values() if p.name.lower().endswith(IMG_EXTENSIONS)}
    items = []
    for number, fields in rows:
        if len(fields) < 2:
            raise GradconcealError(
                f"line {number} of {labels_file} has one field, others have two: use 'filename synset' on every line"
            )
        image = by_name.get(fields[0]) or by_stem.get(fields[0])
        if image is None:
            raise GradconcealError(f"line {number} of {labels_file} names {fields[0]!r}, which is not a file in {root}")
        items.append((_regular_image(image, root), _synset_label(fields[1], labels_file, number)))
    return _read_once(sorted(items, key=lambda item: item[0].name), labels_file)


def _flat_entries(root: Path) -> List[Path]:
    """Everything in the flat folder ``root`` but its folders (links to folders included among the folders)."""
    try:
        return [p for p in root.iterdir() if not p.is_dir()]
    except OSError as error:
        raise GradconcealError(f"cannot list ImageNet folder {root}: {error.strerror or error}") from None


def _read_once(items: List[Tuple[Path, int]], labels_file: Path) -> List[Tuple[Path, int]]:
    """``items`` with each file once: a second name (a symbolic link) of a file with the same label is dropped
    with a warning; one with another label is refused."""
    first: Dict[str, Tuple[Path, int]] = {}
    kept: List[Tuple[Path, int]] = []
    for image, label in items:
        real = os.path.realpath(image)
        if real in first:
            earlier, earlier_label = first[real]
            if earlier_label != label:
                raise GradconcealError(
                    f"{labels_file} labels {image.name} and {earlier.name} differently, but they are one file "
                    "(a symbolic link); one image cannot have two labels: remove the link or fix the labels"
                )
            log.warning("image %s is a link to %s, already read: counted once", image, earlier)
            continue
        first[real] = (image, label)
        kept.append((image, label))
    return kept


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

