"""The report's PNG plots: AR per attack, robust accuracy vs eps, and a gallery of adversarial images.

Figures are drawn with matplotlib's object API on the Agg canvas, so plotting never changes the user's
pyplot backend. Scales are fixed (0-100 %) so that two reports compare at a glance.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from gradconceal.evaluation.metrics import AttackMetrics, Rate
from gradconceal.evaluation.results import Results
from gradconceal.evaluation.tables import white_box_worst_title

log = logging.getLogger(__name__)

_COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _errors(rates: Sequence[Optional[Rate]]) -> Tuple[np.ndarray, np.ndarray]:
    values: List[float] = []
    spans: List[List[float]] = [[], []]
    for rate in rates:
        if rate is None or rate.value is None:
            values.append(np.nan)
            spans[0].append(0.0)
            spans[1].append(0.0)
            continue
        low, high = rate.interval
        values.append(100 * rate.value)
        spans[0].append(100 * (rate.value - low))
        spans[1].append(100 * (high - rate.value))
    return np.array(values), np.array(spans)


def bpda_counterparts(results: Results) -> Dict[str, str]:
    """For each paper-protocol attack, the adaptive attack that is the same attack through BPDA (if any)."""
    out: Dict[str, str] = {}
    adaptive = [p for p in results.plans if p.group == "adaptive" and p.view == "bpda"]
    for plan in (p for p in results.plans if p.group == "white-box"):
        for other in adaptive:
            if other.attack == plan.attack and other.norm == plan.norm and other.eps == plan.eps \
                    and other.label not in out.values():
                out[plan.label] = other.label
                break
    return out


def plot_ar_bars(results: Results, path: Path) -> Path:
    """AR per attack: per paper attack, vanilla vs GCM vs GCM under the same attack through BPDA; then the rest.

    Bars are coloured by defence; hatched bars are the defended model under the BPDA version of the attack
    named below them. Error bars are 95 % Wilson intervals.
    """
    counterparts = bpda_counterparts(results)
    white = [p.label for p in results.plans if p.group == "white-box"]
    rest = [p.label for p in results.plans if p.group == "adaptive" and p.label not in counterparts.values()]
    models = list(dict.fromkeys(r.model for r in results.rows))
    defenses = list(dict.fromkeys(r.defense for r in results.rows))
    colour = {d: _COLOURS[i % len(_COLOURS)] for i, d in enumerate(defenses)}
    figure = Figure(figsize=(max(7.0, 1.2 + 1.1 * (len(white) + len(rest) + 2)), 3.8 * len(models)), layout="constrained")
    axes = figure.subplots(len(models), 1, squeeze=False)[:, 0]
    for ax, model in zip(axes, models):
        rows = [r for r in results.rows if r.model == model]
        groups: List[Tuple[str, List[Tuple[str, Optional[Rate], bool]]]] = []
        for label in white:
            bars = [(r.defense, _ar(r, label), False) for r in rows]
            twin = counterparts.get(label)
            if twin:
                bars += [(r.defense, _ar(r, twin), True) for r in rows if r.attacks.get(twin) is not None]
            groups.append((label, bars))
        if white:
            title = "worst case,\n" + white_box_worst_title(results.plans).replace(" attacks", "\nattacks")
            groups.append((title, [(r.defense, r.worst_white_box[0] if r.worst_white_box else None, False)
                                   for r in rows]))
        split = len(groups) - 0.5
        for label in rest:
            groups.append((label, [(r.defense, _ar(r, label), False) for r in rows]))
        groups.append(("worst case,\nall attacks", [(r.defense, r.worst_all[0] if r.worst_all else None, False)
                                                      for r in rows]))
        for x, (_, bars) in enumerate(groups):
            width = 0.8 / max(1, len(bars))
            for i, (defense, rate, hatched) in enumerate(bars):
                position = x - 0.4 + width * (i + 0.5)
                if rate is None or rate.value is None:
                    ax.text(position, 2, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
                    continue
                values, spans = _errors([rate])
                ax.bar(position, values[0], width, yerr=spans, capsize=2, color=colour[defense],
                       hatch="///" if hatched else None, edgecolor="black" if hatched else colour[defense],
                       linewidth=0.5, error_kw={"elinewidth": 0.8, "ecolor": "#555555"})
                ax.text(position, values[0] + 1, f"{values[0]:.0f}", ha="center", va="bottom", fontsize=6)
        if white:
            ax.axvline(split, color="black", linestyle="--", linewidth=0.8)
            ax.text(split - 0.1, 104, "the paper's attacks (hatched: the same attack through BPDA)", ha="right",
                    va="bottom", fontsize=8)
            ax.text(split + 0.1, 104, "other adaptive / gradient-free attacks", ha="left", va="bottom", fontsize=8)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([name for name, _ in groups], rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_ylim(0, 112)
        ax.set_yticks([0, 20, 40, 60, 80, 100])
        ax.set_ylabel("attack robustness AR (%)")
        ax.set_title(f"{model}: AR per attack (95 % Wilson intervals; hatched = same attack through BPDA)", fontsize=10)
        handles = [Patch(facecolor=colour[r.defense], label=f"{r.defense} (n = {r.clean.k} clean-correct)") for r in rows]
        if counterparts:
            handles.append(Patch(facecolor="white", edgecolor="black", hatch="///",
                                 label="hatched: defended model under the\nsame attack through BPDA (adaptive)"))
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def _ar(row, label: str) -> Optional[Rate]:
    metrics: Optional[AttackMetrics] = row.attacks.get(label)
    return metrics.ar if metrics else None


def _eps_value(eps: object) -> float:
    text = str(eps)
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text)


def plot_eps_curves(results: Results, path: Path) -> Optional[Path]:
    """Robust accuracy (all images) vs eps per norm, one line per (model, defence, view): the sweep's attacks and
    the curves a minimum-norm attack (FAB) gives for free; None without either."""
    points = [(row, p) for row in results.rows for p in row.sweep]
    if not points:
        return None
    norms = list(dict.fromkeys(p["norm"] for _, p in points))
    figure = Figure(figsize=(5.2 * len(norms) + 2.5, 4.0))
    axes = figure.subplots(1, len(norms), squeeze=False)[0]
    for ax, norm in zip(axes, norms):
        lines: Dict[Tuple[str, str, str], List[Tuple[float, dict]]] = {}
        for row, p in points:
            if p["norm"] == norm:
                lines.setdefault((row.model, row.defense, p["view"]), []).append((_eps_value(p["eps"]), p))
        # plain-gradient curves first, adaptive (dashed, square markers) on top: a BPDA curve that falls onto
        # the vanilla one (as it should under GCM) stays visible
        for i, (key, curve) in enumerate(sorted(lines.items(), key=lambda item: (item[0][2] != "plain", item[0]))):
            curve.sort(key=lambda item: item[0])
            eps = np.array([e for e, _ in curve]) * (255 if norm == "linf" else 1)
            acc = np.array([100 * (p["robust_accuracy"]["value"] or 0) for _, p in curve])
            low = np.array([100 * p["robust_accuracy"]["ci95"][0] for _, p in curve])
            high = np.array([100 * p["robust_accuracy"]["ci95"][1] for _, p in curve])
            colour = _COLOURS[i % len(_COLOURS)]
            plain = key[2] == "plain"
            ax.plot(eps, acc, "-" if plain else "--", marker="o" if plain else "s", markersize=5 if plain else 4,
                    color=colour, label=f"{key[0]}/{key[1]}, {key[2]} gradients")
            ax.fill_between(eps, low, high, color=colour, alpha=0.08)
        ax.set_xlabel("eps (x/255)" if norm == "linf" else f"eps ({norm} norm, [0, 1] pixels)")
        ax.set_ylabel("robust accuracy, all images (%)")
        ax.set_ylim(0, 102)
        ax.set_title(f"{norm.capitalize()}: robust accuracy vs budget (sweep, minimum-norm attacks)", fontsize=10)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(figure, path)


def _show(ax, image: np.ndarray, title: str) -> None:
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(np.clip(image.transpose(1, 2, 0), 0, 1), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_gallery(
    title: str,
    items: Sequence[Mapping[str, object]],
    path: Path,
) -> Optional[Path]:
    """Clean image, adversarial image and magnified perturbation per item, titled with predicted class names.

    Each item holds ``clean`` (C, H, W array), ``clean_name``, and, when an attack succeeded, ``adversarial``,
    ``adversarial_name`` and ``attack``; otherwise ``note`` says why there is no adversarial image.
    """
    if not items:
        return None
    figure = Figure(figsize=(8.4, 2.7 * len(items) + 0.4), layout="constrained")
    axes = figure.subplots(len(items), 3, squeeze=False)
    for row, item in zip(axes, items):
        clean = np.asarray(item["clean"], dtype=np.float32)
        _show(row[0], clean, f"clean: {item['clean_name']}")
        adversarial = item.get("adversarial")
        if adversarial is None:
            for ax in row[1:]:
                ax.axis("off")
            row[1].text(0.0, 0.5, str(item.get("note", "no successful attack")), fontsize=9, va="center", wrap=True)
            continue
        adv = np.asarray(adversarial, dtype=np.float32)
        _show(row[1], adv, f"{item['attack']}: {item['adversarial_name']}")
        delta = adv - clean
        peak = float(np.abs(delta).max())
        factor = 0.5 / peak if peak > 0 else 1.0
        _show(row[2], 0.5 + factor * delta, f"perturbation x{factor:.0f} (max |d| = {255 * peak:.1f}/255)")
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)
