"""Checkpoints gradconceal writes: ``.safetensors`` whose metadata records architecture and preprocessing.

``load_model("path/model.safetensors")`` needs nothing else; nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gradconceal.errors import GradconcealError
from gradconceal.models.pixel import PixelModel

CHECKPOINT_FORMAT = "gradconceal-checkpoint/1"


def save_checkpoint(
    model: PixelModel,
    path: Union[str, Path],
    *,
    architecture: Optional[str] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write ``model`` (its ``net`` weights) and its preprocessing to ``path`` atomically (temp file + rename).

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
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_checkpoint(path: Union[str, Path]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Return (state_dict, metadata) of a gradconceal ``.safetensors`` checkpoint, metadata JSON-decoded."""
    path = Path(path)
    if not path.is_file():
        raise GradconcealError(f"checkpoint not found: {path}")
    try:
        tensors = load_file(str(path))
        with open(path, "rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_len))
    except (SafetensorError, OSError, ValueError) as error:
        raise GradconcealError(f"cannot read checkpoint {path}: {error} (truncated or not a safetensors file?)") from None
    raw = header.get("__metadata__") or {}
    if raw.get("format") != CHECKPOINT_FORMAT:
        raise GradconcealError(
            f"{path} is a safetensors file without gradconceal metadata; load it with "
            f"load_model('timm:ARCH', weights='{path}') naming its architecture"
        )
    metadata: Dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("mean", "std", "input_size", "class_names", "extra"):
            metadata[key] = json.loads(value)
        else:
            metadata[key] = value
    return tensors, metadata
