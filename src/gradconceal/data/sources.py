"""The one parser of data source strings, used by the spec (to check a source before any image is read) and by
``load_dataset``.

Sources: ``photos`` (the shipped sample photos), ``digits`` (scikit-learn's 8 x 8 digits),
``fashion-mnist[:DIR]`` (IDX files; Debian's install without ``DIR``) and ``imagenet:DIR[:LABELS]`` (one
folder per synset, or a flat folder with a labels file). ``DataSource.to_string()`` is the canonical spelling
that specs store (and job keys are computed from), so it must not change for a given source.

An image size follows the kind after ``@``: ``photos@240``, ``imagenet@260:DIR[:LABELS]`` (square images of that
side, for models whose input is not 224 x 224). It sits on the kind, never at the end of a path, so a folder
whose name holds ``@`` or ``:`` reads the same with or without a size. Only the photos and ImageNet folders take
one (Fashion-MNIST is 28 x 28, the digits 8 x 8). Without a size the canonical string is what it always was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from gradconceal._validate import resolve_path
from gradconceal.files import special_file_kind
from gradconceal.errors import GradconcealError, suggest

__all__ = [
    "DEFAULT_IMAGE_SIZE", "KINDS", "MAX_IMAGE_SIZE", "MIN_IMAGE_SIZE", "SINGLE_SET_KINDS", "SIZED_KINDS", "SPLITS",
    "DataSource", "check_data_source", "parse_data_source", "source_at_size",
]

KINDS = ("photos", "digits", "fashion-mnist", "imagenet")
SINGLE_SET_KINDS = ("photos", "imagenet")  # one set of images: the source itself says which, there is no split
SIZED_KINDS = ("photos", "imagenet")  # sources that take an image size, 'photos@240'
DEFAULT_IMAGE_SIZE = 224  # the side of the sized kinds' images without '@SIZE'
_FIXED_SIZES = {"digits": "8 x 8", "fashion-mnist": "28 x 28"}
MIN_IMAGE_SIZE = 8  # ImageNet downsampled to 8 x 8 is the smallest variant in use
MAX_IMAGE_SIZE = 1024  # above the largest ImageNet evaluation sizes (600-800); more is a typo, not a model
SPLITS = ("test", "train")
USAGE = "photos[@SIZE], digits, fashion-mnist[:DIR] or imagenet[@SIZE]:DIR[:labels.txt]"
_SIZE_AT_END = re.compile(r"(?P<path>.+)@(?P<size>[0-9]+)")


@dataclass(frozen=True)
class DataSource:
    """A parsed data source: ``kind`` (one of ``KINDS``), an optional ``folder``, ImageNet ``labels`` file and image
    ``size`` (the side of the square images; None: the source's own, 224 for the photos and ImageNet)."""

    kind: str
    folder: Optional[str] = None
    labels: Optional[str] = None
    size: Optional[int] = None

    def to_string(self) -> str:
        """The canonical source string: ``kind[@size][:folder[:labels]]``."""
        head = self.kind if self.size is None else f"{self.kind}@{self.size}"
        return ":".join(part for part in (head, self.folder, self.labels) if part)

    def __str__(self) -> str:
        return self.to_string()

    @property
    def single_set(self) -> bool:
        """True for sources without train/test splits (an ImageNet-layout folder, the sample photos)."""
        return self.kind in SINGLE_SET_KINDS

    def check_paths(self, *, download: bool = False) -> None:
        """Raise unless the folder and labels file named exist (``download``: a Fashion-MNIST folder may not yet)."""
        source = self.to_string()
        if self.folder is not None and not Path(self.folder).is_dir() and not (download and self.kind == "fashion-mnist"):
            what = "ImageNet folder" if self.kind == "imagenet" else "folder"
            kind = "a regular file" if Path(self.folder).is_file() else special_file_kind(self.folder)
            if kind is not None:
                raise GradconcealError(f"data source {source!r}: {self.folder} is {kind}, not a folder; give the "
                                       f"{what} that holds the images")
            raise GradconcealError(
                f"data source {source!r}: {what} not found: {self.folder}{self._size_hint(self.folder)}"
            )
        if self.labels is not None and not Path(self.labels).is_file():
            kind = special_file_kind(self.labels)  # a named pipe would block the read: named, never opened
            if kind is not None:
                raise GradconcealError(f"data source {source!r}: labels file {self.labels} is {kind}, not a regular "
                                       "file; give a text file of synset IDs")
            raise GradconcealError(f"data source {source!r}: labels file not found: {self.labels}"
                                   f"{self._size_hint(self.labels)}")

    def _size_hint(self, path: str) -> str:
        """For a path not found that is an existing path plus '@N' (``imagenet:DIR@260``): where the size goes."""
        match = _SIZE_AT_END.fullmatch(path)
        if match is None or self.kind not in SIZED_KINDS or self.size is not None or not Path(match["path"]).exists():
            return ""
        parts = [match["path"] if part == path else part for part in (self.folder, self.labels) if part]
        return f"; an image size goes after the kind: {':'.join([self.kind + '@' + match['size'], *parts])!r}"

    def check_split(self, split: str) -> None:
        """Raise unless ``split`` is one this source has ('test' only for a folder or the photos)."""
        if self.single_set:
            if split != "test":
                raise GradconcealError(
                    f"split must be 'test' for {self.kind!r} data (the folder or photo set decides the images), "
                    f"got {split!r}"
                )
        elif split not in SPLITS:
            raise GradconcealError(f"split must be 'train' or 'test' for {self.kind}, got {split!r}")


def parse_data_source(source: object, *, base_dir: Optional[Path] = None) -> DataSource:
    """The parts of a source string; paths are taken from ``base_dir`` when given (a spec's folder) and made absolute.

    ``imagenet:A:B`` is a folder ``A`` with labels file ``B`` unless ``A:B`` itself exists (a folder whose name
    holds a colon). ``fashion-mnist:`` with nothing after the colon is plain ``fashion-mnist``. ``@SIZE`` after
    the kind (``photos@240``, ``imagenet@260:DIR``) sets the image size, a whole number from ``MIN_IMAGE_SIZE``
    to ``MAX_IMAGE_SIZE``; ``photos@224`` and ``imagenet@224:DIR`` give the same images as the plain sources.
    """
    if not isinstance(source, str) or not source.strip():
        raise GradconcealError(f"data source must be a non-empty string such as 'photos', got {source!r}")
    head, _, rest = source.strip().partition(":")
    kind, at, size_text = head.partition("@")
    if kind not in KINDS:
        raise GradconcealError(f"unknown data source {source!r}{suggest(kind, KINDS)}; use {USAGE}")
    size = _parse_size(source, kind, size_text) if at else None
    if kind in ("photos", "digits"):
        if rest:
            raise GradconcealError(f"data source {kind!r} takes no folder, got {source!r}")
        return DataSource(kind, size=size)
    if kind == "fashion-mnist":
        return DataSource(kind, resolve_path(rest, base_dir) if rest else None)
    if not rest:
        raise GradconcealError(
            f"data source 'imagenet' needs a folder: imagenet[@SIZE]:DIR[:labels.txt], got {source!r}"
        )
    folder, labels = rest, ""
    if not Path(resolve_path(rest, base_dir)).exists() and ":" in rest:
        folder, labels = rest.rsplit(":", 1)
    return DataSource(
        kind, resolve_path(folder, base_dir), resolve_path(labels, base_dir) if labels else None, size=size
    )


def _parse_size(source: str, kind: str, text: str) -> int:
    """The image size written after '@' in ``source``; raise naming the source for a kind without sizes or a bad
    number."""
    if kind not in SIZED_KINDS:
        raise GradconcealError(
            f"data source {source!r}: {kind} images are {_FIXED_SIZES[kind]} pixels and take no size; an image size "
            f"('@SIZE') applies to {' and '.join(SIZED_KINDS)} only"
        )
    example = f"{kind}@240" if kind == "photos" else f"{kind}@240:DIR"
    if not text:
        raise GradconcealError(f"data source {source!r}: the image size after '@' is missing; write e.g. {example!r}")
    if not re.fullmatch(r"[0-9]+", text) or len(text) > 6 or not MIN_IMAGE_SIZE <= int(text) <= MAX_IMAGE_SIZE:
        raise GradconcealError(
            f"data source {source!r}: the image size after '@' must be a whole number of pixels from "
            f"{MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}, got {text!r}"
        )
    return int(text)


def check_data_source(
    source: Union[str, DataSource], *, base_dir: Optional[Path] = None, split: Optional[str] = None,
    download: bool = False,
) -> DataSource:
    """``parse_data_source`` plus the checks that need no image: folders and labels file exist, the split fits."""
    parsed = source if isinstance(source, DataSource) else parse_data_source(source, base_dir=base_dir)
    parsed.check_paths(download=download)
    if split is not None:
        parsed.check_split(split)
    return parsed


def source_at_size(source: Union[str, DataSource], input_size: Sequence[int]) -> Optional[str]:
    """The canonical source string that gives ``source``'s images at a model's ``input_size`` (C, H, W), e.g.
    'photos@240' for 'photos' and (3, 240, 240); None where a size cannot help (a source of one size, a model that
    does not take square RGB images of 8 to 1024 pixels). Error messages suggest it for a mismatched model."""
    parsed = source if isinstance(source, DataSource) else parse_data_source(source)
    shape = tuple(int(v) for v in input_size)
    if parsed.kind not in SIZED_KINDS or len(shape) != 3 or shape[0] != 3 or shape[1] != shape[2]:
        return None
    side = shape[1]
    if not MIN_IMAGE_SIZE <= side <= MAX_IMAGE_SIZE:
        return None
    size = None if side == DEFAULT_IMAGE_SIZE else side  # the plain source: the same images
    return DataSource(parsed.kind, parsed.folder, parsed.labels, size).to_string()
