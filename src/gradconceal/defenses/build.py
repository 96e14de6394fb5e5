"""The one defence builder: a defence name, its settings and the image size give the input layers.

Used by ``evaluate`` (spec defences), the audit (``defense="challenge"``), the CLI and the demo, so that a
name means the same layers everywhere. Names and settings:

* ``none``: no layer.
* ``gcm`` (``w`` = 1e20, ``epsilon`` = 1e-8): ``GradientConcealment`` (Pei et al. 2022).
* ``resize-pad`` (``min_size``): ``RandomResizePad`` (Xie et al. 2018), a random side in [min_size, size).
* ``challenge`` (``w``, ``epsilon``, ``min_size``): GCM then resize-and-pad, the paper's challenge solution.
* ``bit-depth`` (``bits`` = 4): ``BitDepthReduction`` (Xu et al. 2018), a known masking case for the audit.

Resize-and-pad's default smallest side is the challenge's 218/224 of the image side, **rounded to the nearest
integer** (halves up) and kept in [1, size - 1]: 27 at 28 pixels, 47 at 48, 218 at 224.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from torch import nn

from gradconceal.defenses.concealment import GradientConcealment
from gradconceal.defenses.quantization import BitDepthReduction
from gradconceal.defenses.randomization import RandomResizePad
from gradconceal.errors import GradconcealError, suggest

DEFENSE_NAMES: Tuple[str, ...] = ("none", "gcm", "resize-pad", "challenge", "bit-depth")
DEFENSE_SETTINGS: Dict[str, Tuple[str, ...]] = {
    "none": (),
    "gcm": ("w", "epsilon"),
    "resize-pad": ("min_size",),
    "challenge": ("w", "epsilon", "min_size"),
    "bit-depth": ("bits",),
}
DEFAULT_SETTINGS: Dict[str, float] = {"w": 1e20, "epsilon": 1e-8, "bits": 4}
RANDOM_DEFENSES: Tuple[str, ...] = ("resize-pad", "challenge")
CONCEALING_DEFENSES: Tuple[str, ...] = ("gcm", "challenge")

# The challenge solution resizes 224-pixel images to a random side in [218, 224): the same ratio elsewhere.
CHALLENGE_MIN_RATIO = 218 / 224


def check_defense_name(name: Any) -> str:
    """A defence name, lower-cased; ``GradconcealError`` with a suggestion for an unknown one."""
    text = str(name).strip().lower() if isinstance(name, str) else None
    if text not in DEFENSE_NAMES:
        raise GradconcealError(f"unknown defense {name!r}{suggest(str(name), DEFENSE_NAMES)}; "
                               f"choose one of {', '.join(DEFENSE_NAMES)}")
    return text


def resize_pad_min_size(size: int, min_size: Optional[int] = None, *, label: str = "resize-pad") -> int:
    """Resize-and-pad's smallest side for ``size``-pixel images: ``min_size`` when given (checked to lie in
    1..size-1), else the challenge's 218/224 of ``size`` rounded to the nearest integer, within [1, size - 1]."""
    if min_size is not None:
        if not 0 < int(min_size) < size:
            raise GradconcealError(f"defence {label!r}: min_size must be in 1..{size - 1} for {size}-pixel images, "
                                   f"got {min_size}")
        return int(min_size)
    return max(1, min(size - 1, math.floor(size * CHALLENGE_MIN_RATIO + 0.5)))


def build_defense(
    name: str,
    settings: Optional[Mapping[str, Any]] = None,
    image_size: Optional[Sequence[int]] = None,
    *,
    seed: Optional[int] = None,
    label: Optional[str] = None,
) -> List[nn.Module]:
    """The input layers of defence ``name`` with ``settings`` for images of ``image_size`` (C, H, W).

    ``seed`` seeds the random layers (None: per-call draws from torch's global RNG, or per-sample seeds set by
    the evaluation runner). Raises ``GradconcealError`` for an unknown name or setting, a missing image size
    where resize-and-pad needs one, and non-square images.
    """
    kind = check_defense_name(name)
    label = label or kind
    given = dict(settings or {})
    unknown = [key for key in given if key not in DEFENSE_SETTINGS[kind]]
    if unknown:
        allowed = DEFENSE_SETTINGS[kind]
        raise GradconcealError(f"defense {kind!r} takes settings {list(allowed) or 'none'}, got {unknown[0]!r}"
                               f"{suggest(unknown[0], allowed)}")
    # The caller's values, checked one by one below; min_size alone has no default (None).
    values: Dict[str, Any] = {key: given.get(key, DEFAULT_SETTINGS.get(key)) for key in DEFENSE_SETTINGS[kind]}
    layers: List[nn.Module] = []
    if kind == "bit-depth":
        bits = values["bits"]
        if isinstance(bits, bool) or float(bits) != int(bits):
            raise GradconcealError(f"defense {label!r}: bits must be an integer, got {bits}")
        layers.append(BitDepthReduction(int(bits)))
    if kind in CONCEALING_DEFENSES:
        layers.append(GradientConcealment(w=float(values["w"]), epsilon=float(values["epsilon"])))
    if kind in RANDOM_DEFENSES:
        if image_size is None:
            raise GradconcealError(f"defense {label!r} needs the model's input size (the model has no input_size)")
        side = int(image_size[-1])
        if len(image_size) >= 2 and int(image_size[-2]) != side:
            raise GradconcealError(f"defence {label!r}: resize-and-pad needs square images, got {tuple(image_size)}")
        min_size = values["min_size"]
        if min_size is not None and (isinstance(min_size, bool) or float(min_size) != int(min_size)):
            raise GradconcealError(f"defence {label!r}: min_size must be an integer, got {min_size}")
        layers.append(RandomResizePad(size=side, min_size=resize_pad_min_size(
            side, None if min_size is None else int(min_size), label=label), seed=seed))
    return layers


def parse_defense_string(text: str) -> Tuple[str, Dict[str, float]]:
    """``"gcm:w=1e12,epsilon=1e-10"`` into ``("gcm", {"w": 1e12, "epsilon": 1e-10})``; unknown names and keys and
    non-numbers are a ``GradconcealError``."""
    name, _, options = text.strip().partition(":")
    kind = check_defense_name(name)
    allowed = DEFENSE_SETTINGS[kind]
    settings: Dict[str, float] = {}
    for item in filter(None, (part.strip() for part in options.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in allowed:
            raise GradconcealError(
                f"defense {kind!r} takes options {list(allowed) or 'none'}, got {item!r}{suggest(key, allowed)}"
            )
        try:
            number = float(value)
        except ValueError:
            raise GradconcealError(f"defense {kind!r}: {key} must be a number, got {value.strip()!r}") from None
        if not math.isfinite(number):
            raise GradconcealError(f"defense {kind!r}: {key} must be a finite number, got {value.strip()!r}")
        settings[key] = number
    return kind, settings
