"""Attacks by name: ``create_attack("pgd", model, eps="8/255")`` and ``list_attacks()``.

Names are the attack classes' own (``fgsm``, ``pgd``, ``apgd``, ``fab``, ``cw``, ``square``, ``transfer``) plus
shorthands that fix a setting: ``apgd-ce``, ``apgd-dlr``, ``apgd-t`` (targeted DLR over the top wrong classes),
``fab-t`` (FAB-T: a targeted run per top wrong class).
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Mapping, Tuple, Type

from torch import nn

from gradconceal.attacks.apgd import APGD
from gradconceal.attacks.base import Attack
from gradconceal.attacks.cw import CW
from gradconceal.attacks.fab import FAB
from gradconceal.attacks.fgsm import FGSM
from gradconceal.attacks.pgd import PGD
from gradconceal.attacks.square import Square
from gradconceal.errors import GradconcealError, suggest

# Attacks that wrap another one (``transfer``) register themselves with ``register`` when their module is
# imported (``gradconceal.attacks`` imports them all), so that this module imports none of them.
ATTACKS: Dict[str, Type[Attack]] = {cls.name: cls for cls in (FGSM, PGD, APGD, FAB, CW, Square)}

# shorthand -> (attack, settings it fixes)
SHORTHANDS: Dict[str, Tuple[str, Mapping[str, Any]]] = {
    "apgd-ce": ("apgd", {"loss": "ce"}),
    "apgd-dlr": ("apgd", {"loss": "dlr"}),
    "apgd-t": ("apgd", {"loss": "dlr", "targeted": True}),
    "fab-t": ("fab", {"targeted": True}),
}


def register(cls: Type[Attack]) -> Type[Attack]:
    """Make attack class ``cls`` creatable by its ``name`` (a class decorator)."""
    ATTACKS[cls.name] = cls
    return cls


def list_attacks() -> List[str]:
    """Every name ``create_attack`` accepts, sorted."""
    return sorted([*ATTACKS, *SHORTHANDS])


def settings_of(name: str) -> List[str]:
    """The keyword settings attack ``name`` accepts (for messages and for the CLI)."""
    cls = ATTACKS[_resolve(name)[0]]
    parameters = inspect.signature(cls.__init__).parameters
    return [p for p, v in parameters.items() if p not in ("self", "model") and v.kind is v.KEYWORD_ONLY]


def _resolve(name: object) -> Tuple[str, Mapping[str, Any]]:
    key = name.strip().lower() if isinstance(name, str) else None
    if key in ATTACKS:
        return key, {}
    if key in SHORTHANDS:
        return SHORTHANDS[key]
    raise GradconcealError(f"unknown attack {name!r}{suggest(str(name), list_attacks())}; choose from {list_attacks()}")


def create_attack(name: str, model: nn.Module, **settings: Any) -> Attack:
    """Build attack ``name`` on ``model``; an unknown name or setting is a clear error."""
    attack, fixed = _resolve(name)
    cls = ATTACKS[attack]
    if not cls.wraps_attack:  # a wrapper passes settings on to the attack it wraps, which checks them
        accepted = settings_of(attack)
        for key in settings:
            if key not in accepted:
                raise GradconcealError(
                    f"attack {name!r} has no setting {key!r}{suggest(key, accepted)}; its settings: {accepted}"
                )
    for key, value in fixed.items():
        if key in settings and settings[key] != value:
            raise GradconcealError(f"attack {name!r} fixes {key}={value!r}; got {key}={settings[key]!r}")
    return cls(model, **{**fixed, **settings})
