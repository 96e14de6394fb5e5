"""Training settings: one frozen ``TrainConfig`` and the named presets (``default``, ``challenge``, ``pgd``).

A run is fully described by its config (stored in every checkpoint), so a resumed run can refuse a changed
config and a shipped checkpoint says how to retrain it.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from gradconceal.errors import GradconcealError, suggest

OPTIMIZERS = ("adamw", "adamax", "sgd")
SCHEDULES = ("cosine", "step", "constant")
MIXES = ("none", "cutmix+mixup")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (model, data, optimiser, augmentation, adversarial terms, seed)."""

    model: str = "small:cnn"
    data: str = "fashion-mnist"
    test_data: Optional[str] = None
    pretrained: bool = False
    epochs: int = 5
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    schedule: str = "cosine"
    step_milestones: Tuple[float, ...] = (0.5, 0.75)
    step_gamma: float = 0.1
    crop_padding: int = 2
    hflip: bool = True
    erasing: float = 0.0
    mix: str = "none"
    mix_prob: float = 0.5
    cutmix_alpha: float = 1.0
    mixup_alpha: float = 0.2
    label_smoothing: float = 0.0
    clean_weight: float = 1.0
    fgsm: bool = False
    fgsm_eps_min: float = 0.001
    fgsm_eps_max: float = 0.08
    fgsm_eps_count: int = 20
    fgsm_weight: float = 1.0
    fgsm_targeted: bool = True
    pgd: bool = False
    pgd_eps: float = 0.1
    pgd_steps: int = 7
    pgd_step_size: Optional[float] = None
    pgd_weight: float = 1.0
    seed: int = 0
    train_limit: Optional[int] = None
    test_limit: Optional[int] = None
    device: str = "auto"
    amp: bool = True

    def __post_init__(self) -> None:
        _validate(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` applied; unknown names raise GradconcealError with a suggestion."""
        check_field_names(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict of every field (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Rebuild a config written by ``to_dict`` (e.g. from a checkpoint's metadata)."""
        check_field_names(values)
        fixed = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()}
        return cls(**fixed)

    @property
    def pgd_alpha(self) -> float:
        """PGD step size: the given one, else 2.5 * eps / steps (Madry et al.'s rule)."""
        return self.pgd_step_size if self.pgd_step_size is not None else 2.5 * self.pgd_eps / self.pgd_steps


def field_names() -> Tuple[str, ...]:
    """Names of all config fields, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig))


def check_field_names(values: Mapping[str, Any]) -> None:
    """Raise GradconcealError naming the first key that is not a TrainConfig field."""
    names = field_names()
    for key in values:
        if key not in names:
            raise GradconcealError(f"unknown training setting {key!r}{suggest(key, names)}")


# The paper's challenge recipe scaled to 28x28 grey images: Adamax with step decay, CutMix + MixUp, random
# erasing, and FGSM regularisation (an untargeted and a targeted FGSM example per batch, eps drawn from 20
# values in [0.001, 0.08], each loss weighted 1).
PRESETS: Dict[str, Dict[str, Any]] = {
    "default": {},
    "challenge": {
        "optimizer": "adamax",
        "lr": 2e-3,
        "weight_decay": 0.0,
        "schedule": "step",
        "step_milestones": (0.5, 0.75),
        "step_gamma": 0.1,
        "erasing": 0.25,
        "mix": "cutmix+mixup",
        "mix_prob": 0.5,
        "fgsm": True,
    },
    # Madry-style PGD adversarial training at Linf 0.1: the honest robust baseline (loss on PGD examples only).
    "pgd": {
        "pgd": True,
        "pgd_eps": 0.1,
        "pgd_steps": 7,
        "clean_weight": 0.0,
    },
}


def make_config(preset: str = "default", **overrides: Any) -> TrainConfig:
    """The preset's config with ``overrides`` applied (``None`` values mean: keep the preset's)."""
    if preset not in PRESETS:
        raise GradconcealError(
            f"unknown training preset {preset!r}{suggest(preset, PRESETS)}; choose from {sorted(PRESETS)}"
        )
    given = {k: v for k, v in overrides.items() if v is not None}
    check_field_names(given)
    return TrainConfig(**{**PRESETS[preset], **given})


def _validate(config: TrainConfig) -> None:
    """Check ranges and choices once, with messages that name the setting and its value."""
    choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "mix": MIXES, "device": DEVICES}
    for name, allowed in choices.items():
        value = getattr(config, name)
        if value not in allowed:
            raise GradconcealError(f"{name} must be one of {list(allowed)}, got {value!r}{suggest(value, allowed)}")
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise GradconcealError(f"{field.name} must be a finite number, got {value!r}")
    positive_ints = ("epochs", "batch_size", "fgsm_eps_count", "pgd_steps")
    for name in positive_ints:
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise GradconcealError(f"{name} must be an integer >= 1, got {value!r}")
    for name in ("train_limit", "test_limit"):
        value = getattr(config, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise GradconcealError(f"{name} must be an integer >= 1 or None, got {value!r}")
    if config.lr <= 0:
        raise GradconcealError(f"lr must be > 0, got {config.lr}")
    for name in ("weight_decay", "clean_weight", "fgsm_weight", "pgd_weight", "label_smoothing", "crop_padding"):
        if getattr(config, name) < 0:
            raise GradconcealError(f"{name} must be >= 0, got {getattr(config, name)}")
    for name in ("erasing", "mix_prob", "momentum"):
        value = getattr(config, name)
        if not 0.0 <= value <= 1.0:
            raise GradconcealError(f"{name} must be in [0, 1], got {value}")
    if not 0.0 < config.fgsm_eps_min <= config.fgsm_eps_max:
        raise GradconcealError(
            "fgsm_eps_min and fgsm_eps_max must satisfy 0 < min <= max, "
            f"got {config.fgsm_eps_min}, {config.fgsm_eps_max}"
        )
    if not 0.0 < config.pgd_eps <= 1.0:
        raise GradconcealError(f"pgd_eps must be in (0, 1] (an Linf budget on [0, 1] pixels), got {config.pgd_eps}")
    if config.fgsm_eps_max > 1.0:
        raise GradconcealError(f"fgsm_eps_max must be <= 1 (an Linf budget on [0, 1] pixels), got {config.fgsm_eps_max}")
    if config.pgd_step_size is not None and config.pgd_step_size <= 0:
        raise GradconcealError(f"pgd_step_size must be > 0, got {config.pgd_step_size}")
    if not all(0.0 < m < 1.0 for m in config.step_milestones):
        raise GradconcealError(
            f"step_milestones are fractions of training in (0, 1), got {list(config.step_milestones)}"
        )
    if not 0.0 < config.step_gamma <= 1.0:
        raise GradconcealError(f"step_gamma must be in (0, 1], got {config.step_gamma}")
    if config.cutmix_alpha <= 0 or config.mixup_alpha <= 0:
        raise GradconcealError(
            f"cutmix_alpha and mixup_alpha must be > 0, got {config.cutmix_alpha}, {config.mixup_alpha}"
        )
    if config.clean_weight == 0 and not config.fgsm and not config.pgd:
        raise GradconcealError("clean_weight is 0 and neither fgsm nor pgd is on: the loss would be empty")


def flag_name(field_name: str) -> str:
    """The CLI flag of a config field (``fgsm_eps_min`` -> ``--fgsm-eps-min``)."""
    return "--" + field_name.replace("_", "-")


def to_command(config: TrainConfig, preset: str, *, out_dir: Any = None, export: Any = None) -> str:
    """The ``gradconceal train`` command line that reproduces ``config`` (only settings that differ from the preset)."""
    base = make_config(preset, model=config.model)
    parts = ["gradconceal", "train", config.model, "--preset", preset]
    for name in field_names():
        if name == "model":
            continue
        value, default = getattr(config, name), getattr(base, name)
        if value == default:
            continue
        flag = flag_name(name)
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, tuple):
            parts.append(flag)
            parts.extend(repr(v) for v in value)
        elif value is None:
            parts.extend([flag, "none"])
        else:
            parts.extend([flag, str(value)])
    if out_dir is not None:
        parts.extend(["--out", str(out_dir)])
    if export is not None:
        parts.extend(["--export", str(export)])
    return shlex.join(parts)
