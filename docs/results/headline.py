"""Print the README's headline table from the reports' results.json files (no number is typed by hand).

    python docs/results/headline.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

HERE = Path(__file__).resolve().parent
REPORTS = [
    "fashion-mnist", "fashion-mnist-resnet", "fashion-mnist-trained", "fashion-mnist-resnet-trained", "fashion-mnist-vit",
    "fashion-mnist-vit-trained",
]
MODELS = {
    "fmnist-cnn": "CNN, plain", "fmnist-cnn-fgsm": "CNN, FGSM-reg.", "fmnist-cnn-pgd": "CNN, PGD-trained",
    "fmnist-resnet": "ResNet, plain", "fmnist-resnet-fgsm": "ResNet, FGSM-reg.", "fmnist-resnet-pgd": "ResNet, PGD-trained",
    "fmnist-vit": "ViT, plain", "fmnist-vit-fgsm": "ViT, FGSM-reg.", "fmnist-vit-pgd": "ViT, PGD-trained",
}
DEFENCES = {"vanilla": "none", "gcm": "GCM", "challenge": "GCM + resize-pad"}
COLUMNS = [("PGD-Linf", "PGD-Linf 8/255"), ("C&W-L2", "C&W-L2"), (None, "worst, plain gradients"),
           ("BPDA PGD-Linf", "BPDA PGD-Linf"), ("BPDA+EOT PGD-Linf", "BPDA+EOT"), ("Square-Linf", "Square"),
           ("Transfer PGD-Linf", "transfer"), ("*presets", "worst, paper's budgets"), ("BPDA PGD-Linf 0.1", "BPDA Linf 0.1"),
           ("", "worst, all attacks")]


def percent(rate: Optional[Dict[str, Any]]) -> str:
    return "n/a" if not rate or rate.get("value") is None else f"{100 * rate['value']:.1f}"


def rows() -> Iterator[str]:
    for name in REPORTS:
        path = HERE / name / "results.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        for row in data["rows"]:
            cells = [MODELS.get(row["model"], row["model"]), DEFENCES.get(row["defense"], row["defense"]),
                     percent(row["clean_accuracy"]), str(row["clean_accuracy"]["k"])]
            for label, _ in COLUMNS:
                if label is None:
                    cells.append(percent((row.get("worst_case_white_box") or {}).get("ar")))
                elif label == "":
                    cells.append(percent((row.get("worst_case_all") or {}).get("ar")))
                elif label == "*presets":
                    cells.append(percent((row.get("worst_case_presets") or {}).get("ar")))
                else:
                    attack = row["attacks"].get(label)
                    cells.append(percent(attack["ar"]) if attack else "n/a")
            yield "| " + " | ".join(cells) + " |"


def main() -> None:
    head = ["model", "defence", "clean %", "n"] + [title for _, title in COLUMNS]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] * len(head)) + "|")
    for line in rows():
        print(line)


if __name__ == "__main__":
    main()
