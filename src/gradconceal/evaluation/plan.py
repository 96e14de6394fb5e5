"""Plan: a spec becomes the attacks to run (presets expanded for the image size, overrides, sweep) and the jobs
to compute, each with the key that binds its records to what produced them.

Every attack is validated here before any model loads: its settings are checked by building it on a
stand-in model that only declares the image size, so budgets beyond the image's largest distance, unknown
settings and bad values are caught with the attack library's own messages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from torch import Tensor, nn

from gradconceal.attacks.plan import ATTACK_SEMANTICS_VERSION, VIEW_SETTINGS, AttackPlan, group_of
from gradconceal.attacks.presets import preset
from gradconceal.attacks.registry import create_attack
from gradconceal.errors import GradconcealError, suggest
from gradconceal.evaluation.artifacts import check_distinct_names
from gradconceal.evaluation.records import CLEAN_LABEL
from gradconceal.evaluation.spec import DefenseEntry, EvalSpec, ModelEntry, label_matches

# Bumped whenever the meaning of a record changes, so that a resume never mixes the two. Version 1 (folders made
# before job keys covered the weights and the attack code) can be re-reported but never resumed.
RECORDS_VERSION = 2
LEGACY_RECORDS_VERSION = 1


class _ShapeProbe(nn.Module):
    """A stand-in model that only declares its input size; attacks validate their settings against it."""

    def __init__(self, image_size: Sequence[int]) -> None:
        super().__init__()
        self.input_size = tuple(int(v) for v in image_size)
        self.base = self  # lets a transfer attack find its default surrogate

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - never called
        raise RuntimeError("the shape probe is not a model")


def validate_attack(attack: str, settings: Mapping[str, Any], view: str, image_size: Sequence[int],
                    where: str) -> Tuple[str, float]:
    """Build the attack on a stand-in model (unknown names, settings, bad values fail here); returns (norm, eps).

    Every key and value is checked here, before any model loads: the view's own setting ``eot_samples`` (an
    integer >= 1, never rounded), the attack's settings by the attack itself, and the settings a spec cannot
    give (``surrogate``, a model; ``attack`` beside a view that names the attack already).
    """
    from gradconceal import _validate

    for key in settings:
        if not isinstance(key, str):
            raise GradconcealError(f"{where}: setting names must be strings, got {key!r}")
    if "eot_samples" in settings:
        if "eot" not in view:
            raise GradconcealError(f"{where}: eot_samples needs view 'eot' or 'bpda+eot', got view {view!r}")
        try:
            _validate.integer(settings["eot_samples"], "eot_samples", minimum=1)
        except GradconcealError as error:
            raise GradconcealError(f"{where}: {error}") from None
    attack_settings = {k: v for k, v in settings.items() if k not in VIEW_SETTINGS}
    if "surrogate" in attack_settings:
        raise GradconcealError(f"{where}: 'surrogate' cannot be set in a spec; a transfer attack crafts its images on "
                               "the undefended model (in Python: create_attack('transfer', model, surrogate=...))")
    if "attack" in attack_settings and attack != "transfer":
        raise GradconcealError(f"{where}: 'attack' cannot be a setting of attack {attack!r}; the attack is named once, "
                               "by its table's 'attack' or its preset")
    probe = _ShapeProbe(image_size)
    try:
        if attack == "transfer" or view == "transfer":
            extra = {} if attack == "transfer" else {"attack": attack}
            built = create_attack("transfer", probe, surrogate=probe, **extra, **attack_settings)
        else:
            built = create_attack(attack, probe, **attack_settings)
    except GradconcealError as error:
        for key in attack_settings:  # a misspelt view setting: the attack's list of settings does not hold it
            if f"no setting {key!r}" in str(error) and suggest(key, VIEW_SETTINGS):
                raise GradconcealError(f"{where}: unknown setting {key!r}{suggest(key, VIEW_SETTINGS)}; eot_samples is "
                                       "the setting of the views 'eot' and 'bpda+eot'") from None
        raise GradconcealError(f"{where}: {error}") from None
    return built.threat.norm, float(built.threat.eps)


def plan_attacks(spec: EvalSpec, image_size: Sequence[int]) -> List[AttackPlan]:
    """The attacks of a spec in order: presets expanded for ``image_size``, overrides applied, sweep appended."""
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
            if isinstance(entry.n, Mapping):
                for pattern in entry.n:
                    if not any(label_matches(label, pattern) for label in labels):
                        raise GradconcealError(f"{where}.n: {pattern!r} matches no attack of preset {entry.preset!r}"
                                               f"{suggest(pattern, labels)}; its attacks: {', '.join(labels)}")
            for s in specs:
                settings = {**dict(s.settings), **dict(entry.overrides.get(s.label, {}))}
                changed = s.label in entry.overrides
                norm, eps = validate_attack(s.attack, settings, s.view, image_size, f"{where} ({entry.preset}: {s.label})")
                plans.append(dataclasses.replace(s, settings=settings, keep=keep, n=entry.images_for(s.label),
                                                 reason=entry.reason if changed else None, norm=norm, eps=eps))
            continue
        assert entry.attack is not None and entry.label is not None
        norm, eps = validate_attack(entry.attack, entry.settings, entry.view, image_size, f"{where} ({entry.label})")
        plans.append(AttackPlan(label=entry.label, attack=entry.attack, settings=dict(entry.settings), view=entry.view,
                                group=group_of(entry.attack, entry.view), origin="explicit", keep=keep,
                                reason=entry.reason, norm=norm, eps=eps, n=entry.images_for(entry.label)))
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
    check_distinct_names([m.label for m in spec.models], [d.label for d in spec.defenses], [p.label for p in plans])
    return plans


def job_hash(config: Mapping[str, Any]) -> str:
    """A short fingerprint of everything that decides a job's records."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Job:
    """One (model, defence, attack) cell of the evaluation: the clean pass when ``plan`` is None.

    ``key`` fingerprints what decides its records (``config``); every record of the job carries it.
    ``legacy_key`` is the key the same job had before keys covered the weights and the attack code.
    """

    model: ModelEntry
    defense: DefenseEntry
    plan: Optional[AttackPlan]
    config: Mapping[str, Any]
    key: str
    legacy_key: str

    @property
    def attack_label(self) -> str:
        return self.plan.label if self.plan is not None else CLEAN_LABEL

    @property
    def labels(self) -> Tuple[str, str, str]:
        """(model, defence, attack) labels: the first three parts of its records' keys."""
        return (self.model.label, self.defense.label, self.attack_label)


