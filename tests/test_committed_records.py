"""Recomputing committed records with today's code reproduces them exactly.

Every committed result folder (docs/results) must be what today's code computes. This check reruns, for the
first block of images of two committed specs, a selection of their attacks through the same runner, and compares
every field of every record. Each kind of attack is checked on one of the two specs (plain-gradient, EOT over a
random defence judged on its draws and transfer on the CNN; BPDA and gradient-free on the ResNet), every defence
on both, so that the check stays within three minutes. Batches are blocks of image indices, so the first
``batch_size`` images form the same batch in both runs. docs/reproducibility.md says what may differ on another CPU.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Dict, List

import pytest

from gradconceal.evaluation.records import record_from_dict, record_key
from gradconceal.evaluation.spec import load_spec, read_spec_file
from gradconceal.evaluation.store import RecordStore

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
# per committed spec: its model and the attacks rerun (together one of each kind whose records do not depend on
# another attack's: no cascade member)
SPECS = {"fashion-mnist": ("fmnist-cnn", ["FGSM", "PGD-Linf", "BPDA+EOT PGD-Linf", "Transfer PGD-Linf"]),
         "fashion-mnist-resnet": ("fmnist-resnet", ["BPDA PGD-Linf", "Square-Linf"])}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                       reason="Debian package dataset-fashion-mnist is not installed"),
]


def _committed(name: str, labels: List[str], images: int) -> Dict:
    with gzip.open(RESULTS / name / "records.jsonl.gz", "rt", encoding="utf-8") as handle:
        records = [record_from_dict(json.loads(line)) for line in handle if line.strip()]
    return {record_key(r): r.to_dict() for r in records if r.key[3] < images and r.key[2] in labels + ["clean"]}


def _current(name: str) -> bool:
    """Whether today's attack code wrote the folder (else docs/results/README.md declares it not yet
    regenerated: tests/test_rereport.py checks that)."""
    from gradconceal.evaluation.provenance import by_current_attack_code

    return by_current_attack_code(json.loads((RESULTS / name / "results.json").read_text(encoding="utf-8")))


def test_recomputing_committed_clean_records_reproduces_them(tmp_path: Path) -> None:
    from gradconceal.evaluation.api import evaluate

    name = "fashion-mnist-clean"
    if not _current(name):
        pytest.skip(f"{name} is declared not yet regenerated")
    raw = read_spec_file(RESULTS / f"{name}.toml")
    images = int(raw["batch_size"])
    evaluate({**raw, "data": {**raw["data"], "n": images}}, tmp_path / "out", quiet=True, plots=False)
    new = {k: r.to_dict() for k, r in RecordStore(tmp_path / "out").load().items()}
    assert new == _committed(name, [], images) and len(new) == images * 27


@pytest.mark.parametrize("name", sorted(SPECS))
def test_recomputing_committed_records_reproduces_them(name: str, tmp_path: Path) -> None:
    from gradconceal.evaluation.api import evaluate
    from gradconceal.evaluation.plan import plan_attacks

    if not _current(name):
        pytest.skip(f"{name} is declared not yet regenerated (docs/results/README.md)")
    model, checked = SPECS[name]
    raw = read_spec_file(RESULTS / f"{name}.toml")
    spec = load_spec(RESULTS / f"{name}.toml")
    plans = {p.label: p for p in plan_attacks(spec, (1, 28, 28))}
    attacks = [{"label": label, "attack": plans[label].attack, "view": plans[label].view,
                **plans[label].settings} for label in checked]
    images = spec.batch_size  # the first block of images: the same batches as the committed run
    rerun = {**raw, "data": {**raw["data"], "n": images}, "attacks": attacks, "audit": False, "gallery": 0,
             "models": [model]}
    evaluate(rerun, tmp_path / "out", quiet=True, plots=False)
    new = {k: r.to_dict() for k, r in RecordStore(tmp_path / "out").load().items()}
    old = _committed(name, checked, images)
    assert set(new) == set(old), "the committed folder lacks records of today's jobs (regenerate it)"
    differing = [k for k in new if not _same_record(new[k], old[k])]
    assert not differing, f"{len(differing)} record(s) differ from the committed ones, first {differing[0]}: " \
                          f"{old[differing[0]]} != {new[differing[0]]}"


# Float fields of a record that another CPU may compute with other rounding (e.g. AVX-512 against AVX2 vector
# code for sin and cos of the 1e20-scale arguments inside GCM, or a reduction in another order): the Linf/L2/L1
# size of the perturbation. Every decision, count, label and prediction must still be equal.
FLOAT_FIELDS = ("norm",)


def _same_record(new: Dict, old: Dict) -> bool:
    """Equal, except float fields within float32 rounding (relative 1e-6) of each other."""
    if new == old:
        return True
    if set(new) != set(old):
        return False
    for key, value in new.items():
        if key in FLOAT_FIELDS and isinstance(value, float) and isinstance(old[key], float):
            if abs(value - old[key]) > 1e-6 * max(abs(value), abs(old[key]), 1e-12):
                return False
        elif value != old[key]:
            return False
    return True


def test_only_float_rounding_of_the_perturbation_size_is_tolerated() -> None:
    record = {"status": "attacked", "correct": True, "adv_pred": 1, "norm": 0.0313725620508194, "grad_evals": 20}
    assert _same_record({**record, "norm": 0.0313725508749485}, record)  # seen between two x86-64 CPUs
    assert not _same_record({**record, "norm": 0.0313}, record)
    assert not _same_record({**record, "correct": False}, record)
    assert not _same_record({**record, "grad_evals": 21}, record)
