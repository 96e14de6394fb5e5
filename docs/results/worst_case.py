"""Per-image worst case of a committed result folder over a chosen set of its attacks and images.

The reports give the worst case over all attacks and over the presets' attacks; this script answers the
questions in between from the committed records, with the report's own arithmetic (``metrics.worst_case``):
e.g. the paper's budgets without AutoAttack's ensemble, on the first 100 images or on all of them.

    python docs/results/worst_case.py fashion-mnist-vit --presets --exclude 'AA*' --images 100
    python docs/results/worst_case.py fashion-mnist-vit --presets --exclude 'AA*'

``--presets`` keeps the presets' attacks (the paper's budgets); ``--exclude`` drops labels matching a glob
(repeatable); ``--images N`` counts the first N images only (default: the images every chosen attack covered).
A random defence is judged as in the reports' worst-case columns: an image counts only when every draw was correct.
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from gradconceal.evaluation.metrics import Rate, worst_case, worst_case_expected
from gradconceal.evaluation.records import AttackRecord, CleanRecord, record_from_dict

HERE = Path(__file__).resolve().parent

Row = Tuple[str, str]


def chosen_attacks(attacks: Sequence[Dict], presets: bool, exclude: Sequence[str]) -> List[Dict]:
    """The table attacks of results.json's ``attacks`` to take the worst case over."""
    kept = [a for a in attacks if a.get("group") != "sweep"]
    if presets:
        kept = [a for a in kept if a.get("origin") != "explicit"]
    return [a for a in kept if not any(fnmatch.fnmatchcase(a["label"], pattern) for pattern in exclude)]


def covered(attack: Dict, n_images: int) -> int:
    """The images an attack covered: the first ``n`` of the data (all when the spec set no count)."""
    return min(int(attack["n"]), n_images) if attack.get("n") else n_images


def load(folder: Path) -> Tuple[Dict[Row, List[CleanRecord]], Dict[Row, Dict[str, List[AttackRecord]]]]:
    """A folder's clean records and attack records per (model, defence) row."""
    path = folder / "records.jsonl.gz"
    if not path.exists():
        raise SystemExit(f"{path} not found: this script reads a committed folder's gzipped records")
    clean: Dict[Row, List[CleanRecord]] = {}
    attacked: Dict[Row, Dict[str, List[AttackRecord]]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = record_from_dict(json.loads(line))
            row = (record.model, record.defense)
            if isinstance(record, CleanRecord):
                clean.setdefault(row, []).append(record)
            else:
                attacked.setdefault(row, {}).setdefault(record.attack, []).append(record)
    return clean, attacked


def worst_cases(folder: Path, *, presets: bool = False, exclude: Sequence[str] = (),
                images: Optional[int] = None) -> Tuple[List[Dict], int, List[Tuple[Row, Rate, Optional[Rate]]]]:
    """(chosen attacks, images counted, per row: (model, defence), AR worst over draws, AR in expectation over
    draws or None for a deterministic defence). Raises SystemExit with the reason on a bad choice."""
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    n_images = int(results["n_images"])
    attacks = chosen_attacks(results["attacks"], presets, exclude)
    if not attacks:
        raise SystemExit("no attack left to take the worst case over")
    counted = min(covered(a, n_images) for a in attacks)
    if images is not None:
        if not 1 <= images <= counted:
            raise SystemExit(f"--images must be between 1 and {counted} (the images every chosen attack covered)")
        counted = images
    clean, attacked = load(folder)
    rows: List[Tuple[Row, Rate, Optional[Rate]]] = []
    for row in results["rows"]:
        key = (row["model"], row["defense"])
        per_attack = [attacked.get(key, {}).get(a["label"], []) for a in attacks]
        ar, _ = worst_case(clean.get(key, []), per_attack, counted)
        random = any(r.correct_draws is not None for records in per_attack for r in records)
        expected = worst_case_expected(clean.get(key, []), per_attack, counted)[0] if random else None
        rows.append((key, ar, expected))
    return attacks, counted, rows


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a folder of docs/results (its name) or a path to a result folder")
    parser.add_argument("--presets", action="store_true", help="the presets' attacks only (the paper's budgets)")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="drop attacks whose label matches, e.g. 'AA*' (repeatable)")
    parser.add_argument("--images", type=int, default=None, metavar="N", help="the first N images only")
    args = parser.parse_args(argv)
    folder = Path(args.folder) if Path(args.folder).is_dir() else HERE / args.folder
    attacks, images, rows = worst_cases(folder, presets=args.presets, exclude=args.exclude, images=args.images)
    print(f"worst case per image over {len(attacks)} attack(s) on the first {images} image(s) of {folder.name}: "
          + ", ".join(a["label"] for a in attacks))
    print()
    print("| model | defence | clean-correct | AR % (worst over draws) | AR %, expectation over draws |")
    print("|---|---|---:|---:|---:|")
    for (model, defense), ar, expected in rows:
        print(f"| {model} | {defense} | {ar.n} | {ar.cell()} | {expected.cell() if expected else '-'} |")
    print()
    print("python docs/results/worst_case.py " + " ".join(
        [folder.name] + (["--presets"] if args.presets else []) + [f"--exclude '{p}'" for p in args.exclude]
        + ([f"--images {args.images}"] if args.images is not None else [])))


if __name__ == "__main__":
    main()
