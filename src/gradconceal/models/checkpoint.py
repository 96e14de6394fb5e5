"""Checkpoints gradconceal writes: ``.safetensors`` whose metadata records architecture and preprocessing.

``load_model("path/model.safetensors")`` needs nothing else; nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Dict, Mapping, Optional, Tuple, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from gradconceal.files import HEAD_BYTES, PICKLE, describe_content, open_regular, require_file
from gradconceal.errors import GradconcealError
from gradconceal.folders import atomic_path, require_replaceable
from gradconceal.models.pixel import PixelModel

CHECKPOINT_FORMAT = "gradconceal-checkpoint/1"


def save_checkpoint(
    model: PixelModel,
    path: Union[str, Path],
    *,
    architecture: Optional[str] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write ``model`` (its ``net`` weights) and its preprocessing to ``path`` atomically (``folders.atomic_path``).

    A file already at ``path`` is replaced only when it is a gradconceal checkpoint; any other file (the user's
    own weights of that name) raises ``GradconcealError``.

    ``architecture`` is the zoo name that rebuilds the network (e.g. ``small:cnn``, ``timm:resnet50``);
    ``extra`` is any JSON-serialisable record (training config, accuracy) kept in the metadata.
    """
    path = Path(path)
    arch = architecture or model.architecture
    if not arch:
        raise GradconcealError("save_checkpoint needs the architecture name (e.g. 'small:cnn')")
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "architecture": arch,
        "model_name": model.model_name or path.stem,
        "mean": json.dumps(list(model.mean)),
        "std": json.dumps(list(model.std)),
        "input_size": json.dumps(list(model.input_size)),
        "class_names": json.dumps(model.class_names),
        "extra": json.dumps(dict(extra or {})),
        "channels_last": "true" if getattr(model, "channels_last", False) else "false",
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.net.state_dict().items()}
    require_replaceable(path, is_gradconceal_checkpoint, "a checkpoint")
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def safetensors_metadata(path: Union[str, Path]) -> Dict[str, str]:
    """The ``__metadata__`` of a safetensors file (empty when it has none), read by ``safetensors.safe_open``
    without loading a tensor. Raises ``SafetensorError`` or ``OSError`` for a file that is not one."""
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def read_safetensors(path: Union[str, Path]) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """The tensors (on CPU) and the ``__metadata__`` of a safetensors file, in one ``safetensors.safe_open``.
    Raises ``SafetensorError`` or ``OSError`` for a file that is not one."""
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata() or {})


def is_gradconceal_checkpoint(path: Union[str, Path]) -> bool:
    """Whether ``path`` is a safetensors file whose metadata says gradconceal wrote it (header read only)."""
    try:
        return safetensors_metadata(path).get("format") == CHECKPOINT_FORMAT
    except (SafetensorError, OSError):
        return False


