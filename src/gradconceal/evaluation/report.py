"""The report folder: ``report.md``, ``results.json``, ``results.csv`` (the plots come from ``plots``).

The paper's protocol (gradient attacks through plain autograd) and the adaptive attacks are always in the
same table, with the per-sample worst case and the masking audit's verdict beside them: a number from the
paper's protocol is never shown alone.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from gradconceal.attacks.plan import AttackPlan
from gradconceal.attacks.threat import format_eps
from gradconceal.evaluation.metrics import Rate
from gradconceal.evaluation.results import Results
from gradconceal.evaluation.tables import (
    GROUP_TITLES,
    markdown_table,
    white_box_worst_title,
)
from gradconceal.folders import write_atomic


def _settings_text(plan: AttackPlan) -> str:
    items = [f"{k}={v}" for k, v in sorted(plan.settings.items()) if k not in ("norm", "eps")]
    return ", ".join(items) if items else "defaults"


def _attack_table(results: Results) -> str:
    lines = ["| Attack | Group | From | View | Norm | eps | Settings |", "|---|---|---|---|---|---|---|"]
    for plan in results.plans:
        eps = format_eps(plan.eps) if plan.eps is not None else "-"
        lines.append(f"| {plan.label} | {plan.group} | {plan.origin} | {plan.view} | {plan.norm or '-'} | {eps} | "
                     f"{_settings_text(plan)} |")
    return "\n".join(lines)


def _cost_table(results: Results) -> str:
    lines = ["| Model | Defence | Attack | Attacked images | Mean norm of successful perturbations | "
             "Median gradient evals | Median forward evals |", "|---|---|---|---|---|---|---|"]
    for row in results.rows:
        for label, m in row.attacks.items():
            if m is None:
                continue
            norm = "-" if m.mean_norm is None else f"{m.mean_norm:.4g}"
            grads = "-" if m.median_grad_evals is None else f"{m.median_grad_evals:g}"
            fwds = "-" if m.median_forward_evals is None else f"{m.median_forward_evals:g}"
            lines.append(f"| {row.model} | {row.defense} | {label} | {m.attacked} | {norm} | {grads} | {fwds} |")
    return "\n".join(lines)


def _rounding_section(results: Results) -> str:
    changed = []
    checked = 0
    for row in results.rows:
        for label, m in row.attacks.items():
            if m is None or m.changed_by_rounding is None:
                continue
            checked += m.attacked
            if m.changed_by_rounding:
                changed.append(f"- {row.model}/{row.defense}, {label}: {m.changed_by_rounding} of {m.attacked} "
                               f"outcomes change; AR after rounding {m.ar_8bit.cell() if m.ar_8bit else 'n/a'}")
    head = ("Every adversarial image was also rounded to 8-bit pixels (as a saved PNG would be) and "
            "classified again. ")
    if not checked:
        return head + "No image was attacked, so nothing was re-scored."
    if not changed:
        return head + f"Rounding changed none of the {checked} attacked outcomes."
    return head + "Rounding changed these outcomes:\n\n" + "\n".join(changed)


def _disagreement_note(results: Results) -> Optional[str]:
    total = sum(m.fooled_disagreements for r in results.rows for m in r.attacks.values() if m is not None)
    if not total:
        return None
    return (f"In {total} attacked cases the attack's own success flag differs from the re-scored prediction "
            "(randomised defence, or a prediction that moved to another accepted label); the tables use the "
            "re-scored prediction.")


def _clean_only_section(results: Results) -> str:
    """The report of a spec without attacks: clean accuracy, two decimals (it is over many images)."""
    lines = ["## Clean accuracy", "",
             "No attack in this spec: clean accuracy cannot tell robustness from masking; the attacked tables "
             "say what the defences are worth.", "",
             "| Model | Defence | Clean acc. % | 95 % interval | Correct | Images |", "|---|---|---|---|---|---|"]
    for row in results.rows:
        low, high = row.clean.interval
        lines.append(f"| {row.model} | {row.defense} | {row.clean.percent(2)} | [{100 * low:.2f}, {100 * high:.2f}] | "
                     f"{row.clean.k} | {row.clean.n} |")
    lines += ["", "## Reproduce", "", f"Per-sample records: `{results.records_path.name}`; `results.json` embeds the "
              "full spec; `gradconceal evaluate results.json --out DIR` runs it again and compares the numbers.", ""]
    return "\n".join(lines)


def markdown_report(results: Results) -> str:
    """The whole ``report.md``."""
    info = results.info
    spec = results.spec
    parts = [f"# {spec.title}", ""]
    parts.append(
        f"{info.get('n_images', '?')} images of `{spec.data.source}` ({spec.data.split} split); seed {spec.seed}; "
        f"device {info.get('device', spec.device)}, dtype {spec.dtype}; {info.get('world_size', 1)} process(es). "
        f"This run took {info.get('runtime_s', 0):.0f} s and computed {info.get('computed_records', '?')} of "
        f"{info.get('total_records', '?')} records"
        + (" (the rest were already in the folder). " if info.get("computed_records") != info.get("total_records")
           else ". ")
        + (f"Attacks took {info['attack_seconds_all_runs']:.0f} s over the runs that finished in this folder. "
           if info.get("attack_seconds_all_runs", 0) > info.get("attack_seconds", 0) + 0.5 else "") +
        f"gradconceal {info.get('versions', {}).get('gradconceal', '?')}, "
        f"torch {info.get('versions', {}).get('torch', '?')}."
    )
    if not results.plans:
        return "\n".join(parts + ["", _clean_only_section(results)])
    parts += ["", "## Attack robustness (AR): the paper's protocol beside adaptive attacks", ""]
    parts.append(
        "AR (the paper's measure) = among the images a row classifies correctly (n), the percentage that stay "
        "correct under the attack; it can exceed clean accuracy. Each cell: AR % [95 % Wilson interval]. "
        f"Columns up to 'Worst, {white_box_worst_title(results.plans)}' are " + GROUP_TITLES["white-box"] + "; the columns after it are "
        + GROUP_TITLES["adaptive"] + ". 'Worst' counts an image as robust only if it survives every attack of "
        "the group (per-sample worst case); an attack labelled '(first N)' ran on the first N images only (the "
        "spec's per-attack `n`), and a worst case over it covers those images; attacks of a cascade (AutoAttack's "
        "ensemble, 'AA ...') run only on images still robust after the earlier ones, so each such column is the "
        "ensemble's result so far and its last column the ensemble's; 'Worst, preset attacks', where the spec adds attacks of its own (larger "
        "budgets, say), is the same over the presets' attacks only. 'n/a': the attacker's view has nothing to act on in that defence (BPDA "
        "needs a concealment layer, EOT a random layer); there it would repeat the plain attack."
    )
    parts += ["", markdown_table(results.plans, results.rows, results.info), ""]
    broken = [f"{row.model}/{row.defense} under {label}: {m.non_finite}" for row in results.rows
              for label, m in row.attacks.items() if m is not None and m.non_finite]
    if broken:
        parts += ["**Non-finite outputs.** The model gave NaN or infinite logits, loss or input gradients for these "
                  "images during the attack or on its result; they count as not robust (a broken computation is "
                  "never robustness), and such a model's numbers say little: " + "; ".join(broken) + ".", ""]
    expected = markdown_table(results.plans, results.rows, results.info, expected=True)
    if expected.count("\n") > 1:
        draws = max((m.draws for r in results.rows for m in r.attacks.values() if m is not None), default=1)
        parts += ["## Random defences: the worst case and the expectation over draws", ""]
        parts.append(
            f"A defence with random layers answers each query with a fresh draw, so each adversarial image was "
            f"judged on {draws} fresh draws (the spec's `draws`). The tables above count it robust only if every "
            "draw classifies it correctly (the worst case over draws): an attacker who may submit the image a few "
            "times, or a defence that serves many users, fails on it at least once, and that is what the headline "
            "uses. This table gives the same rows in expectation over the draws (per image, the share of draws "
            "correct; its interval is Wilson's at that mean, conservative), the number a single query sees on "
            "average. The gap between the two is how often the randomness, not the model, decides the outcome.")
        parts += ["", expected, ""]
    parts += ["## Robust accuracy over all images (the RobustBench / AutoAttack convention)", ""]
    parts.append("Each cell: robust accuracy % [95 % Wilson interval] over all n images; a misclassified clean "
                 "image counts as not robust.")
    parts += ["", markdown_table(results.plans, results.rows, results.info, robust=True), ""]
    facts = info.get("gradient_facts_lines")
    if facts:
        parts += ["## Gradient facts", "", "What GCM does to the model's forward pass and to its input gradients, "
                  "measured on these images:", ""]
        parts += [f"- {line}" for line in facts] + [""]
    parts += ["## Attacks as run", "", _attack_table(results), ""]
    reasons = sorted({p.reason for p in results.plans if p.reason})
    if reasons:
        parts += ["Settings differ from the published presets, for this reason: " + " ".join(reasons), ""]
    parts += ["## Cost and perturbation size", "", _cost_table(results), ""]
    parts += ["## Rounding to 8-bit pixels", "", _rounding_section(results), ""]
    parts += ["## Masking audit", ""]
    audit = info.get("audit") or {}
    if audit:
        parts.append("Quick audit (gradient checks only, no attacks; `gradconceal audit` runs the full one):")
        parts.append("")
        for key, entry in audit.items():
            cause = f" - {entry['cause']}" if entry.get("cause") else ""
            parts.append(f"- {key}: **{entry.get('verdict') or entry.get('note')}**{cause}")
    else:
        parts.append("audit not run")
    parts += ["", "## Notes", ""]
    notes = list(info.get("notes", []))
    disagreement = _disagreement_note(results)
    if disagreement:
        notes.append(disagreement)
    parts += [f"- {note}" for note in notes]
    plots = info.get("plots", [])
    if plots:
        parts += ["", "## Plots", ""]
        parts += [f"![{Path(p).stem}]({p})" for p in plots]
    parts += ["", "## Reproduce", "",
              f"Per-sample records: `{results.records_path.name}` (one JSON line per model, defence, attack and image). "
              "`results.json` embeds the full spec; `gradconceal evaluate results.json --out DIR` runs it again "
              "and compares the numbers.", ""]
    return "\n".join(parts)


def csv_text(results: Results) -> str:
    """``results.csv``: one line per (model, defence, attack), plus clean and worst-case lines."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "defense", "attack", "group", "view", "norm", "eps", "ar", "ar_k", "ar_n", "ar_ci_low",
                     "ar_ci_high", "robust_accuracy", "robust_k", "robust_n", "robust_ci_low", "robust_ci_high",
                     "mean_norm", "median_grad_evals", "median_forward_evals", "changed_by_8bit_rounding"])
    plans = {p.label: p for p in results.plans}

    def rate_cells(rate: Optional[Rate]) -> List[Any]:
        if rate is None:
            return ["", "", "", "", ""]
        low, high = rate.interval
        return [rate.value if rate.value is not None else "", rate.k, rate.n, low, high]

    for row in results.rows:
        writer.writerow([row.model, row.defense, "clean", "clean", "", "", "", *rate_cells(None), *rate_cells(row.clean),
                         "", "", "", ""])
        for label, m in row.attacks.items():
            plan = plans[label]
            eps = plan.eps
            if m is None:
                writer.writerow([row.model, row.defense, label, plan.group, plan.view, plan.norm, eps] + ["n/a"] * 14)
                continue
            writer.writerow([row.model, row.defense, label, plan.group, plan.view, plan.norm, eps, *rate_cells(m.ar),
                             *rate_cells(m.robust), m.mean_norm, m.median_grad_evals, m.median_forward_evals,
                             m.changed_by_rounding])
        for name, value in ((f"worst case, {white_box_worst_title(results.plans)}", row.worst_white_box),
                            ("worst case, all attacks", row.worst_all),
                            ("worst case, preset attacks", row.worst_presets)):
            if value is not None:
                writer.writerow([row.model, row.defense, name, "worst", "", "", "", *rate_cells(value[0]),
                                 *rate_cells(value[1]), "", "", "", ""])
        for point in row.sweep:
            ar, rob = point["ar"], point["robust_accuracy"]
            writer.writerow([row.model, row.defense, point["attack"], "sweep", point["view"], point["norm"], point["eps"],
                             ar["value"], ar["k"], ar["n"], *ar["ci95"], rob["value"], rob["k"], rob["n"], *rob["ci95"],
                             "", "", "", ""])
    return buffer.getvalue()


def write_report(results: Results) -> Dict[str, Path]:
    """Write ``report.md``, ``results.json`` and ``results.csv`` into the results' folder; returns their paths."""
    out = results.out_dir
    paths = {"report": out / "report.md", "json": out / "results.json", "csv": out / "results.csv"}
    write_atomic(paths["json"], json.dumps(results.to_dict(), indent=2, sort_keys=False, default=str) + "\n")
    write_atomic(paths["csv"], csv_text(results))
    write_atomic(paths["report"], markdown_report(results))
    return paths


def summary_lines(results: Results) -> Sequence[str]:
    """Where the report went, for the CLI's last lines."""
    out = results.out_dir
    return [f"report: {out / 'report.md'}", f"numbers: {out / 'results.json'} and {out / 'results.csv'}",
            f"records: {results.records_path}"]
