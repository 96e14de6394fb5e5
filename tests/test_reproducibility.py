"""Reproducibility: the same spec, seed and batch size give bit-identical records on CPU; another batch size
gives the same decisions (norms agree to float precision); the report says what is random and how it is seeded.

Two processes splitting the images are compared with one process in tests/test_distributed.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from gradconceal.evaluation.store import RecordStore

pytestmark = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Debian package dataset-fashion-mnist is not installed"
)

LINF = {"norm": "linf", "eps": "8/255"}
# Every random part of an evaluation: PGD's and APGD's random starts, Square's proposals, the EOT draws and the
# resize-and-pad draws of the challenge defence; and the deterministic ones (FGSM, C&W, BPDA, transfer).
SPEC: Dict[str, Any] = {
    "models": ["fmnist-cnn"],
    "defenses": ["none", "gcm", "challenge"],
    "data": {"source": "fashion-mnist", "n": 8},
    "attacks": [
        {"label": "FGSM", "attack": "fgsm", **LINF},
        {"label": "PGD", "attack": "pgd", **LINF, "steps": 3, "alpha": "2/255"},
        {"label": "APGD", "attack": "apgd", **LINF, "steps": 3},
        {"label": "CW", "attack": "cw", "norm": "l2", "eps": 1.0, "steps": 3, "binary_search_steps": 1},
        {"label": "Square", "attack": "square", **LINF, "n_queries": 15},
        {"label": "BPDA-PGD", "attack": "pgd", "view": "bpda", **LINF, "steps": 3, "alpha": "2/255"},
        {"label": "EOT-PGD", "attack": "pgd", "view": "eot", "eot_samples": 2, **LINF, "steps": 2, "alpha": "2/255"},
        {"label": "Transfer-PGD", "attack": "pgd", "view": "transfer", **LINF, "steps": 3, "alpha": "2/255"},
    ],
    "batch_size": 4,
    "device": "cpu",
    "seed": 11,
    "audit": False,
    "gallery": 0,
}
RANDOM_ATTACKS = ("PGD", "APGD", "Square", "EOT-PGD")



def _dicts(records: dict) -> dict:
    """Records as their JSON objects, to compare fields that only some record types have."""
    return {k: r.to_dict() for k, r in records.items()}

def run(out: Path, **changes: Any):
    from gradconceal.evaluation.api import evaluate

    return evaluate({**SPEC, **changes}, out, quiet=True, plots=False)


def decisions(out: Path) -> Dict[Any, Any]:
    """What a record decides: predictions, correctness, the attack's own success flag, the status."""
    return {k: (r.get("pred"), r.get("correct"), r.get("adv_pred"), r.get("adv_pred_8bit"), r.get("fooled"),
                r.get("status")) for k, r in _dicts(RecordStore(out).load()).items()}


def norms(out: Path) -> Dict[Any, float]:
    return {k: r["norm"] for k, r in _dicts(RecordStore(out).load()).items() if r.get("norm") is not None}


@pytest.fixture(scope="module")
def first(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("first")
    run(out)
    return out


def test_same_spec_seed_and_batch_size_give_bit_identical_records(first: Path, tmp_path: Path) -> None:
    run(tmp_path)
    assert (tmp_path / "records.jsonl").read_bytes() == (first / "records.jsonl").read_bytes()
    results = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert results == json.loads((first / "results.json").read_text())["rows"]


def test_the_first_images_of_a_longer_run_are_bit_identical_to_a_shorter_run(first: Path, tmp_path: Path) -> None:
    """Batches are blocks of image indices, so a run on the first 4 images (one block of batch_size 4) recomputes
    exactly the records a run on 8 made for them, whatever the other images did (clean mistakes, cascades)."""
    run(tmp_path, data={"source": "fashion-mnist", "n": 4})
    short = _dicts(RecordStore(tmp_path).load())
    long = {k: r for k, r in _dicts(RecordStore(first).load()).items() if k[3] < 4}
    assert short == long and len(short) == len(long) > 0


@pytest.mark.parametrize("batch_size", [1, 8])
def test_another_batch_size_gives_the_same_decisions(first: Path, tmp_path: Path, batch_size: int) -> None:
    run(tmp_path, batch_size=batch_size)
    assert decisions(tmp_path) == decisions(first)
    expected = norms(first)
    got = norms(tmp_path)
    assert got.keys() == expected.keys()
    for key, value in expected.items():  # floating-point sums may differ in the last digits, no more
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    rows = lambda out: [{k: v for k, v in row.items() if k != "attacks"}  # noqa: E731
                        for row in json.loads((out / "results.json").read_text())["rows"]]
    assert rows(tmp_path) == rows(first)


def test_the_seed_drives_every_random_part(first: Path, tmp_path: Path) -> None:
    """A different spec seed changes the random attacks' perturbations, and leaves the deterministic ones alone."""
    run(tmp_path, seed=SPEC["seed"] + 1)
    before, after = norms(first), norms(tmp_path)
    changed = {k[2] for k in before if k in after and after[k] != before[k]}
    assert set(RANDOM_ATTACKS) <= changed, changed
    same = [k for k in before if k[2] in ("FGSM", "CW") and k[1] != "challenge" and k in after]
    assert same and all(after[k] == before[k] for k in same)


def test_the_report_states_what_is_random_and_how_it_is_seeded(first: Path) -> None:
    report = (first / "report.md").read_text()
    notes = report[report.index("## Notes"):]
    for words in ("random starts", "Square's proposals", "EOT", "resize-and-pad", f"sample_seed({SPEC['seed']}, i)",
                  "FGSM, C&W, the GCM layer and the clean pass are deterministic", "bit-identical records",
                  "same decisions"):
        assert words in notes, words
    assert "Randomness:" in " ".join(json.loads((first / "results.json").read_text())["notes"])


@pytest.mark.slow
def test_another_process_with_another_hash_seed_writes_the_same_bytes(first: Path, tmp_path: Path) -> None:
    code = "import json, sys\nfrom gradconceal.evaluation.api import evaluate\n" \
           "evaluate(json.loads(sys.argv[1]), sys.argv[2], quiet=True, plots=False)"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code, json.dumps(SPEC), str(tmp_path)], check=True, env=env)
    assert (tmp_path / "records.jsonl").read_bytes() == (first / "records.jsonl").read_bytes()
