"""Numbers from per-sample records: clean accuracy, attack robustness (AR), robust accuracy, worst case.

AR is the paper's measure: among the images the model classifies correctly, the share that stay correct
under the attack, so it can exceed clean accuracy. Robust accuracy (RobustBench, AutoAttack) counts every
image, a misclassified one as lost. Every rate carries its counts and a Wilson 95 % interval: with seven
photos one photo moves a rate by 14 points, and the report must show it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from gradconceal.attacks.plan import AttackPlan
from gradconceal.evaluation.records import AttackRecord, CleanRecord, Key, Record

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(k: float, n: int, z: float = Z95) -> Tuple[float, float]:
    """Wilson score interval of a proportion k/n (0..1); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Rate:
    """k of n images, with its Wilson 95 % interval; ``value`` is None when n is 0.

    For a mean of per-image shares in [0, 1] (accuracy in expectation over a random defence's draws), ``k`` is
    their sum: the Wilson interval then uses the binomial variance p(1 - p), an upper bound on the variance of
    such a mean, so the interval is conservative.
    """

    k: float
    n: int

    @property
    def value(self) -> Optional[float]:
        return self.k / self.n if self.n else None

    @property
    def interval(self) -> Tuple[float, float]:
        return wilson_interval(self.k, self.n)

    def percent(self, digits: int = 1) -> str:
        """'85.7' or 'n/a' when there are no images."""
        return "n/a" if self.value is None else f"{100 * self.value:.{digits}f}"

    def cell(self) -> str:
        """'85.7 [49, 97]' (percent with its 95 % interval) for tables; interval to 0.1 from 500 images on."""
        if self.value is None:
            return "n/a"
        low, high = self.interval
        digits = 1 if self.n >= 500 else 0
        return f"{100 * self.value:.1f} [{100 * low:.{digits}f}, {100 * high:.{digits}f}]"

    def to_dict(self) -> Dict[str, Any]:
        low, high = self.interval
        return {"k": self.k, "n": self.n, "value": self.value, "ci95": [low, high]}


@dataclass
class AttackMetrics:
    """One attack on one (model, defence): AR, robust accuracy and what the successful attacks cost."""

    attack: str
    group: str
    ar: Rate
    robust: Rate
    attacked: int  # clean-correct images the attack ran on
    mean_norm: Optional[float]  # mean perturbation norm (attack's norm) of the successful adversarials
    median_grad_evals: Optional[float]
    median_forward_evals: Optional[float]
    changed_by_rounding: Optional[int]  # outcomes that flip when the adversarial is rounded to 8-bit pixels
    ar_8bit: Optional[Rate]
    fooled_disagreements: int  # the attack's own 'fooled' differs from the re-scored prediction
    non_finite: int = 0  # images with NaN or inf logits, loss or gradients (counted as not robust)
    images: int = 0  # images of the data the attack covered (the first ``images``)
    draws: int = 1  # draws of a random defence each adversarial image was judged on
    # a random defence's AR and robust accuracy in expectation over the draws (``ar``/``robust`` are the worst
    # case: an image counts only when every draw classifies it correctly); None for a deterministic defence
    ar_expected: Optional[Rate] = None
    robust_expected: Optional[Rate] = None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "attack": self.attack,
            "group": self.group,
            "ar": self.ar.to_dict(),
            "robust_accuracy": self.robust.to_dict(),
            "attacked": self.attacked,
            "mean_norm": self.mean_norm,
            "median_grad_evals": self.median_grad_evals,
            "median_forward_evals": self.median_forward_evals,
            "changed_by_8bit_rounding": self.changed_by_rounding,
            "ar_8bit": self.ar_8bit.to_dict() if self.ar_8bit else None,
            "fooled_disagreements": self.fooled_disagreements,
            "non_finite": self.non_finite,
            "images": self.images,
            "draws": self.draws,
            "ar_expected": self.ar_expected.to_dict() if self.ar_expected else None,
            "robust_accuracy_expected": self.robust_expected.to_dict() if self.robust_expected else None,
        }


