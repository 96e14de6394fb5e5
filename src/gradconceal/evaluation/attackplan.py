"""From a spec's ``attacks`` (presets, explicit entries, an eps sweep) to the attacks the runner builds.

Every attack is validated here before any model loads: its settings are checked by building it on a
stand-in model that only declares the image size, so budgets beyond the image's largest distance, unknown
settings and bad values are caught with the attack library's own messages.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from torch import Tensor, nn

from gradconceal.errors import GradconcealError, suggest
from gradconceal.evaluation.labelsets import AcceptedLabels
from gradconceal.evaluation.spec import AttackPlan, DefenseEntry, EvalSpec

_GRADIENT_FREE = ("square",)
_VIEW_SETTINGS = ("eot_samples",)  # settings of the attacker's view, not of the attack itself


class _ShapeProbe(nn.Module):
    """A stand-in model that only declares its input size; attacks validate their settings against it."""

    def __init__(self, image_size: Sequence[int]) -> None:
        super().__init__()
        self.input_size = tuple(int(v) for v in image_size)
        self.base = self  # lets a transfer attack find its default surrogate

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - never called
        raise RuntimeError("the shape probe is not a model")


def group_of(attack: str, view: str, origin: str = "explicit") -> str:
    """The table block of an attack: 'white-box' (the paper's protocol) or 'adaptive'.

    Preset attacks keep their preset's role (the adaptive preset's APGD-DLR is a stronger plain-gradient
    attack, listed with the adaptive ones as in the preset); explicit attacks are 'white-box' when they
    differentiate the defended model through plain autograd, else 'adaptive'.
    """
    if origin == "paper":
        return "white-box"
    if origin in ("adaptive", "autoattack-like"):
        return "adaptive"
    return "white-box" if view == "plain" and attack not in _GRADIENT_FREE + ("transfer",) else "adaptive"


def validate_attack(attack: str, settings: Mapping[str, Any], view: str, image_size: Sequence[int],
                    where: str) -> Tuple[str, float]:
    """Build the attack on a stand-in model (unknown names, settings, bad values fail here); returns (norm, eps)."""
    from gradconceal.attacks import create_attack

    if "eot_samples" in settings and "eot" not in view:
        raise GradconcealError(f"{where}: eot_samples needs view 'eot' or 'bpda+eot', got view {view!r}")
    attack_settings = {k: v for k, v in settings.items() if k not in _VIEW_SETTINGS}
    probe = _ShapeProbe(image_size)
    try:
        if attack == "transfer" or view == "transfer":
            extra = {} if attack == "transfer" else {"attack": attack}
            built = create_attack("transfer", probe, surrogate=probe, **extra, **attack_settings)
        else:
            built = create_attack(attack, probe, **attack_settings)
    except GradconcealError as error:
        raise GradconcealError(f"{where}: {error}") from None
    return built.threat.norm, float(built.threat.eps)


def plan_attacks(spec: EvalSpec, image_size: Sequence[int]) -> List[AttackPlan]:
    """The attacks of a spec in order: presets expanded for ``image_size``, overrides applied, sweep appended."""
    from gradconceal.attacks.presets import preset

    plans: List[AttackPlan] = []
    for i, entry in enumerate(spec.attacks):
        where = f"attacks[{i}]"
        keep = entry.keep or spec.keep_adversarial
        if entry.preset is not None:
            specs = list(preset(entry.preset, image_size=tuple(image_size)))
            labels = [s.label for s in specs]
            for label in entry.overrides:
                if label not in labels:
                    raise GradconcealError(f"{where}.overrides: preset {entry.preset!r} has no attack {label!r}"
                                           f"{suggest(label, labels)}; its attacks: {', '.join(labels)}")
            for s in specs:
                view_settings = {"eot_samples": s.eot_samples} if "eot" in s.view else {}
                settings = {**dict(s.settings), **view_settings, **dict(entry.overrides.get(s.label, {}))}
                changed = s.label in entry.overrides
                norm, eps = validate_attack(s.attack, settings, s.view, image_size, f"{where} ({entry.preset}: {s.label})")
                plans.append(AttackPlan(label=s.label, attack=s.attack, settings=settings, view=s.view,
                                        group=group_of(s.attack, s.view, entry.preset), origin=entry.preset, keep=keep,
                                        reason=entry.reason if changed else None, norm=norm, eps=eps))
            continue
        assert entry.attack is not None and entry.label is not None
        norm, eps = validate_attack(entry.attack, entry.settings, entry.view, image_size, f"{where} ({entry.label})")
        plans.append(AttackPlan(label=entry.label, attack=entry.attack, settings=dict(entry.settings), view=entry.view,
                                group=group_of(entry.attack, entry.view), origin="explicit", keep=keep,
                                reason=entry.reason, norm=norm, eps=eps))
    if spec.sweep is not None:
        sweep = spec.sweep
        for norm, values in sweep.eps.items():
            for view in sweep.views:
                for value in values:
                    settings = {**dict(sweep.settings), "norm": norm, "eps": value}
                    label = f"sweep {sweep.attack.upper()}-{norm.capitalize()} {view} eps={value}"
                    _, eps = validate_attack(sweep.attack, settings, view, image_size, f"sweep ({label})")
                    plans.append(AttackPlan(label=label, attack=sweep.attack, settings=settings, view=view,
                                            group="sweep", origin="sweep", keep=spec.keep_adversarial, norm=norm, eps=eps))
    seen: Dict[str, int] = {}
    for plan in plans:
        seen[plan.label] = seen.get(plan.label, 0) + 1
    twice = [label for label, count in seen.items() if count > 1]
    if twice:
        raise GradconcealError(f"attack label(s) {', '.join(repr(t) for t in twice)} appear more than once in the spec "
                               "(a preset listed twice, or an explicit attack with a preset's label); labels must be unique")
    return plans


def applicable(plan: AttackPlan, defense: DefenseEntry) -> bool:
    """Whether a view has something to act on: EOT needs a random layer.

    BPDA runs on every row: without a concealment layer it is plain autograd, and running it on the
    undefended model keeps the rows comparable (both worst cases cover the same attacks).
    """
    if "eot" in plan.view and not defense.random:
        return False
    return True


def _undefended(defended: nn.Module) -> nn.Module:
    """The model without its input defences (the transfer surrogate), in eval mode like the defended one."""
    base = defended.base
    normalize = getattr(defended, "normalize", None)
    if normalize is None or isinstance(normalize, nn.Identity):
        return base
    return nn.Sequential(normalize, base).eval()


def build_attack(plan: AttackPlan, defended: nn.Module, accepted: Optional[Sequence[int]] = None,
                 label: Optional[int] = None) -> Any:
    """The attack object of a plan on a defended model, through the plan's view of it.

    Transfer attacks craft on the undefended model (the defended model's ``base``); BPDA applies only where
    the defence has a concealment layer (elsewhere the plain model is the same function). With several
    ``accepted`` labels (one image), the attack sees them merged into ``label`` (``AcceptedLabels``).
    """
    from gradconceal.attacks import adaptive_view, create_attack

    def seen(model: nn.Module) -> nn.Module:
        if accepted is None or len(accepted) < 2:
            return model
        return AcceptedLabels(model, accepted, int(label if label is not None else accepted[0]))

    settings = {k: v for k, v in plan.settings.items() if k not in _VIEW_SETTINGS}
    if plan.attack == "transfer" or plan.view == "transfer":
        extra = {} if plan.attack == "transfer" else {"attack": plan.attack}
        return create_attack("transfer", seen(defended), surrogate=seen(_undefended(defended)), **extra, **settings)
    bpda = "bpda" in plan.view and getattr(defended, "concealment", None) is not None
    eot_samples = int(plan.settings.get("eot_samples", 1)) if "eot" in plan.view else 1
    if not bpda and eot_samples == 1:
        return create_attack(plan.attack, seen(defended), **settings)
    view = adaptive_view(seen(defended), bpda=bpda, eot_samples=eot_samples).train(defended.training)
    return create_attack(plan.attack, view, **settings)
