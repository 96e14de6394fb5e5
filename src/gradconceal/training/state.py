"""Resumable training state in safetensors, never pickle: one model checkpoint and one state file per epoch.

Each epoch writes ``epoch-NNNN.safetensors`` (the model; ``load_model`` opens it) and
``epoch-NNNN.state.safetensors`` (optimizer tensors flattened to ``optimizer/<param>/<name>`` plus the RNG
state, with the optimizer's, scheduler's and loop's JSON-able parts in the metadata). Only then is
``last.json`` replaced atomically, so a run killed at any moment resumes from the last complete epoch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import Tensor

from gradconceal.errors import GradconcealError
from gradconceal.folders import atomic_path, write_atomic
from gradconceal.models.checkpoint import read_checkpoint, read_safetensors, save_checkpoint
from gradconceal.models.pixel import PixelModel

log = logging.getLogger(__name__)

POINTER = "last.json"
STATE_FORMAT = "gradconceal-train-state/1"


@dataclass
class LoopState:
    """Where a run stands: epochs done, the trainer's generator state, history and time spent so far."""

    epoch: int = 0
    rng_state: Optional[Tensor] = None
    history: List[Dict[str, float]] = field(default_factory=list)
    wall_time_s: float = 0.0


def _flatten_optimizer(state: Dict[str, Any]) -> Tuple[Dict[str, Tensor], Dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (flat names) and a JSON-able rest."""
    tensors: Dict[str, Tensor] = {}
    plain: Dict[str, Dict[str, Any]] = {}
    for param_id, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer/{param_id}/{name}"] = value.detach().cpu().contiguous()
            else:
                plain.setdefault(str(param_id), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def _unflatten_optimizer(tensors: Dict[str, Tensor], meta: Dict[str, Any]) -> Dict[str, Any]:
    """Inverse of ``_flatten_optimizer``."""
    state: Dict[int, Dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, param_id, name = key.split("/", 2)
            state.setdefault(int(param_id), {})[name] = value
    for param_id, values in meta["plain"].items():
        state.setdefault(int(param_id), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def _write_json_atomic(path: Path, payload: Dict[str, Any]) -> None:
    """Write JSON to ``path`` via a temp file and rename, so readers see the old or the new file, never half."""
    write_atomic(path, json.dumps(payload, indent=1))


def save_training_state(
    out_dir: Path,
    *,
    model: PixelModel,
    architecture: str,
    config: Dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Optional[Any],
    loop: LoopState,
) -> Path:
    """Write this epoch's model and state files, then point ``last.json`` at them and drop older epochs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"epoch-{loop.epoch:04d}"
    model_path = out_dir / f"{stem}.safetensors"
    state_path = out_dir / f"{stem}.state.safetensors"
    extra = {"training": {"config": config, "epoch": loop.epoch, "history": loop.history}}
    save_checkpoint(model, model_path, architecture=architecture, extra=extra)
    tensors, optimizer_meta = _flatten_optimizer(optimizer.state_dict())
    if loop.rng_state is not None:
        tensors["rng/trainer"] = loop.rng_state.clone()
    metadata = {
        "format": STATE_FORMAT,
        "epoch": str(loop.epoch),
        "config": json.dumps(config),
        "optimizer": json.dumps(optimizer_meta),
        "scheduler": json.dumps(scheduler.state_dict()),
        "scaler": json.dumps(scaler.state_dict() if scaler is not None else None),
        "history": json.dumps(loop.history),
        "wall_time_s": repr(loop.wall_time_s),
    }
    with atomic_path(state_path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    previous = read_pointer(out_dir)
    _write_json_atomic(
        out_dir / POINTER, {"epoch": loop.epoch, "model": model_path.name, "state": state_path.name, "config": config}
    )
    if previous is not None and previous["epoch"] != loop.epoch:
        for name in (previous["model"], previous["state"]):
            (out_dir / name).unlink(missing_ok=True)
    return model_path


def read_pointer(out_dir: Path) -> Optional[Dict[str, Any]]:
    """The contents of ``last.json`` in ``out_dir``, or None when no epoch has been saved there."""
    path = out_dir / POINTER
    if not path.is_file():
        return None
    try:
        pointer = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise GradconcealError(f"cannot read {path}: {error}") from None
    if not isinstance(pointer, dict) or not isinstance(pointer.get("epoch"), int):
        raise GradconcealError(f"{path} is not a training pointer (expected epoch, model and state entries)")
    for key in ("model", "state"):
        name = pointer.get(key)
        # Only plain file names inside the run folder: a pointer must never make resume read or delete elsewhere.
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise GradconcealError(f"{path}: {key} must be a file name inside {out_dir}, got {name!r}")
    return pointer


def load_training_state(
    out_dir: Path,
    *,
    model: PixelModel,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Optional[Any],
) -> LoopState:
    """Restore model, optimizer, scheduler and scaler in place from the run in ``out_dir``; return the loop state."""
    pointer = read_pointer(out_dir)
    if pointer is None:
        raise GradconcealError(f"no training run to resume in {out_dir} (no {POINTER})")
    weights, _ = read_checkpoint(out_dir / pointer["model"])
    model.net.load_state_dict(weights, strict=True)
    state_path = out_dir / pointer["state"]
    try:
        tensors, meta = read_safetensors(state_path)
    except (SafetensorError, OSError, ValueError) as error:
        raise GradconcealError(f"cannot read training state {state_path}: {error}") from None
    if meta.get("format") != STATE_FORMAT:
        raise GradconcealError(f"{state_path} is not a gradconceal training state file")
    optimizer.load_state_dict(_unflatten_optimizer(tensors, json.loads(meta["optimizer"])))
    scheduler.load_state_dict(json.loads(meta["scheduler"]))
    scaler_state = json.loads(meta["scaler"])
    if scaler is not None and scaler_state is not None:
        scaler.load_state_dict(scaler_state)
    return LoopState(
        epoch=int(meta["epoch"]),
        rng_state=tensors.get("rng/trainer"),
        history=json.loads(meta["history"]),
        wall_time_s=float(meta["wall_time_s"]),
    )
