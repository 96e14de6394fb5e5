"""The one parser of data source strings, used by the spec (to check a source before any image is read) and by
``load_dataset``.

Sources: ``photos`` (the shipped sample photos), ``digits`` (scikit-learn's 8 x 8 digits),
``fashion-mnist[:DIR]`` (IDX files; Debian's install without ``DIR``) and ``imagenet:DIR[:LABELS]`` (one
folder per synset, or a flat folder with a labels file). ``DataSource.to_string()`` is the canonical spelling
that specs store (and job keys are computed from), so it must not change for a given source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from gradconceal._validate import resolve_path
from gradconceal.files import special_file_kind
from gradconceal.errors import GradconcealError, suggest

__all__ = ["KINDS", "SINGLE_SET_KINDS", "SPLITS", "DataSource", "check_data_source", "parse_data_source"]

KINDS = ("photos", "digits", "fashion-mnist", "imagenet")
SINGLE_SET_KINDS = ("photos", "imagenet")  # one set of images: the source itself says which, there is no split
SPLITS = ("test", "train")
USAGE = "photos, digits, fashion-mnist[:DIR] or imagenet:DIR[:labels.txt]"


@dataclass(frozen=True)
class DataSource:
    """A parsed data source: ``kind`` (one of ``KINDS``), an optional ``folder`` and ImageNet ``labels`` file."""

    kind: str
    folder: Optional[str] = None
    labels: Optional[str] = None

    def to_string(self) -> str:
        """The canonical source string: ``kind[:folder[:labels]]``."""
        return ":".join(part for part in (self.kind, self.folder, self.labels) if part)

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
            raise GradconcealError(f"data source {source!r}: {what} not found: {self.folder}")
        if self.labels is not None and not Path(self.labels).is_file():
            kind = special_file_kind(self.labels)  # a named pipe would block the read: named, never opened
            if kind is not None:
                raise GradconcealError(f"data source {source!r}: labels file {self.labels} is {kind}, not a regular "
                                       "file; give a text file of synset IDs")
            raise GradconcealError(f"data source {source!r}: labels file not found: {self.labels}")

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
    holds a colon). ``fashion-mnist:`` with nothing after the colon is plain ``fashion-mnist``.
    """
    if not isinstance(source, str) or not source.strip():
        raise GradconcealError(f"data source must be a non-empty string such as 'photos', got {source!r}")
    kind, _, rest = source.strip().partition(":")
    if kind not in KINDS:
        raise GradconcealError(f"unknown data source {source!r}{suggest(kind, KINDS)}; use {USAGE}")
    if kind in ("photos", "digits"):
        if rest:
            raise GradconcealError(f"data source {kind!r} takes no folder, got {source!r}")
        return DataSource(kind)
    if kind == "fashion-mnist":
        return DataSource(kind, resolve_path(rest, base_dir) if rest else None)
    if not rest:
        raise GradconcealError(f"data source 'imagenet' needs a folder: imagenet:DIR[:labels.txt], got {source!r}")
    folder, labels = rest, ""
    if not Path(resolve_path(rest, base_dir)).exists() and ":" in rest:
        folder, labels = rest.rsplit(":", 1)
    return DataSource(kind, resolve_path(folder, base_dir), resolve_path(labels, base_dir) if labels else None)


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
