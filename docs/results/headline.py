"""Print the README's headline table from the reports' results.json files (no number is typed by hand).

    python docs/results/headline.py            # Fashion-MNIST (the README's headline)
    python docs/results/headline.py --photos   # the EfficientNet-Lites on the shipped photos

Only folders computed by today's attack code (their provenance's attack semantics) enter the table; the others
are named on the last line, so an older table is never mixed into a current one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from gradconceal.attacks.plan import AttackPlan
from gradconceal.evaluation.provenance import by_current_attack_code

HERE = Path(__file__).resolve().parent
REPORTS = [
    "fashion-mnist", "fashion-mnist-resnet", "fashion-mnist-trained", "fashion-mnist-resnet-trained",
    "fashion-mnist-convnext", "fashion-mnist-convnext-fgsm", "fashion-mnist-convnext-pgd",
    "fashion-mnist-vit", "fashion-mnist-vit-trained",
]
PHOTO_REPORTS = ["lite0-photos", "lite1-photos", "lite2-photos"]
MODELS = {
    "fmnist-cnn": "CNN, plain", "fmnist-cnn-fgsm": "CNN, FGSM-reg.", "fmnist-cnn-pgd": "CNN, PGD-trained",
    "fmnist-resnet": "ResNet, plain", "fmnist-resnet-fgsm": "ResNet, FGSM-reg.", "fmnist-resnet-pgd": "ResNet, PGD-trained",
    "fmnist-vit": "ViT, plain", "fmnist-vit-fgsm": "ViT, FGSM-reg.", "fmnist-vit-pgd": "ViT, PGD-trained",
    "fmnist-convnext": "ConvNeXt, plain", "fmnist-convnext-fgsm": "ConvNeXt, FGSM-reg. (challenge recipe)",
    "fmnist-convnext-pgd": "ConvNeXt, PGD-trained",
    "lite0": "EfficientNet-Lite0, 224 px", "lite1": "EfficientNet-Lite1, 240 px", "lite2": "EfficientNet-Lite2, 260 px",
}
DEFENCES = {"vanilla": "none", "gcm": "GCM", "challenge": "GCM + resize-pad"}
COLUMNS = [("PGD-Linf", "PGD-Linf 8/255"), ("C&W-L2", "C&W-L2"), (None, "worst, plain gradients"),
           ("BPDA PGD-Linf", "BPDA PGD-Linf"), ("BPDA+EOT PGD-Linf", "BPDA+EOT"), ("Square-Linf", "Square"),
           ("Transfer PGD-Linf", "transfer"), ("AutoAttack-Linf", "AutoAttack Linf 8/255"),
           ("AutoAttack-L2", "AutoAttack L2"), ("*presets", "worst, paper's budgets"),
           ("BPDA PGD-Linf 0.1", "BPDA Linf 0.1"), ("", "worst, all attacks"), ("*expected", "same, expectation over draws")]


def percent(rate: Optional[Dict[str, Any]]) -> str:
    return "n/a" if not rate or rate.get("value") is None else f"{100 * rate['value']:.1f}"


def ensemble(row: Dict[str, Any], cascade: str, order: Dict[str, List[str]]) -> Optional[Dict[str, Any]]:
    """A cascade's AR: its last member that applies to the row (each member's column is the cascade so far)."""
    members = [row["attacks"].get(label) for label in order.get(cascade, [])]
    applied = [m for m in members if m]
    return applied[-1]["ar"] if applied else None


def images(data: Dict[str, Any], labels: List[str]) -> int:
    """How many images the attacks ``labels`` covered (the fewest of them)."""
    total = int(data["n_images"])
    plans = [AttackPlan.from_dict(a) for a in data["attacks"] if a["label"] in labels]
    return min((plan.images(total) for plan in plans), default=total)


def reports(names: List[str]) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """The current reports of ``names``, in order."""
    for name in names:
        path = HERE / name / "results.json"
        if path.exists():
            data = json.loads(path.read_text())
            if by_current_attack_code(data):
                yield name, data


def left_out(names: List[str]) -> List[str]:
    """``names`` not in the table: not computed yet, or computed by older attack code."""
    shown = {name for name, _ in reports(names)}
    return [name for name in names if name not in shown]


def rows(names: List[str], columns: List[Tuple[Optional[str], str]]) -> Iterator[str]:
    for name, data in reports(names):
        order: Dict[str, List[str]] = {}
        for attack in data["attacks"]:
            if attack.get("cascade"):
                order.setdefault(attack["cascade"], []).append(attack["label"])
        for row in data["rows"]:
            cells = [MODELS.get(row["model"], row["model"]), DEFENCES.get(row["defense"], row["defense"]),
                     percent(row["clean_accuracy"]), str(row["clean_accuracy"]["k"])]
            for label, _ in columns:
                if label is None:
                    cells.append(percent((row.get("worst_case_white_box") or {}).get("ar")))
                elif label == "":
                    cells.append(percent((row.get("worst_case_all") or {}).get("ar")))
                elif label == "*presets":
                    cells.append(percent((row.get("worst_case_presets") or {}).get("ar")))
                elif label == "*expected":
                    cells.append(percent((row.get("worst_case_all_expected") or {}).get("ar")))
                elif label.startswith("AutoAttack-"):
                    cells.append(percent(ensemble(row, label, order)))
                else:
                    attack = row["attacks"].get(label)
                    cells.append(percent(attack["ar"]) if attack else "n/a")
            audit = (data.get("audit") or {}).get(f"{row['model']}/{row['defense']}") or {}
            cells.append(audit.get("verdict") or "not run")
            yield "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", action="store_true",
                        help="the EfficientNet-Lites on the 9 shipped photos instead of Fashion-MNIST")
    photos = parser.parse_args().photos
    names = PHOTO_REPORTS if photos else REPORTS
    # the photo specs hold the presets only: no Linf 0.1 attack, and the presets' worst case is the worst of all
    columns = [c for c in COLUMNS if not (photos and c[0] in ("BPDA PGD-Linf 0.1", "*presets"))]
    counts: Dict[str, set] = {}
    for _, data in reports(names):  # images per column (the ensembles may cover the first images only)
        for label, title in columns:
            if label and label.startswith("AutoAttack-"):
                labels = [a["label"] for a in data["attacks"] if a.get("cascade") == label]
                counts.setdefault(title, set()).add(images(data, labels))
            elif label in ("", "*expected"):
                counts.setdefault(title, set()).add(images(data, [a["label"] for a in data["attacks"]]))
            elif label == "*presets":
                preset = [a["label"] for a in data["attacks"] if a.get("origin") != "explicit"]
                counts.setdefault(title, set()).add(images(data, preset))
            else:
                counts.setdefault(title, set()).add(int(data["n_images"]))
    print("Images per column (over the reports): " + "; ".join(
        f"{title}: {' or '.join(str(c) for c in sorted(n))}" for title, n in counts.items()))
    print()
    head = ["model", "defence", "clean %", "n"] + [title for _, title in columns] + ["masking audit"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] * len(head)) + "|")
    for line in rows(names, columns):
        print(line)
    missing = left_out(names)
    if missing:
        print()
        print("Not in this table (not yet computed by today's attack code): " + ", ".join(f"`{m}`" for m in missing))


if __name__ == "__main__":
    main()
