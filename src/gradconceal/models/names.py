"""The one parser of model names, used by the spec (to check a name before anything loads) and by ``load_model``.

A model name is one of:

- ``timm:NAME``, ``torchvision:NAME`` (a classification model of that library) or ``small:ARCH`` (a small
  28 x 28 grey net of ``gradconceal.models.small``);
- a checkpoint path: a name ending in ``.safetensors`` (or a state-dict suffix such as ``.pt``, refused with
  a hint), starting with ``.``, ``/`` or ``~``, or holding a ``/``;
- otherwise a zoo name (``lite0``, a shipped checkpoint such as ``fmnist-cnn``): the zoo lists them.

``parse_model_name`` reads the syntax only; ``check_model_name`` also checks that the model exists (the
library knows it, the file is there), without building it. The zoo's own names come from the caller
(``zoo.list_models``), so this module does not import the zoo that imports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

from gradconceal._validate import resolve_path
from gradconceal.errors import GradconcealError, suggest
from gradconceal.files import require_file

__all__ = [
    "CHECKPOINT_SUFFIX",
    "LIBRARY_KINDS",
    "STATE_DICT_SUFFIXES",
    "ModelName",
    "check_model_name",
    "check_small_name",
    "check_timm_name",
    "check_torchvision_name",
    "default_model_label",
    "parse_model_name",
    "small_architectures",
    "torchvision_names",
]

CHECKPOINT_SUFFIX = ".safetensors"
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
LIBRARY_KINDS = ("timm", "torchvision", "small")
_PATH_STARTS = (".", "/", "~")

PathLike = Union[str, Path]


@dataclass(frozen=True)
class ModelName:
    """A parsed model name: ``kind`` is 'zoo', 'timm', 'torchvision', 'small' or 'checkpoint'.

    ``name`` is the canonical spelling (a checkpoint's path made absolute when parsed with a ``base_dir``);
    ``arch`` is the library's own name for the library kinds (``resnet18`` of ``timm:resnet18``).
    """

    kind: str
    name: str
    arch: str = ""

    @property
    def path(self) -> Path:
        """The checkpoint file (checkpoint names only)."""
        if self.kind != "checkpoint":
            raise GradconcealError(f"model {self.name!r} is a {self.kind} name, not a checkpoint path")
        return Path(self.name)

    @property
    def label(self) -> str:
        """The model's default label in tables: a checkpoint's file stem, otherwise the name."""
        return Path(self.name).stem if self.kind == "checkpoint" else self.name


def _looks_like_path(name: str) -> bool:
    """Whether a name without a library prefix names a file rather than a zoo entry."""
    suffix = Path(name).suffix.lower()
    return (
        suffix in (CHECKPOINT_SUFFIX,) + STATE_DICT_SUFFIXES
        or name.startswith(_PATH_STARTS)
        or "/" in name
        or os.sep in name
    )


def parse_model_name(name: object, *, base_dir: Optional[Path] = None) -> ModelName:
    """The kind of ``name`` from its spelling alone (nothing is imported, no file is looked at but ``~``).

    Checkpoint paths are taken from ``base_dir`` when it is given (a spec's folder) and made absolute.
    """
    if not isinstance(name, (str, Path)) or not str(name).strip():
        raise GradconcealError(f"model name must be a non-empty string such as 'fmnist-cnn' or 'lite0', got {name!r}")
    text = str(name).strip()
    prefix, colon, arch = text.partition(":")
    if colon and prefix in LIBRARY_KINDS:
        return ModelName(prefix, text, arch)
    if _looks_like_path(text):
        return ModelName("checkpoint", resolve_path(text, base_dir))
    return ModelName("zoo", text)


def check_model_name(
    name: object,
    *,
    zoo_names: Callable[[], Iterable[str]],
    base_dir: Optional[Path] = None,
    weights: Optional[PathLike] = None,
) -> ModelName:
    """``parse_model_name`` plus the check that the model exists, without building or reading it.

    ``zoo_names`` lists the zoo's names (``gradconceal.models.zoo.list_models``); it is called for bare names
    only. A checkpoint must be an existing ``.safetensors`` file and takes no separate ``weights``.
    """
    parsed = parse_model_name(name, base_dir=base_dir)
    if parsed.kind == "timm":
        check_timm_name(parsed.arch)
    elif parsed.kind == "torchvision":
        check_torchvision_name(parsed.arch)
    elif parsed.kind == "small":
        check_small_name(parsed.arch)
    elif parsed.kind == "checkpoint":
        _check_checkpoint(parsed.path, weights)
    else:
        known = list(zoo_names())
        if parsed.name not in known:
            raise GradconcealError(
                f"unknown model {parsed.name!r}{suggest(parsed.name, known)}; known: {', '.join(known)}; "
                "or timm:NAME, torchvision:NAME, small:ARCH, or a path to a .safetensors checkpoint "
                "(see 'gradconceal models')"
            )
    return parsed


def default_model_label(name: str) -> str:
    """A model's label in tables: a checkpoint's file stem, otherwise the name itself."""
    return parse_model_name(name).label


def _check_checkpoint(path: Path, weights: Optional[PathLike]) -> None:
    """An existing gradconceal ``.safetensors`` checkpoint, given without separate weights."""
    require_file(path, "model checkpoint", "give the checkpoint file")
    if path.suffix.lower() != CHECKPOINT_SUFFIX:
        raise GradconcealError(
            f"{path} is a plain state dict without architecture; load it with "
            f"load_model('timm:ARCH' or 'torchvision:ARCH' or 'small:ARCH', weights='{path}') "
            "(in a spec: name = 'timm:ARCH', weights = PATH)"
        )
    if weights is not None:
        raise GradconcealError(
            f"model {str(path)!r} is a checkpoint with its own weights; do not also pass weights={str(weights)!r}"
        )


# ----------------------------------------------------------------------------------------------- libraries
def check_timm_name(arch: str) -> None:
    """Raise unless timm can build ``arch`` (with a 'did you mean' from timm's list)."""
    import timm

    if not arch or not timm.is_model(arch):
        raise GradconcealError(f"timm has no model {arch!r}{suggest(arch, timm.list_models())}")


def torchvision_names() -> List[str]:
    """torchvision's classification models (detection, segmentation and video models are not classifiers)."""
    import torchvision.models as tvm

    return list(tvm.list_models(module=tvm))


def check_torchvision_name(arch: str) -> None:
    """Raise unless ``arch`` is one of torchvision's classification models."""
    names = torchvision_names()
    if arch not in names:
        raise GradconcealError(f"torchvision has no classification model {arch!r}{suggest(arch, names)}")


def small_architectures() -> Dict[str, Callable[..., Any]]:
    """The small-net builders of ``gradconceal.models.small`` (imported on first use: it imports timm)."""
    from gradconceal.models.small import SMALL_ARCHITECTURES

    return dict(SMALL_ARCHITECTURES)


def check_small_name(arch: str) -> None:
    """Raise unless ``arch`` is a small architecture (``cnn``, ``resnet``, ...)."""
    archs = small_architectures()
    if arch not in archs:
        known = ", ".join(f"small:{n}" for n in sorted(archs))
        raise GradconcealError(f"unknown small architecture 'small:{arch}'{suggest(arch, archs)}; known: {known}")
