"""torchrun: two processes split the images, rank 0 merges the records, the numbers equal one process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradconceal.evaluation.results import numbers
from gradconceal.evaluation.store import RecordStore

# Random start, Square proposals and a random defence: everything whose seeding must not depend on the
# process an image lands in.
SPEC = {
    "models": ["fmnist-cnn"],
    "defenses": ["none", "challenge"],
    "data": {"source": "fashion-mnist", "n": 9},
    "attacks": [
        {"label": "PGD", "attack": "pgd", "norm": "linf", "eps": "8/255", "steps": 3, "alpha": "3/255"},
        {"label": "BPDA+EOT PGD", "attack": "pgd", "view": "bpda+eot", "eot_samples": 2, "norm": "linf",
         "eps": "8/255", "steps": 3, "alpha": "3/255"},
        {"label": "Square", "attack": "square", "norm": "linf", "eps": "8/255", "n_queries": 30},
    ],
    "batch_size": 4,
    "device": "cpu",
    "seed": 2,
    "audit": False,
    "gallery": 0,
}



def _dicts(records: dict) -> dict:
    """Records as their JSON objects, to compare fields that only some record types have."""
    return {k: r.to_dict() for k, r in records.items()}

def _outcomes(out_dir: Path) -> dict:
    return {k: (r.get("correct"), r.get("pred"), r.get("adv_pred")) for k, r in _dicts(RecordStore(out_dir).load()).items()}


@pytest.mark.slow
def test_two_processes_give_the_numbers_of_one(tmp_path: Path) -> None:
    from gradconceal.evaluation.api import evaluate

    single = evaluate(SPEC, tmp_path / "single", quiet=True, plots=False)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(SPEC))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "gradconceal",
         "--quiet", "evaluate", str(spec_file), "--out", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["world_size"] == 2
    assert numbers(two["rows"]) == numbers(single.to_dict()["rows"])
    assert _outcomes(tmp_path / "two") == _outcomes(tmp_path / "single")
    assert not list((tmp_path / "two").glob("records.rank*.jsonl")), "rank 0 merges the other process's records"
    assert done.stdout.count("clean accuracy %") == 1, "only rank 0 prints the table"