@dataclass
class RowMetrics:
    """All numbers of one (model, defence) row."""

    model: str
    defense: str
    clean: Rate
    attacks: Dict[str, Optional[AttackMetrics]] = field(default_factory=dict)  # None: not applicable
    worst_white_box: Optional[Tuple[Rate, Rate]] = None  # (AR, robust accuracy) over the plain-autograd attacks
    worst_all: Optional[Tuple[Rate, Rate]] = None  # over every attack of the table
    # over the presets' attacks only, where the spec adds others (e.g. larger budgets); None otherwise
    worst_presets: Optional[Tuple[Rate, Rate]] = None
    # a random defence's worst case over all attacks in expectation over draws: per image, the lowest share of
    # draws correct under any attack
    worst_all_expected: Optional[Tuple[Rate, Rate]] = None
    sweep: List[Dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        def pair(value: Optional[Tuple[Rate, Rate]]) -> Optional[Dict[str, Any]]:
            return None if value is None else {"ar": value[0].to_dict(), "robust_accuracy": value[1].to_dict()}

        return {
            "model": self.model,
            "defense": self.defense,
            "clean_accuracy": self.clean.to_dict(),
            "attacks": {k: (v.to_dict() if v else None) for k, v in self.attacks.items()},
            "worst_case_white_box": pair(self.worst_white_box),
            "worst_case_all": pair(self.worst_all),
            "worst_case_presets": pair(self.worst_presets),
            "worst_case_all_expected": pair(self.worst_all_expected),
            "sweep": self.sweep,
        }


def _median(values: Sequence[float]) -> Optional[float]:
    return float(statistics.median(values)) if values else None


def attack_metrics(plan: AttackPlan, records: Sequence[AttackRecord], n_images: int) -> AttackMetrics:
    """Metrics of one attack from its records (one per image it covered: the first ``plan.images(n_images)``)."""
    covered = plan.images(n_images)
    records = [r for r in records if r.index < covered]
    clean_correct = [r for r in records if r.clean_correct]
    attacked = [r for r in clean_correct if r.attacked]
    survived = sum(1 for r in clean_correct if r.correct)
    broken = [r for r in attacked if not r.correct and r.norm is not None]
    rounded = [r for r in attacked if r.correct_8bit is not None]
    changed = sum(1 for r in rounded if r.correct_8bit != r.correct) if rounded else None
    ar_8bit = None
    if rounded:
        kept = sum(1 for r in clean_correct if (r.correct_8bit if r.correct_8bit is not None else r.correct))
        ar_8bit = Rate(kept, len(clean_correct))
    disagreements = sum(1 for r in attacked if r.fooled is not None and not r.non_finite
                        and bool(r.fooled) == bool(r.correct))
    random = any(r.correct_draws is not None for r in attacked)
    expected = sum(r.correct_share for r in clean_correct) if random else None
    return AttackMetrics(
        attack=plan.label,
        group=plan.group,
        ar=Rate(survived, len(clean_correct)),
        robust=Rate(survived, covered),
        images=covered,
        draws=max((r.draws for r in attacked), default=1),
        ar_expected=Rate(expected, len(clean_correct)) if expected is not None else None,
        robust_expected=Rate(expected, covered) if expected is not None else None,
        attacked=len(attacked),
        mean_norm=(sum(float(r.norm) for r in broken if r.norm is not None) / len(broken)) if broken else None,
        median_grad_evals=_median([float(r.grad_evals) for r in attacked]),
        median_forward_evals=_median([float(r.forward_evals) for r in attacked]),
        changed_by_rounding=changed,
        ar_8bit=ar_8bit,
        fooled_disagreements=disagreements,
        non_finite=sum(1 for r in attacked if r.non_finite),
    )


def worst_case(clean: Sequence[CleanRecord], per_attack: Iterable[Sequence[AttackRecord]],
               images: Optional[int] = None) -> Tuple[Rate, Rate]:
    """(AR, robust accuracy) when each image faces its own strongest attack among ``per_attack``, over the first
    ``images`` images (all of ``clean`` when None: the images every attack covered)."""
    clean = [r for r in clean if images is None or r.index < images]
    robust = {r.index: r.correct for r in clean}
    for records in per_attack:
        for r in records:
            if r.index in robust and not r.correct:
                robust[r.index] = False
    n_correct = sum(1 for r in clean if r.correct)
    survived = sum(1 for r in clean if r.correct and robust[r.index])
    return Rate(survived, n_correct), Rate(survived, len(clean))


def worst_case_expected(clean: Sequence[CleanRecord], per_attack: Iterable[Sequence[AttackRecord]],
                        images: Optional[int] = None) -> Tuple[Rate, Rate]:
    """(AR, robust accuracy) in expectation over a random defence's draws when each image faces the attack
    with its lowest share of correct draws, over the first ``images`` images."""
    clean = [r for r in clean if images is None or r.index < images]
    share = {r.index: 1.0 if r.correct else 0.0 for r in clean}
    for records in per_attack:
        for r in records:
            if r.index in share:
                share[r.index] = min(share[r.index], r.correct_share)
    n_correct = sum(1 for r in clean if r.correct)
    expected = sum(share[r.index] for r in clean if r.correct)
    return Rate(expected, n_correct), Rate(expected, len(clean))


def row_metrics(
    model: str,
    defense: str,
    clean: Sequence[CleanRecord],
    records: Mapping[str, Sequence[AttackRecord]],
    plans: Sequence[AttackPlan],
    applicable: Mapping[str, bool],
) -> RowMetrics:
    """Every number of one row from its clean records and its attack records grouped by attack label."""
    n = len(clean)
    row = RowMetrics(model, defense, Rate(sum(1 for r in clean if r.correct), n))
    table_plans = [p for p in plans if p.group != "sweep"]
    for plan in table_plans:
        row.attacks[plan.label] = attack_metrics(plan, records.get(plan.label, []), n) if applicable[plan.label] else None
    def worst(chosen: Sequence[AttackPlan]) -> Tuple[Rate, Rate]:  # over the images every chosen attack covered
        return worst_case(clean, [records.get(p.label, []) for p in chosen], min(p.images(n) for p in chosen))

    white = [p for p in table_plans if p.group == "white-box" and applicable[p.label]]
    every = [p for p in table_plans if applicable[p.label]]
    if white:
        row.worst_white_box = worst(white)
    if every:
        row.worst_all = worst(every)
        if any(m is not None and m.ar_expected is not None for m in row.attacks.values()):
            row.worst_all_expected = worst_case_expected(clean, [records.get(p.label, []) for p in every],
                                                         min(p.images(n) for p in every))
    presets = [p for p in table_plans if applicable[p.label] and p.origin != "explicit"]
    if presets and len(presets) < len(every):
        row.worst_presets = worst(presets)
    for plan in table_plans:
        if plan.attack == "fab" and plan.cascade is None and applicable[plan.label] and plan.eps:
            row.sweep.extend(min_norm_curve(plan, records.get(plan.label, []), clean))
    for plan in plans:
        if plan.group != "sweep" or not applicable[plan.label]:
            continue
        m = attack_metrics(plan, records.get(plan.label, []), n)
        row.sweep.append({
            "attack": plan.label, "norm": plan.norm, "eps": plan.eps, "view": plan.view,
            "ar": m.ar.to_dict(), "robust_accuracy": m.robust.to_dict(),
        })
    return row


MIN_NORM_POINTS = 8  # budgets of a minimum-norm attack's curve: eps * k / 8, k = 1..8


def min_norm_curve(plan: AttackPlan, records: Sequence[AttackRecord], clean: Sequence[CleanRecord],
                   points: int = MIN_NORM_POINTS) -> List[Dict[str, Any]]:
    """Robust accuracy at every smaller budget, for free, from a minimum-norm attack's records (FAB, Croce & Hein
    2020): an image it broke with a perturbation of norm r is broken at every budget >= r and robust below;
    one it did not break is robust at every budget up to the attack's. Sweep points (view '<view> min-norm')
    at ``eps * k / points``; a misclassified clean image is never robust. Over the images the attack covered."""
    assert plan.eps is not None
    covered = {r.index: r for r in records}
    base = [c for c in clean if c.index in covered]
    correct = [c for c in base if c.correct]
    out = []
    for k in range(1, points + 1):
        budget = plan.eps * k / points
        survived = 0
        for c in correct:
            r = covered[c.index]
            if r.correct or (r.attacked and not r.non_finite and r.norm is not None and r.norm > budget * (1 + 1e-6)):
                survived += 1
        out.append({"attack": f"{plan.label} at eps={budget:.6g}", "norm": plan.norm, "eps": budget,
                    "view": f"{plan.view} min-norm", "ar": Rate(survived, len(correct)).to_dict(),
                    "robust_accuracy": Rate(survived, len(base)).to_dict()})
    return out


def split_row(records: Mapping[Key, Record], model: str, defense: str,
              n_images: int) -> Tuple[List[CleanRecord], Dict[str, List[AttackRecord]]]:
    """One row's clean records and its attack records by label, limited to the first ``n_images`` images,
    each sorted by image index."""
    clean: List[CleanRecord] = []
    attacks: Dict[str, List[AttackRecord]] = {}
    for key, record in records.items():
        if key[0] != model or key[1] != defense or key[3] >= n_images:
            continue
        if isinstance(record, CleanRecord):
            clean.append(record)
        else:
            attacks.setdefault(key[2], []).append(record)
    clean.sort(key=lambda r: r.index)
    for values in attacks.values():
        values.sort(key=lambda r: r.index)
    return clean, attacks
