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
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from gradconceal.attacks.plan import AttackPlan
from gradconceal.errors import GradconcealError
from gradconceal.evaluation.metrics import Rate, split_row, worst_case, worst_case_expected
from gradconceal.evaluation.records import Key, Record, record_from_dict, record_key
from gradconceal.evaluation.results import read_results

HERE = Path(__file__).resolve().parent

Row = Tuple[str, str]


def chosen_attacks(attacks: Sequence[Dict], presets: bool, exclude: Sequence[str]) -> List[AttackPlan]:
    """The table attacks of results.json's ``attacks`` to take the worst case over."""
    kept = [plan for plan in map(AttackPlan.from_dict, attacks) if plan.group != "sweep"]
    if presets:
        kept = [plan for plan in kept if plan.origin != "explicit"]
    return [plan for plan in kept if not any(fnmatch.fnmatchcase(plan.label, pattern) for pattern in exclude)]


def load(folder: Path) -> Mapping[Key, Record]:
    """A committed folder's records (its ``records.jsonl.gz``), keyed as the runner keys them."""
    path = folder / "records.jsonl.gz"
    if not path.exists():
        raise GradconcealError(f"{path} not found: this script reads a committed folder's gzipped records")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            records = [record_from_dict(json.loads(line)) for line in handle]
    except (OSError, EOFError, ValueError, KeyError, TypeError) as error:
        raise GradconcealError(f"cannot read the records of {path}: {error}") from None
    return {record_key(record): record for record in records}


def worst_cases(folder: Path, *, presets: bool = False, exclude: Sequence[str] = (),
                images: Optional[int] = None) -> Tuple[List[AttackPlan], int, List[Tuple[Row, Rate, Optional[Rate]]]]:
    """(chosen attacks, images counted, per row: (model, defence), AR worst over draws, AR in expectation over
    draws or None for a deterministic defence). Raises GradconcealError with the reason on a bad choice or a
    folder that cannot be read."""
    results = read_results(folder / "results.json")
    n_images = int(results["n_images"])
    attacks = chosen_attacks(results["attacks"], presets, exclude)
    if not attacks:
        raise GradconcealError("no attack left to take the worst case over")
    counted = min(plan.images(n_images) for plan in attacks)
    if images is not None:
        if not 1 <= images <= counted:
            raise GradconcealError(f"--images must be between 1 and {counted} (the images every chosen attack covered)")
        counted = images
    records = load(folder)
    rows: List[Tuple[Row, Rate, Optional[Rate]]] = []
    for row in results["rows"]:
        key = (row["model"], row["defense"])
        clean, by_attack = split_row(records, *key, counted)
        per_attack = [by_attack.get(plan.label, []) for plan in attacks]
        ar, _ = worst_case(clean, per_attack)
        random = any(r.correct_draws is not None for attacked in per_attack for r in attacked)
        expected = worst_case_expected(clean, per_attack)[0] if random else None
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
    try:
        attacks, images, rows = worst_cases(folder, presets=args.presets, exclude=args.exclude, images=args.images)
    except GradconcealError as error:
        raise SystemExit(f"worst_case.py: {error}") from None
    print(f"worst case per image over {len(attacks)} attack(s) on the first {images} image(s) of {folder.name}: "
          + ", ".join(plan.label for plan in attacks))
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
