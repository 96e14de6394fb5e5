"""torchrun: two processes split the images, rank 0 merges the records, the records equal one process's."""

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
        # the first 4 images are one batch: one process attacks them, and the runner says so
        {"label": "PGD first 4", "attack": "pgd", "norm": "l2", "eps": 0.5, "steps": 3, "alpha": 0.2, "n": 4},
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
    # whole blocks of batch_size images per process: every batch as in one process, so every field is equal
    assert _dicts(RecordStore(tmp_path / "two").load()) == _dicts(RecordStore(tmp_path / "single").load())
    assert not list((tmp_path / "two").glob("records.rank*.jsonl")), "rank 0 merges the other process's records"
    assert done.stdout.count("clean accuracy %") == 1, "only rank 0 prints the table"
    warned = [line for line in done.stderr.splitlines() if "run on the first 4 image(s)" in line]
    assert len(warned) == 1 and "[4, 0]" in warned[0] and "batch_size 2" in warned[0], done.stderr[-3000:]


@pytest.mark.parametrize("world, n, batch", [(2, 9, 4), (3, 25, 4), (2, 1000, 100), (4, 7, 3)])
def test_processes_take_whole_blocks(world: int, n: int, batch: int) -> None:
    """Each process attacks whole blocks of batch_size image indices, so its batches are one process's batches
    (float logits on a CPU change in the last bits with a batch's composition): the union is every image once."""
    from gradconceal.evaluation.distributed import Distributed
    from gradconceal.evaluation.run import Runner
    from gradconceal.evaluation.spec import load_spec

    runner = Runner(load_spec({**SPEC, "batch_size": batch}), Path("unused"))
    runner.n_images = n
    alone = runner._blocks(list(range(n)))
    batches = []
    for rank in range(world):
        runner.dist = Distributed(rank=rank, world_size=world)
        batches += runner._blocks(runner._shard())
    assert sorted(batches) == alone
    assert sorted(i for b in batches for i in b) == list(range(n))


@pytest.mark.parametrize("world, n, batch, busiest", [(2, 100, 100, 0), (2, 150, 100, 0), (4, 200, 100, 0),
                                                       (3, 40, 10, 0)])
def test_a_subset_that_one_process_would_attack_alone_is_named(world: int, n: int, batch: int, busiest: int) -> None:
    """An attack on the first n images only covers the first blocks: when they land unevenly on the processes
    the runner says so, with the counts per rank and a batch size that spreads them evenly."""
    from gradconceal.evaluation.distributed import shard_images, uneven_subsets

    notes = uneven_subsets({"AA APGD-CE-Linf": n, "AA Square-Linf": n}, batch, world)
    assert len(notes) == 1
    counts = [len(shard_images(n, batch, world, rank)) for rank in range(world)]
    assert f"{counts}" in notes[0] and f"rank {busiest} " in notes[0]
    assert "'AA APGD-CE-Linf', 'AA Square-Linf'" in notes[0]
    suggested = int(notes[0].split("batch_size ")[-1].split()[0])
    spread = [len(shard_images(n, suggested, world, rank)) for rank in range(world)]
    assert max(spread) - min(spread) <= suggested, spread  # within one block of even


@pytest.mark.parametrize("world, n, batch", [(1, 100, 100), (2, 200, 100), (2, 100, 50), (2, 1000, 100),
                                             (2, 250, 100)])
def test_subsets_spread_evenly_draw_no_warning(world: int, n: int, batch: int) -> None:
    from gradconceal.evaluation.distributed import uneven_subsets

    assert uneven_subsets({"AA APGD-CE-Linf": n}, batch, world) == []


def test_shard_refuses_a_rank_outside_the_job() -> None:
    from gradconceal.errors import GradconcealError
    from gradconceal.evaluation.distributed import shard_images

    with pytest.raises(GradconcealError, match="rank=2"):
        shard_images(10, 4, 2, 2)
    with pytest.raises(GradconcealError, match="batch_size=0"):
        shard_images(10, 0, 2, 0)


def test_processes_wait_for_uneven_work_longer_than_torch_default(monkeypatch) -> None:
    """A first-n subset can keep one process busy for hours while the others wait at the final barrier; with
    torch's default 30-minute timeout they died there and took the job with them (seen on a 2-process run)."""
    import datetime

    import torch.distributed as dist

    from gradconceal.evaluation import distributed

    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    place, device = distributed.setup_distributed("cpu")
    assert (place.rank, place.world_size, device) == (1, 2, "cpu")
    assert seen["backend"] == "gloo" and seen["timeout"] >= datetime.timedelta(hours=24)
