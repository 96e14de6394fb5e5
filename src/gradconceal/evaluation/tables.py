"""The side-by-side tables of an evaluation (the paper's protocol beside the adaptive attacks), as Markdown and
as plain text, from the attacks as run, the rows' metrics and the run's facts (the audit verdicts)."""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence, Tuple

from gradconceal.attacks.plan import AttackPlan
from gradconceal.evaluation.metrics import AttackMetrics, Rate, RowMetrics

GROUP_TITLES = {
    "white-box": "gradient attacks through plain autograd (the paper's protocol)",
    "adaptive": "adaptive, gradient-free and stronger attacks (BPDA, EOT, APGD, Square, transfer)",
}


def table_plans(plans: Sequence[AttackPlan]) -> Tuple[List[AttackPlan], List[AttackPlan]]:
    """The table's attacks: (white-box ones as the paper ran them, adaptive ones)."""
    white = [p for p in plans if p.group == "white-box"]
    adaptive = [p for p in plans if p.group == "adaptive"]
    return white, adaptive


def _cell(metrics: Optional[AttackMetrics], robust: bool = False, expected: bool = False) -> str:
    if metrics is None:
        return "n/a"
    if expected:
        rate = metrics.robust_expected if robust else metrics.ar_expected
        return rate.cell() if rate is not None else "-"
    return (metrics.robust if robust else metrics.ar).cell()


def _worst_cell(value: Optional[Tuple[Rate, Rate]], robust: bool = False) -> str:
    if value is None:
        return "-"
    return value[1 if robust else 0].cell()


def images_of(rows: Sequence[RowMetrics]) -> int:
    """The number of images of the evaluation (every row's clean pass covers them all)."""
    return max((row.clean.n for row in rows), default=0)


def column_title(plan: AttackPlan, n_images: int) -> str:
    """An attack's column title: its label, with the image count when it covers fewer than all images."""
    covered = plan.images(n_images)
    return plan.label if covered >= n_images else f"{plan.label} (first {covered})"


def worst_title(title: str, plans: Sequence[AttackPlan], n_images: int) -> str:
    """A worst-case column's title, with the image count when its attacks cover fewer than all images."""
    covered = min((p.images(n_images) for p in plans), default=n_images)
    return title if covered >= n_images else f"{title} (first {covered})"


def verdict(info: Mapping[str, Any], row: RowMetrics) -> str:
    """The masking audit's verdict of a row, from the run's ``info['audit']`` ('not run' when absent)."""
    audit = info.get("audit") or {}
    entry = audit.get(f"{row.model}/{row.defense}")
    if entry is None or not entry.get("verdict"):
        return "not run"
    return str(entry["verdict"])


def white_box_worst_title(plans: Sequence[AttackPlan]) -> str:
    """'paper attacks' when every plain-autograd column comes from the paper preset, else 'plain-gradient attacks'."""
    white, _ = table_plans(plans)
    return "paper attacks" if white and all(p.origin == "paper" for p in white) else "plain-gradient attacks"


def has_preset_worst(rows: Sequence[RowMetrics]) -> bool:
    """True when the spec adds attacks of its own to presets: then the presets' worst case is a column too."""
    return any(row.worst_presets is not None for row in rows)


def markdown_table(plans: Sequence[AttackPlan], rows: Sequence[RowMetrics], info: Mapping[str, Any], *,
                   robust: bool = False, expected: bool = False) -> str:
    """Rows = model x defence; columns = clean, the paper's attacks, their worst case, then the adaptive ones
    (AR %, or robust accuracy % with ``robust``), and the masking audit's verdict. A column whose attacks cover
    only the first images says how many. With ``expected``, only rows of random defences, in expectation over
    the draws each adversarial image was judged on (the other tables give their worst case over draws)."""
    white, adaptive = table_plans(plans)
    total = images_of(rows)
    if expected:
        rows = [row for row in rows if any(m is not None and m.ar_expected is not None for m in row.attacks.values())]
    head = ["Model", "Defence", "Clean acc. %", "n"]
    head += [column_title(p, total) for p in white] + [worst_title(f"Worst, {white_box_worst_title(plans)}", white, total)]
    presets = has_preset_worst(rows) and not expected
    head += [column_title(p, total) for p in adaptive] + [worst_title("Worst, all attacks", white + adaptive, total)]
    head += ["Worst, preset attacks"] if presets else []
    head.append("Masking audit")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for row in rows:
        n = row.clean.n if robust else row.clean.k
        cells = [row.model, row.defense, row.clean.cell(), str(n)]
        cells += [_cell(row.attacks.get(p.label), robust, expected) for p in white]
        cells.append("-" if expected else _worst_cell(row.worst_white_box, robust))
        cells += [_cell(row.attacks.get(p.label), robust, expected) for p in adaptive]
        cells.append(_worst_cell(row.worst_all_expected if expected else row.worst_all, robust))
        if presets:
            cells.append(_worst_cell(row.worst_presets, robust))
        cells.append(verdict(info, row))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def text_table(plans: Sequence[AttackPlan], rows: Sequence[RowMetrics], info: Mapping[str, Any]) -> str:
    """The table for a terminal: one column per (model, defence), one line per attack, AR % [95 % CI]."""
    white, adaptive = table_plans(plans)
    columns = [f"{r.model}/{r.defense}" for r in rows]
    lines: List[Tuple[str, List[str]]] = [
        ("clean accuracy %", [r.clean.cell() for r in rows]),
        ("clean-correct images", [f"{r.clean.k} of {r.clean.n}" for r in rows]),
    ]
    sections = [("AR % - " + GROUP_TITLES["white-box"], white, f"worst case, {white_box_worst_title(plans)}",
                 "worst_white_box"),
                ("AR % - " + GROUP_TITLES["adaptive"], adaptive, "worst case, all attacks", "worst_all")]
    for title, group, worst_title, worst_attr in sections:
        lines.append((f"-- {title}", []))
        if not group:
            lines.append(("(none in this spec: the numbers above cannot tell robustness from masking)", []))
        for plan in group:
            lines.append((column_title(plan, images_of(rows)), [_cell(r.attacks.get(plan.label)) for r in rows]))
        lines.append((worst_title, [_worst_cell(getattr(r, worst_attr)) for r in rows]))
    if has_preset_worst(rows):
        lines.append(("worst case, preset attacks", [_worst_cell(r.worst_presets) for r in rows]))
    lines.append(("masking audit", [verdict(info, r) for r in rows]))
    name_width = max(len(name) for name, cells in lines if cells) + 2
    widths = [max([len(c)] + [len(cells[i]) for _, cells in lines if cells]) + 2 for i, c in enumerate(columns)]
    out = [" " * name_width + "".join(c.rjust(w) for c, w in zip(columns, widths))]
    for name, cells in lines:
        if not cells:
            out.append(name)
            continue
        out.append(name.ljust(name_width) + "".join(c.rjust(w) for c, w in zip(cells, widths)))
    return "\n".join(out)
