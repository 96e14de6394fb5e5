"""Provenance: what each record was computed from, so that a changed input is never reused silently.

A job's key covers the model's weights (a hash of its parameters and buffers, whatever the model came from: a
zoo name, a checkpoint, an in-memory module), the defence, the attack's settings and view, the data source,
seed and dtype, and the attack code's semantics version (``ATTACK_SEMANTICS_VERSION``). Each record also
carries a fingerprint of its image (pixels as the model sees them, and the accepted labels), so that a data
folder whose files changed is noticed image by image while adding images (a larger ``n``) keeps every record.
The job configurations are kept in the folder's ``provenance.json``, which lets a refusal say what changed.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from torch import nn

from gradconceal._version import __version__
from gradconceal.attacks.plan import ATTACK_SEMANTICS_VERSION
from gradconceal.errors import GradconcealError
from gradconceal.folders import read_json_mapping, write_atomic

PROVENANCE_FILE = "provenance.json"


def weights_fingerprint(model: nn.Module) -> str:
    """A hash (16 hex digits) of every parameter and buffer of ``model``: names, dtypes, shapes and values."""
    digest = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(model.state_dict().items()):
        if not isinstance(tensor, torch.Tensor):
            continue
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def image_fingerprint(image: torch.Tensor, accepted: Sequence[int]) -> str:
    """A hash (16 hex digits) of one image as the model sees it (C x H x W, [0, 1]) and its accepted labels."""
    data = image.detach().to("cpu", torch.float32).contiguous()
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{tuple(data.shape)}|{sorted(int(v) for v in accepted)}|".encode())
    digest.update(data.numpy().tobytes())
    return digest.hexdigest()


def images_fingerprint(fingerprints: Sequence[str]) -> str:
    """One hash of a sequence of image fingerprints (which images, in which order)."""
    return hashlib.blake2b("\n".join(fingerprints).encode(), digest_size=8).hexdigest()


def by_current_attack_code(results: Mapping[str, Any]) -> bool:
    """Whether a report's ``results.json`` (read as a dict) was written by today's attack code: its provenance
    carries this ``ATTACK_SEMANTICS_VERSION`` (older folders carry another version, or no provenance)."""
    return (results.get("provenance") or {}).get("attack_semantics") == ATTACK_SEMANTICS_VERSION


def source_digest(*packages: str) -> str:
    """A hash (16 hex digits) of the source files of gradconceal's ``packages`` (e.g. ``"masking"``): a result
    cached under it is recomputed after any edit of that code, released or not."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.blake2b(digest_size=8)
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(f"{path.relative_to(root).as_posix()}|".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def code_provenance() -> Dict[str, Any]:
    """The gradconceal version, the attack semantics version and, in a git checkout, its commit and whether the
    tree had local changes."""
    out: Dict[str, Any] = {"gradconceal": __version__, "attack_semantics": ATTACK_SEMANTICS_VERSION}
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", str(here.parent)],
                                    cwd=here, capture_output=True, text=True, timeout=10)
            out["git_dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass  # not a checkout, or no git: the version alone identifies the code
    return out


def read_job_configs(out_dir: Path) -> Dict[str, Any]:
    """The job configurations (key -> config) recorded in a folder, empty when it has none."""
    return read_json_mapping(Path(out_dir) / PROVENANCE_FILE, "jobs")


def write_job_configs(out_dir: Path, configs: Mapping[str, Any]) -> None:
    """Add ``configs`` (key -> config) to the folder's ``provenance.json``, written atomically."""
    merged = {**read_job_configs(out_dir), **dict(configs)}
    text = json.dumps({"kind": "gradconceal-provenance", "jobs": merged}, indent=1, sort_keys=True)
    try:
        write_atomic(Path(out_dir) / PROVENANCE_FILE, text + "\n")
    except OSError as error:
        raise GradconcealError(f"cannot write {Path(out_dir) / PROVENANCE_FILE}: {error}") from None


def what_changed(old: Optional[Mapping[str, Any]], new: Mapping[str, Any]) -> str:
    """In words, how the configuration ``old`` of earlier records differs from ``new`` (the current one)."""
    if not old:
        return "another configuration"
    changes = []
    old_model, new_model = old.get("model") or {}, new.get("model") or {}
    if old_model.get("weights") != new_model.get("weights"):
        changes.append(f"other weights (fingerprint {old_model.get('weights')} now {new_model.get('weights')})")
    if {k: v for k, v in old_model.items() if k != "weights"} != {k: v for k, v in new_model.items() if k != "weights"}:
        changes.append("another model entry")
    if old.get("attack_semantics") != new.get("attack_semantics"):
        changes.append(f"older attack code (semantics version {old.get('attack_semantics')}, "
                       f"now {new.get('attack_semantics')})")
    names = {"defense": "other defence settings", "attack": "other attack settings", "data": "another data source",
             "seed": "another seed", "dtype": "another dtype", "records_version": "another record format"}
    changes += [text for key, text in names.items() if old.get(key) != new.get(key)]
    return ", ".join(changes) or "another configuration"
