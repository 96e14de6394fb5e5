"""Training settings: one frozen ``TrainConfig`` and the named presets (``default``, ``challenge``, ``pgd``).

A run is fully described by its config (stored in every checkpoint), so a resumed run can refuse a changed
config and a shipped checkpoint says how to retrain it.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from gradconceal import _validate as check
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
        fixed: Dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()}
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
    check.check_keys(values, field_names(), what="training setting")


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


_POSITIVE_INTS = ("epochs", "batch_size", "fgsm_eps_count", "pgd_steps")
_BOOLS = ("pretrained", "hflip", "fgsm", "fgsm_targeted", "pgd", "amp")
_CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "mix": MIXES, "device": DEVICES}
_NON_NEGATIVE = ("weight_decay", "clean_weight", "fgsm_weight", "pgd_weight")
_FRACTIONS = ("erasing", "mix_prob", "momentum", "label_smoothing")  # in [0, 1]
_LINF = " (an Linf budget on [0, 1] pixels)"


def _validate(config: TrainConfig) -> None:
    """Check types, ranges and choices once (``gradconceal._validate``), with messages naming the setting and value.

    Choices are stored lower-cased (``optimizer='AdamW'`` is ``'adamw'``), as the spec and the attacks read them.
    """
    for name in ("model", "data"):
        check.text(getattr(config, name), name)
    if config.test_data is not None:
        check.text(config.test_data, "test_data")
    for name in _BOOLS:
        check.boolean(getattr(config, name), name)
    for name, allowed in _CHOICES.items():
        object.__setattr__(config, name, check.choice(getattr(config, name), name, allowed))
    for name in _POSITIVE_INTS:
        check.integer(getattr(config, name), name, minimum=1)
    check.integer(config.crop_padding, "crop_padding", minimum=0)
    check.integer(config.seed, "seed", minimum=0)
    for name in ("train_limit", "test_limit"):
        check.optional_integer(getattr(config, name), name, minimum=1)
    check.number(config.lr, "lr", minimum=0, above=True)
    for name in _NON_NEGATIVE:
        check.number(getattr(config, name), name, minimum=0)
    for name in _FRACTIONS:
        check.number(getattr(config, name), name, minimum=0, maximum=1)
    check.number(config.step_gamma, "step_gamma", minimum=0, maximum=1, above=True)
    check.number(config.cutmix_alpha, "cutmix_alpha", minimum=0, above=True)
    check.number(config.mixup_alpha, "mixup_alpha", minimum=0, above=True)
    check.number(config.fgsm_eps_min, "fgsm_eps_min", minimum=0, maximum=1, above=True, detail=_LINF)
    check.number(config.fgsm_eps_max, "fgsm_eps_max", minimum=0, maximum=1, above=True, detail=_LINF)
    check.number(config.pgd_eps, "pgd_eps", minimum=0, maximum=1, above=True, detail=_LINF)
    if config.pgd_step_size is not None:
        check.number(config.pgd_step_size, "pgd_step_size", minimum=0, above=True)
    milestones = config.step_milestones
    if isinstance(milestones, list):
        object.__setattr__(config, "step_milestones", tuple(milestones))
    if not isinstance(milestones, (tuple, list)) or not all(
        isinstance(m, (int, float)) and not isinstance(m, bool) and 0.0 < m < 1.0 for m in milestones
    ):
        shown = list(milestones) if isinstance(milestones, tuple) else milestones
        raise GradconcealError(f"step_milestones are fractions of training in (0, 1), got {shown!r}")
    if config.fgsm_eps_min > config.fgsm_eps_max:
        raise GradconcealError(
            "fgsm_eps_min and fgsm_eps_max must satisfy 0 < min <= max, "
            f"got {config.fgsm_eps_min}, {config.fgsm_eps_max}"
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