def read_checkpoint(path: Union[str, Path]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Return (state_dict, metadata) of a gradconceal ``.safetensors`` checkpoint, metadata JSON-decoded.

    A file that is not one is named by what it is (``not_a_checkpoint``): an HTML page saved by a failed
    download, an empty or truncated file, a torch.save zip, text, JSON; a named pipe or device is never read.
    """
    path = require_file(path, "checkpoint", "give the .safetensors file itself")
    problem = not_a_checkpoint(path)
    if problem is not None:
        raise GradconcealError(f"cannot read checkpoint {path}: {problem}")
    try:
        tensors, raw = read_safetensors(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise GradconcealError(f"cannot read checkpoint {path}: {error} (truncated or not a safetensors file?)") from None
    if raw.get("format") != CHECKPOINT_FORMAT:
        raise GradconcealError(
            f"{path} is a safetensors file without gradconceal metadata; load it with "
            f"load_model('timm:ARCH', weights='{path}') naming its architecture"
        )
    metadata: Dict[str, Any] = {}
    for key, value in raw.items():
        if key in _JSON_KEYS:
            try:
                metadata[key] = json.loads(value)
            except ValueError:
                raise GradconcealError(f"checkpoint {path}: metadata '{key}' is not valid JSON: {value[:60]!r}") from None
        else:
            metadata[key] = value
    _check_metadata(metadata, path)
    return tensors, metadata


_JSON_KEYS = ("mean", "std", "input_size", "class_names", "extra")
_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_LARGEST_HEADER = 100_000_000  # safetensors' own limit on the JSON header
_WEIGHTS_ADVICE = "give the weights file itself"


def not_a_checkpoint(path: Union[str, Path]) -> Optional[str]:
    """Why the file at ``path`` cannot be a weights file of the kind its suffix names, judged from its bytes.

    For ``.safetensors``: empty, cut short (its header describes more bytes than the file has), a torch.save
    file, or something else entirely (``describe_content``: an HTML page, a Git LFS pointer, text, JSON). For
    ``.pt``/``.pth``/``.bin``/``.ckpt``: empty, a zip archive without a PyTorch checkpoint in it, a safetensors
    file, or something else entirely. Returns the phrase for the error ('not a checkpoint; it starts like an
    HTML page (a failed download?): download it again'), or None when the file may be one (its loader decides).
    A named pipe or a device raises ``GradconcealError`` instead of being read.
    """
    path = Path(path)
    try:
        with open_regular(path, "checkpoint", "give the weights file itself") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(HEAD_BYTES)
            if size == 0:
                return "it is empty (0 bytes): save or download it again"
            if path.suffix.lower() == ".safetensors":
                return _safetensors_problem(handle, head, size)
            if path.suffix.lower() in _TORCH_SUFFIXES:
                return _torch_file_problem(handle, head, size)
    except OSError:
        return None  # missing or unreadable: the loader says so
    return None


def _safetensors_problem(handle: BinaryIO, head: bytes, size: int) -> Optional[str]:
    """``not_a_checkpoint`` for a file named ``.safetensors``: 8 bytes of header length, a JSON header, the data."""
    length = int.from_bytes(head[:8], "little") if size >= 8 else 0
    if size < 10 or head[8:9] != b"{":
        if _is_torch_zip(handle, head) or describe_content(head) == PICKLE:
            return "it is a torch.save file, not a safetensors file: name it .pt and load it with its architecture, load_model('ARCH', weights=PATH)"
        what = describe_content(head, _WEIGHTS_ADVICE)
        return f"not a checkpoint; {what}" if what is not None else None
    if length > size - 8:
        return (f"its header claims {length} bytes, but the file has {size - 8} after the header's length "
                "(truncated, or not a safetensors file): copy or download it again")
    if length > _LARGEST_HEADER:
        return None
    handle.seek(8)
    try:
        header = json.loads(handle.read(length))
        end = max((int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"),
                  default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None  # a damaged header: safetensors names what is wrong with it
    if size < 8 + length + end:
        return (f"it is truncated: its header describes {8 + length + end} bytes, the file has {size}: "
                "copy or download it again")
    return None


def _torch_file_problem(handle: BinaryIO, head: bytes, size: int) -> Optional[str]:
    """``not_a_checkpoint`` for a file named like a torch.save file (a zip archive, or a legacy pickle)."""
    if head.startswith(b"PK\x03\x04"):
        try:
            names = zipfile.ZipFile(handle).namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return None  # cut short or damaged: torch names what it could not find
        if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
            return None
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        return f"not a checkpoint; it is a zip archive without a PyTorch checkpoint in it (it holds {shown or 'nothing'})"
    if describe_content(head) == PICKLE:
        return None  # the legacy torch.save format; torch.load(weights_only=True) reads it safely
    if size >= 10 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        return "it is a safetensors file, not a torch.save file: name it .safetensors"
    what = describe_content(head, _WEIGHTS_ADVICE)
    return f"not a checkpoint; {what}" if what is not None else None


def _is_torch_zip(handle: BinaryIO, head: bytes) -> bool:
    """Whether the file is a torch.save zip archive (one holding ``data.pkl``)."""
    if not head.startswith(b"PK\x03\x04"):
        return False
    try:
        handle.seek(0)
        return any(name.endswith("data.pkl") for name in zipfile.ZipFile(handle).namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _check_metadata(metadata: Dict[str, Any], path: Path) -> None:
    """Refuse metadata that could not describe a model (edited or foreign files), naming the file and the key."""
    where = f"checkpoint {path}: metadata"
    for key in ("architecture", "mean", "std", "input_size", "class_names"):
        if key not in metadata:
            raise GradconcealError(f"{where} lacks '{key}' (not written by save_checkpoint?)")
    if not isinstance(metadata["architecture"], str) or not metadata["architecture"]:
        raise GradconcealError(f"{where} 'architecture' must be a name such as 'small:cnn', got {metadata['architecture']!r}")
    size = metadata["input_size"]
    if not (isinstance(size, list) and len(size) == 3 and all(_is_int(v) and 0 < v <= 1 << 16 for v in size)):
        raise GradconcealError(f"{where} 'input_size' must be [C, H, W] with positive integers, got {size!r}")
    counts = "1 finite number" if size[0] == 1 else f"1 or {size[0]} finite numbers"
    for key in ("mean", "std"):
        values = metadata[key]
        if not (isinstance(values, list) and len(values) in (1, size[0])
                and all(_is_number(v) and math.isfinite(v) for v in values)):
            raise GradconcealError(f"{where} '{key}' must be a list of {counts}, got {values!r}")
    if not all(v > 0 for v in metadata["std"]):
        raise GradconcealError(f"{where} 'std' must be > 0, got {metadata['std']!r}")
    names = metadata["class_names"]
    if names is not None and not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise GradconcealError(f"{where} 'class_names' must be a non-empty list of strings (or null)")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