def job_config(spec: EvalSpec, model: ModelEntry, defense: DefenseEntry, plan: Optional[AttackPlan],
               in_memory: bool, weights: str, before: Sequence[AttackPlan] = ()) -> Dict[str, Any]:
    """What decides a job's records: the model and its weights' fingerprint, the defence, the attack, the data
    source, seed and dtype, the attack code's semantics version and the records' format version; for an attack
    on a random defence, the draws each adversarial image is judged on; for a cascade member, the earlier
    members' configurations (``before``: which images it sees depends on them)."""
    config: Dict[str, Any] = {
        "records_version": RECORDS_VERSION,
        "attack_semantics": ATTACK_SEMANTICS_VERSION,
        "model": {**({"in_memory": model.name} if in_memory else model.to_dict()), "weights": weights},
        "defense": defense.to_dict(),
        "attack": plan.config() if plan else CLEAN_LABEL,
        "data": {"source": spec.data.source, "split": spec.data.split},
        "seed": spec.seed,
        "dtype": spec.dtype,
    }
    if plan is not None and defense.random:
        config["draws"] = spec.draws
    if plan is not None and before:
        config["cascade_before"] = [p.config() for p in before]
    return config


def legacy_job_config(spec: EvalSpec, model: ModelEntry, defense: DefenseEntry, plan: Optional[AttackPlan],
                      in_memory: bool) -> Dict[str, Any]:
    """The configuration a job had in records version 1 (no weights, no attack semantics version)."""
    return {
        "records_version": LEGACY_RECORDS_VERSION,
        "model": {"in_memory": model.name} if in_memory else model.to_dict(),
        "defense": defense.to_dict(),
        "attack": plan.config() if plan else CLEAN_LABEL,
        "data": {"source": spec.data.source, "split": spec.data.split},
        "seed": spec.seed,
        "dtype": spec.dtype,
    }


def plan_jobs(spec: EvalSpec, plans: Sequence[AttackPlan], weights: Mapping[str, str],
              in_memory: Sequence[str] = ()) -> List[Job]:
    """Every job of a spec in run order: per model and defence, the clean pass, the table's attacks whose view
    applies to the defence (``AttackPlan.applies``), then the sweep's. ``weights`` maps model labels to their
    weights' fingerprints."""
    ordered = [p for p in plans if p.group != "sweep"] + [p for p in plans if p.group == "sweep"]
    jobs: List[Job] = []
    for model in spec.models:
        for defense in spec.defenses:
            applied = [p for p in ordered if p.applies(random=defense.random)]
            for plan in [None, *applied]:
                user = model.name in in_memory
                before = [] if plan is None or plan.cascade is None else \
                    [p for p in applied[:applied.index(plan)] if p.cascade == plan.cascade]
                config = job_config(spec, model, defense, plan, user, weights[model.label], before)
                legacy = job_hash(legacy_job_config(spec, model, defense, plan, user))
                jobs.append(Job(model, defense, plan, config, job_hash(config), legacy))
    return jobs
