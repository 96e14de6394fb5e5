"""The one description of an attack in a protocol, and the one rule for when its view applies to a model.

An ``AttackPlan`` is what presets return, what a spec's ``attacks`` resolve to, what the runner builds and the
report lists: a label, the attack's registry name and settings, the attacker's view (``plain``, ``bpda``,
``eot``, ``bpda+eot``, ``transfer``), its group in the tables, where it came from, and its budget.

Views (Athalye et al. 2018; Tramèr et al. 2020):

* ``plain``: the defended model through plain autograd (the paper's white-box protocol).
* ``bpda``: concealment layers differentiated as the identity; on a model without one it is plain autograd,
  and it runs there too so that both rows' worst cases cover the same attacks.
* ``eot`` / ``bpda+eot``: the loss gradient averaged over ``eot_samples`` draws of the random layers; applies
  only to a model with a random layer.
* ``transfer``: crafted on the undefended model (``normalize`` + ``base`` of a ``DefendedModel``), judged on the
  defended one; applies only where such an undefended counterpart exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from torch import nn

from gradconceal.attacks.adaptive import adaptive_view
from gradconceal.attacks.randomness import random_layers
from gradconceal.attacks.base import Attack
from gradconceal.attacks.labelsets import AcceptedLabels
from gradconceal.attacks.registry import create_attack
from gradconceal.attacks.transfer import default_surrogate
from gradconceal.defenses.concealment import GradientConcealment
from gradconceal.errors import GradconcealError, suggest

# Bump whenever any attack's behaviour changes (its steps, random starts, success rule, what it counts): the
# evaluation's job keys include it, so records of the older attack code are never resumed as if current.
# 2: NaN/inf logits never count as success, and a sample with a non-finite logit, loss or gradient is
# recorded as non-finite (never robust) instead of robust.
# 3: PGD and APGD take ``start`` ("foolbox": every run uniform in the ball, as before; "clean-first": the first
# run at the clean image, restarts at a radius uniform in [0, eps]); FAB and FAB-T added.
# 4: the adaptive preset's PGD and APGD start at the clean image ("clean-first") and the preset holds AutoAttack's
# standard ensemble (cascades); plans carry ``cascade`` (an attack sees only images still robust after the
# earlier members of its cascade) and ``n`` (how many images it attacks).
ATTACK_SEMANTICS_VERSION = 4

VIEWS: Tuple[str, ...] = ("plain", "bpda", "eot", "bpda+eot", "transfer")
GROUPS: Tuple[str, ...] = ("white-box", "adaptive", "sweep")
VIEW_SETTINGS: Tuple[str, ...] = ("eot_samples",)  # settings of the attacker's view, not of the attack itself
GRADIENT_FREE: Tuple[str, ...] = ("square",)


def view_applies(view: str, *, random: bool, has_surrogate: bool = True) -> bool:
    """The one rule: whether ``view`` has something to act on in a model with (``random``) or without random
    layers, and with or without an undefended counterpart for transfer (``has_surrogate``)."""
    if view not in VIEWS:
        raise GradconcealError(f"view must be one of {list(VIEWS)}, got {view!r}{suggest(str(view), VIEWS)}")
    if "eot" in view:
        return random
    if view == "transfer":
        return has_surrogate
    return True


def group_of(attack: str, view: str) -> str:
    """The table block of an attack, by what the attacker sees alone: 'white-box' (the paper's protocol) for a
    gradient attack through plain autograd, 'adaptive' for gradient-free, BPDA, EOT and transfer attacks. A
    preset's plain-gradient APGD is white-box too: through GCM its gradient is the concealed one."""
    return "white-box" if view == "plain" and attack not in GRADIENT_FREE + ("transfer",) else "adaptive"


def jsonable(value: Any) -> Any:
    """Tuples to lists, recursively, so that settings (or a whole spec) and their JSON round-trip compare equal."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def undefended(defended: nn.Module) -> nn.Module:
    """The model without its input defences (the transfer surrogate): ``base`` alone when there is no
    normalisation, else ``normalize`` then ``base`` (``default_surrogate`` checks the model). The new wrapper
    takes the defended model's mode; the model's own layers keep theirs (no recursive ``eval()``)."""
    surrogate = default_surrogate(defended)
    if not isinstance(surrogate, nn.Sequential):
        return surrogate
    if isinstance(surrogate[0], nn.Identity):
        return surrogate[1]
    surrogate.training = bool(defended.training)
    return surrogate


@dataclass(frozen=True)
class AttackPlan:
    """One attack of a protocol: label, attack name and settings, the attacker's view, group, origin, budget.

    ``settings`` are the attack's keyword settings plus the view's (``eot_samples`` for EOT views); ``norm``
    and ``eps`` (eps in [0, 1] pixel units) are filled in when the plan is resolved for an image size.
    """

    label: str
    attack: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    view: str = "plain"
    group: str = "white-box"  # "white-box" (plain autograd, as in the paper), "adaptive", or "sweep"
    origin: str = "explicit"  # preset name, "explicit" or "sweep"
    keep: bool = False
    reason: Optional[str] = None  # why settings differ from the preset (e.g. the demo's time budget)
    norm: Optional[str] = None
    eps: Optional[float] = None
    # The cascade the attack belongs to (AutoAttack's protocol): in each row it runs only on the images that
    # are still robust after the earlier attacks of the same cascade; its column is then the cascade's robust
    # accuracy so far, and the last member's is the ensemble's. None: every clean-correct image.
    cascade: Optional[str] = None
    n: Optional[int] = None  # the first n images of the data are attacked (None: all of them)

    def __post_init__(self) -> None:
        if self.view not in VIEWS:
            raise GradconcealError(f"view must be one of {list(VIEWS)}, got {self.view!r}{suggest(self.view, VIEWS)}")
        if self.group not in GROUPS:
            raise GradconcealError(f"group must be one of {list(GROUPS)}, got {self.group!r}")
        object.__setattr__(self, "settings", dict(self.settings))
        if self.n is not None and (isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1):
            raise GradconcealError(f"attack {self.label!r}: n (images to attack) must be an integer >= 1, got {self.n!r}")
        if self.cascade is not None and (not isinstance(self.cascade, str) or not self.cascade.strip()):
            raise GradconcealError(f"attack {self.label!r}: cascade must be a non-empty name, got {self.cascade!r}")

    def images(self, n_images: int) -> int:
        """How many of the data's first ``n_images`` images this attack runs on."""
        return n_images if self.n is None else min(self.n, n_images)

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True, default=str))

    # -- the view ----------------------------------------------------------------------------------------
    @property
    def eot_samples(self) -> int:
        """Draws per gradient of an EOT view (1 for the other views)."""
        return int(self.settings.get("eot_samples", 1)) if "eot" in self.view else 1

    @property
    def attack_settings(self) -> Dict[str, Any]:
        """The settings passed to the attack itself (the view's own settings removed)."""
        return {k: v for k, v in self.settings.items() if k not in VIEW_SETTINGS}

    def applies(self, *, random: bool, has_surrogate: bool = True) -> bool:
        """``view_applies`` for this plan's view."""
        return view_applies(self.view, random=random, has_surrogate=has_surrogate)

    def applies_to(self, model: nn.Module) -> bool:
        """Whether this plan's view has something to act on in ``model`` (``view_applies``)."""
        has_surrogate = isinstance(getattr(model, "base", None), nn.Module) and isinstance(
            getattr(model, "defenses", None), nn.Module)
        return self.applies(random=bool(random_layers(model)), has_surrogate=has_surrogate)

    def same_attack_as(self, other: "AttackPlan", model: nn.Module) -> bool:
        """Whether ``build(model)`` makes the very attack ``other.build(model)`` makes, on the same function of the
        input, so that both give the same record of every image attacked in the same batches.

        True when the attack and its settings are equal, neither view is transfer, the EOT draws are equal and
        BPDA either acts in both views or in neither: on a model without a concealment layer BPDA is plain
        autograd (``build`` does not wrap it), so there a 'BPDA C&W-L2' is the paper's 'C&W-L2'. Cascade members
        are never the same as anything (each sees only what the earlier members left).
        """
        if self is other or self.cascade is not None or other.cascade is not None:
            return self is other
        if "transfer" in (self.view, other.view, self.attack, other.attack):
            return False
        concealed = any(isinstance(m, GradientConcealment) for m in model.modules())
        return (self.attack == other.attack
                and jsonable(self.attack_settings) == jsonable(other.attack_settings)
                and self.eot_samples == other.eot_samples
                and (concealed and "bpda" in self.view) == (concealed and "bpda" in other.view))

    def build(self, model: nn.Module, accepted: Optional[Sequence[int]] = None, label: Optional[int] = None) -> Attack:
        """The attack on ``model`` seen through this plan's view.

        Transfer attacks craft on the undefended model (``undefended``); BPDA wraps only a model with a
        concealment layer (elsewhere plain autograd is the same function). With several ``accepted`` labels
        (one image), the attack sees them merged into ``label`` (``AcceptedLabels``).
        """

        def seen(target: nn.Module) -> nn.Module:
            if accepted is None or len(accepted) < 2:
                return target
            return AcceptedLabels(target, accepted, int(label if label is not None else accepted[0]))

        settings = self.attack_settings
        if self.attack == "transfer" or self.view == "transfer":
            extra = {} if self.attack == "transfer" else {"attack": self.attack}
            return create_attack("transfer", seen(model), surrogate=seen(undefended(model)), **extra, **settings)
        bpda = "bpda" in self.view and any(isinstance(m, GradientConcealment) for m in model.modules())
        if not bpda and self.eot_samples == 1:
            return create_attack(self.attack, seen(model), **settings)
        view = adaptive_view(seen(model), bpda=bpda, eot_samples=self.eot_samples)  # takes the model's mode
        return create_attack(self.attack, view, **settings)

    # -- serialisation -----------------------------------------------------------------------------------
    def config(self) -> Dict[str, Any]:
        """What decides the attack's records (compared on resume to refuse mixing two configurations); ``n``
        does not (a record of image i is the same whatever the count), ``cascade`` does (the evaluation's job
        key adds the earlier members' configurations)."""
        out: Dict[str, Any] = {"attack": self.attack, "view": self.view, "settings": jsonable(dict(self.settings))}
        if self.cascade is not None:
            out["cascade"] = self.cascade
        return out

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict (``AttackPlan.from_dict`` reads it back)."""
        out = {"label": self.label, "group": self.group, "origin": self.origin, **self.config()}
        out.update(norm=self.norm, eps=self.eps, keep=self.keep)
        if self.n is not None:
            out["n"] = self.n
        if self.reason:
            out["reason"] = self.reason
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AttackPlan":
        """The plan written by ``to_dict`` (unknown keys are an error)."""
        known = ("label", "attack", "settings", "view", "group", "origin", "keep", "reason", "norm", "eps", "cascade",
                 "n")
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise GradconcealError(f"attack plan has unknown keys {unknown}; known: {sorted(known)}")
        if "label" not in data or "attack" not in data:
            raise GradconcealError(f"attack plan needs 'label' and 'attack', got {dict(data)}")
        return cls(**{k: data[k] for k in known if k in data})
