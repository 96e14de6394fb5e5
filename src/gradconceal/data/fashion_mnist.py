"""Fashion-MNIST from its IDX files (gzipped or not): Debian's dataset-fashion-mnist install, or a folder given.

Looks in ``DIR``, ``DIR/FashionMNIST/raw`` (torchvision's layout) and ``DIR/raw``; without ``DIR`` in
Debian's folder and then in the folder ``download=True`` fills (~/.cache/gradconceal/fashion-mnist). Downloads only when asked
(``download=True``, through torchvision); nothing is fetched otherwise.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from gradconceal.data.base import TensorImageDataset
from gradconceal.data.classes import FASHION_MNIST_CLASSES
from gradconceal.files import open_regular, special_file_kind
from gradconceal.errors import GradconcealError

logger = logging.getLogger(__name__)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_DOWNLOAD_DIR = Path.home() / ".cache" / "gradconceal" / "fashion-mnist"
_PREFIX = {"train": "train", "test": "t10k"}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049


def load_fashion_mnist(
    directory: Optional[Union[str, Path]] = None, split: str = "test", download: bool = False
) -> TensorImageDataset:
    """Fashion-MNIST ``split`` ('train': 60,000, 'test': 10,000) as 1 x 28 x 28 images in [0, 1]."""
    if split not in _PREFIX:
        raise GradconcealError(f"split must be 'train' or 'test' for fashion-mnist, got {split!r}")
    folder = Path(directory) if directory is not None else None
    found = _find_files(folder, split)
    if found is None and download:
        target = folder if folder is not None else DEFAULT_DOWNLOAD_DIR
        _download(target, split)
        found = _find_files(target, split)
    if found is None:
        where = str(folder) if folder is not None else f"{DEBIAN_DIR} (Debian package dataset-fashion-mnist)"
        raise GradconcealError(
            f"Fashion-MNIST {split} files ({_PREFIX[split]}-images-idx3-ubyte[.gz], "
            f"{_PREFIX[split]}-labels-idx1-ubyte[.gz]) not found in {where}; install the Debian package, "
            "give 'fashion-mnist:DIR', or pass download=True"
        )
    images_file, labels_file = found
    images = read_idx(images_file, _IMAGES_MAGIC)
    labels = read_idx(labels_file, _LABELS_MAGIC)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise GradconcealError(
            f"{images_file} holds images of shape {images.shape} for {labels.shape[0]} labels in {labels_file}; "
            "expected N x 28 x 28 with one label each"
        )
    return TensorImageDataset(
        torch.from_numpy(images.copy()).unsqueeze(1),
        labels.astype(np.int64).tolist(),
        class_names=FASHION_MNIST_CLASSES,
        name=f"fashion-mnist:{split}",
        source=str(labels_file),
    )


def _find_files(folder: Optional[Path], split: str) -> Optional[Tuple[Path, Path]]:
    """The (images, labels) IDX files of ``split`` in ``folder`` (or Debian's folder), or None."""
    prefix = _PREFIX[split]
    roots: List[Path] = (
        [folder, folder / "FashionMNIST" / "raw", folder / "raw"]
        if folder is not None
        else [DEBIAN_DIR, DEFAULT_DOWNLOAD_DIR / "FashionMNIST" / "raw"]
    )
    for root in roots:
        images = _first_existing(root, f"{prefix}-images-idx3-ubyte")
        labels = _first_existing(root, f"{prefix}-labels-idx1-ubyte")
        if images is not None and labels is not None:
            return images, labels
    return None


def _first_existing(root: Path, stem: str) -> Optional[Path]:
    """``root/stem`` or ``root/stem.gz``, whichever is a file; one that is there but is no regular file is refused."""
    for candidate in (root / stem, root / f"{stem}.gz"):
        kind = special_file_kind(candidate)
        if kind not in (None, "a folder"):
            raise GradconcealError(
                f"Fashion-MNIST file {candidate} is {kind}, not a regular file; put the IDX file itself there"
            )
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (gzipped or not) with the expected ``magic``; raise naming the file if broken."""
    try:
        with open_regular(path, "IDX file", "give the IDX file itself") as handle:
            raw = handle.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as error:
        raise GradconcealError(f"cannot read IDX file {path}: {error}") from None
    if len(raw) < 8 or int.from_bytes(raw[:4], "big") != magic:
        found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
        raise GradconcealError(f"{path} is not an IDX file of the expected kind (magic {found}, expected {magic})")
    dims = raw[3]
    header = 4 + 4 * dims
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    expected = int(np.prod(shape))
    if len(raw) != header + expected:
        raise GradconcealError(
            f"IDX file {path} is truncated or padded: header says {shape} ({expected} bytes), found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _download(target: Path, split: str) -> None:
    """Fetch the raw files with torchvision (only on an explicit download=True)."""
    from torchvision.datasets import FashionMNIST

    logger.info("downloading Fashion-MNIST (%s) into %s", split, target)
    try:
        FashionMNIST(str(target), train=(split == "train"), download=True)
    except (OSError, RuntimeError) as error:
        raise GradconcealError(f"downloading Fashion-MNIST into {target} failed: {error}") from None
