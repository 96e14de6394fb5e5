"""The runner: durable records, resume after a kill, batch independence, metrics that mean what they say."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any
from pathlib import Path

import pytest

from gradconceal.errors import GradconcealError
from gradconceal.evaluation.metrics import Rate, row_metrics, wilson_interval, worst_case
from gradconceal.attacks.plan import AttackPlan
from gradconceal.evaluation.records import AttackRecord, CleanRecord
from gradconceal.evaluation.records import record_key
from gradconceal.evaluation.store import RecordStore, read_records
from gradconceal.folders import LOCK_FILE, MARKER_FILE, FolderLock

# A small spec on the shipped Fashion-MNIST CNN: every kind of randomness the runner must seed per image
# (PGD's random start, Square's proposals, resize-and-pad draws in the challenge defence), few steps.
SMALL_SPEC = {
    "models": ["fmnist-cnn"],
    "defenses": ["none", "gcm", "challenge"],
    "data": {"source": "fashion-mnist", "n": 12},
    "attacks": [
        {"label": "FGSM", "attack": "fgsm", "norm": "linf", "eps": "8/255"},
        {"label": "PGD", "attack": "pgd", "norm": "linf", "eps": "8/255", "steps": 4, "alpha": "2/255"},
        {"label": "BPDA-PGD", "attack": "pgd", "view": "bpda", "norm": "linf", "eps": "8/255", "steps": 4,
         "alpha": "2/255"},
        {"label": "Square", "attack": "square", "norm": "linf", "eps": "8/255", "n_queries": 40},
    ],
    "batch_size": 5,
    "device": "cpu",
    "seed": 1,
    "audit": False,
    "gallery": 0,
}


# clean pass + each applicable attack, for 12 images: BPDA has nothing to act on in the vanilla model
EXPECTED_RECORDS = 12 * ((1 + 4) + (1 + 4) + (1 + 4))


def numbers(results) -> dict:
    """Every count of a Results object (what 'the same numbers' means)."""
    from gradconceal.evaluation.results import numbers as counts

    return counts(results.to_dict()["rows"])


def outcomes(out_dir: Path) -> dict:
    """Per-record success decisions and predictions (norms may differ in the last digits across batchings)."""
    store = RecordStore(out_dir)
    return {k: (r.correct, getattr(r, "pred", None), getattr(r, "adv_pred", None), getattr(r, "status", None))
            for k, r in store.load().items()}


# -- the store ------------------------------------------------------------------------------------------
def _record(i: int, **extra: Any) -> AttackRecord:
    return AttackRecord(**{"model": "m", "defense": "d", "attack": "a", "index": i, "job": "j", "label": 0,
                           "clean_correct": True, "status": "attacked", "correct": True, **extra})


def test_store_appends_whole_lines_and_drops_a_torn_tail(tmp_path: Path, caplog) -> None:
    with RecordStore(tmp_path) as store:
        store.append([_record(0), _record(1)])
    path = tmp_path / "records.jsonl"
    with open(path, "ab") as handle:  # what a kill in the middle of a write leaves
        handle.write(b'{"model": "m", "defense": "d", "attack": "a", "ind')
    loaded = RecordStore(tmp_path).load()
    assert sorted(k[3] for k in loaded) == [0, 1]
    assert "torn" in caplog.text
    with RecordStore(tmp_path) as store:  # reopening cuts the torn line off before appending
        store.append([_record(2)])
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])
    assert [r.index for r in read_records(path)] == [0, 1, 2]


def test_store_merges_process_files_without_duplicates(tmp_path: Path) -> None:
    with RecordStore(tmp_path) as main:
        main.append([_record(0)])
    with RecordStore(tmp_path, rank=1) as part:
        part.append([_record(1), _record(0)])
    store = RecordStore(tmp_path)
    assert sorted(k[3] for k in store.load()) == [0, 1]
    assert store.merge_parts() == 1
    store.close()
    assert not list(tmp_path.glob("records.rank*.jsonl"))
    assert sorted(r.index for r in read_records(tmp_path / "records.jsonl")) == [0, 1]


def test_a_second_run_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    with FolderLock(tmp_path):
        code = "import sys; from gradconceal.folders import FolderLock; FolderLock(sys.argv[1]).acquire()"
        other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
        assert other.returncode != 0 and "in use by another gradconceal run" in other.stderr
    FolderLock(tmp_path).acquire().release()  # free again once released


def test_a_killed_run_leaves_its_folder_free(tmp_path: Path) -> None:
    code = (f"import sys, time; from {FolderLock.__module__} import FolderLock; "
            "held = FolderLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(GradconcealError, match="in use by another gradconceal run"):
            FolderLock(tmp_path).acquire()
    finally:
        holder.kill()  # no chance to clean up: the operating system lets go of the lock
        holder.communicate(timeout=60)
    FolderLock(tmp_path).acquire().release()


def test_evaluate_refuses_a_folder_in_use_and_writes_nothing(tmp_path: Path) -> None:
    from gradconceal.evaluation.api import evaluate

    with FolderLock(tmp_path):  # another run holds the folder
        with pytest.raises(GradconcealError, match=f"output folder {tmp_path} is in use by another gradconceal run"):
            evaluate(SMALL_SPEC, tmp_path, quiet=True, plots=False)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([LOCK_FILE, MARKER_FILE])  # the holder's only


# -- metrics --------------------------------------------------------------------------------------------
def test_wilson_interval_matches_its_closed_form() -> None:
    z = 1.959963984540054
    low, high = wilson_interval(0, 7)
    assert low == 0.0 and math.isclose(high, z * z / (7 + z * z))
    low, high = wilson_interval(7, 7)
    assert high == 1.0 and math.isclose(low, 7 / (7 + z * z))
    low, high = wilson_interval(5, 10)
    assert math.isclose((low + high) / 2, 0.5) and 0.2 < low < 0.25
    assert Rate(1, 7).cell().startswith("14.3 [")


def _clean(i: int, correct: bool) -> CleanRecord:
    return CleanRecord(model="m", defense="d", index=i, job="j", pred=0, correct=correct, accepted=[0], primary=0,
                       label=0)


def _attacked(i: int, clean_correct: bool, correct: bool, norm: float = 0.1, attack: str = "A") -> AttackRecord:
    return AttackRecord(model="m", defense="d", attack=attack, index=i, job="j", label=0, clean_correct=clean_correct,
                        status="attacked" if clean_correct else "clean-incorrect", correct=correct,
                        fooled=not correct, norm=norm if clean_correct else None, grad_evals=10, forward_evals=2,
                        correct_8bit=correct if clean_correct else None)


def test_table_cells_show_the_interval_to_a_tenth_once_it_is_narrow() -> None:
    assert Rate(0, 90).cell() == "0.0 [0, 4]"
    assert Rate(0, 927).cell() == "0.0 [0.0, 0.4]"  # not a degenerate-looking "[0, 0]"
    assert Rate(462, 927).cell() == "49.8 [46.6, 53.1]"


def test_ar_counts_only_clean_correct_images_and_can_exceed_clean_accuracy() -> None:
    clean = [_clean(i, i < 4) for i in range(10)]  # 40 % clean accuracy
    attacked = [_attacked(i, i < 4, i < 3) for i in range(10)]  # 3 of the 4 survive
    plan = AttackPlan(label="A", attack="pgd", settings={}, group="white-box")
    row = row_metrics("m", "d", clean, {"A": attacked}, [plan], {"A": True})
    metrics = row.attacks["A"]
    assert (row.clean.k, row.clean.n) == (4, 10)
    assert (metrics.ar.k, metrics.ar.n) == (3, 4) and metrics.ar.value == 0.75 > row.clean.value
    assert (metrics.robust.k, metrics.robust.n) == (3, 10)
    assert metrics.mean_norm == pytest.approx(0.1) and metrics.attacked == 4


def test_worst_case_is_per_sample_not_the_minimum_of_columns() -> None:
    clean = [_clean(i, True) for i in range(4)]
    first = [_attacked(i, True, i != 0) for i in range(4)]  # breaks image 0
    second = [_attacked(i, True, i != 1) for i in range(4)]  # breaks image 1
    ar, robust = worst_case(clean, [first, second])
    assert (ar.k, ar.n, robust.k, robust.n) == (2, 4, 2, 4)  # each column alone says 3 of 4


def test_preset_worst_case_leaves_out_the_specs_own_attacks() -> None:
    clean = [_clean(i, True) for i in range(4)]
    preset = [_attacked(i, True, i != 0, attack="P") for i in range(4)]  # breaks image 0
    larger = [_attacked(i, True, i > 2, attack="X") for i in range(4)]  # a larger budget breaks 0, 1, 2
    plans = [AttackPlan(label="P", attack="pgd", settings={}, group="adaptive", origin="adaptive"),
             AttackPlan(label="X", attack="pgd", settings={}, group="adaptive", origin="explicit")]
    row = row_metrics("m", "d", clean, {"P": preset, "X": larger}, plans, {"P": True, "X": True})
    assert (row.worst_all[0].k, row.worst_presets[0].k) == (1, 3)
    only_presets = row_metrics("m", "d", clean, {"P": preset}, plans[:1], {"P": True})
    assert only_presets.worst_presets is None  # it would repeat 'worst, all attacks'


# -- the runner -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of SMALL_SPEC (the numbers every other way of running must reproduce)."""
    from gradconceal.evaluation.api import evaluate

    out = tmp_path_factory.mktemp("reference")
    return evaluate(SMALL_SPEC, out, quiet=True, plots=False), out


def test_records_cover_every_model_defence_attack_and_image(reference) -> None:
    results, out = reference
    records = RecordStore(out).load()
    assert len(records) == EXPECTED_RECORDS
    for key, record in records.items():  # without a concealment layer, BPDA is plain autograd: same decisions
        if key[1] == "vanilla" and key[2] == "BPDA-PGD":
            plain = records[(key[0], key[1], "PGD") + tuple(key[3:])]
            assert isinstance(record, AttackRecord) and isinstance(plain, AttackRecord)
            assert record.fooled == plain.fooled
    attacked = [r for r in records.values() if isinstance(r, AttackRecord) and r.attacked]
    assert attacked and all(r.adv_pred_8bit is not None and r.grad_evals + r.forward_evals > 0 for r in attacked)
    pgd = results.row("fmnist-cnn", "vanilla").attacks["PGD"].ar
    assert pgd.k < pgd.n  # even four PGD steps break some images of the undefended CNN


def test_results_do_not_depend_on_batch_size(reference, tmp_path: Path) -> None:
    from gradconceal.evaluation.api import evaluate

    results, out = reference
    other = evaluate({**SMALL_SPEC, "batch_size": 12}, tmp_path, quiet=True, plots=False)
    assert numbers(other) == numbers(results)
    assert outcomes(tmp_path) == outcomes(out)


def test_rerun_into_the_same_folder_computes_nothing(reference) -> None:
    from gradconceal.evaluation.api import evaluate

    results, out = reference
    first = json.loads((out / "results.json").read_text())["attack_seconds_by_job"]
    again = evaluate(SMALL_SPEC, out, quiet=True, plots=False)
    assert again.info["computed_records"] == 0 and numbers(again) == numbers(results)
    # the cost of the attacks is that of the run that computed them, not lost by re-reporting
    assert first and again.info["attack_seconds_by_job"] == pytest.approx(first, abs=0.05)
    assert again.info["attack_seconds_all_runs"] == pytest.approx(sum(first.values()), abs=0.5)
    assert again.info["attack_seconds"] < 0.5 * sum(first.values())


def test_a_folder_with_only_its_gzipped_records_re_reports_without_computing(reference, tmp_path: Path) -> None:
    import gzip
    import shutil

    from gradconceal.evaluation.api import evaluate

    results, out = reference
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    with open(out / "records.jsonl", "rb") as source, gzip.open(shipped / "records.jsonl.gz", "wb") as archive:
        shutil.copyfileobj(source, archive)
    again = evaluate(SMALL_SPEC, shipped, quiet=True, plots=False)
    assert again.info["computed_records"] == 0 and numbers(again) == numbers(results)
    assert (shipped / "records.jsonl").read_bytes() == (out / "records.jsonl").read_bytes()
    (shipped / "records.jsonl").unlink()
    (shipped / "records.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(GradconcealError, match="cannot unpack"):
        evaluate(SMALL_SPEC, shipped, quiet=True, plots=False)


def test_resume_refuses_records_of_another_configuration(reference) -> None:
    from gradconceal.evaluation.api import evaluate

    _, out = reference
    changed = json.loads(json.dumps(SMALL_SPEC))
    changed["attacks"][1]["steps"] = 5
    with pytest.raises(GradconcealError, match=r"computed with other attack settings \(first: fmnist-cnn/vanilla/PGD"):
        evaluate(changed, out, quiet=True, plots=False)


def test_spec_errors_come_before_any_model_loads(monkeypatch, tmp_path: Path) -> None:
    import gradconceal.models.zoo as zoo
    from gradconceal.evaluation.api import evaluate

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the spec was validated")

    monkeypatch.setattr(zoo, "load_model", refuse)
    bad = {**SMALL_SPEC, "attacks": [{"attack": "pgd", "norm": "l2", "eps": 1000.0}]}
    with pytest.raises(GradconcealError, match="exceeds the largest possible distance"):
        evaluate(bad, tmp_path, quiet=True)
    with pytest.raises(GradconcealError, match="data.n is 100000"):
        evaluate({**SMALL_SPEC, "data": {"source": "fashion-mnist", "n": 100000}}, tmp_path, quiet=True)


KILL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from gradconceal.evaluation.api import evaluate
    evaluate(json.loads(sys.argv[1]), sys.argv[2], quiet=True, plots=False)
    """
)


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_uninterrupted_numbers(reference, tmp_path: Path) -> None:
    from gradconceal.evaluation.api import evaluate

    results, _ = reference
    spec = {**SMALL_SPEC, "batch_size": 2}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    path = tmp_path / "records.jsonl"
    for kill_after in (10, 60):  # once in the clean pass / first attacks, once later, then resume
        process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, json.dumps(spec), str(tmp_path)], env=env)
        deadline = time.monotonic() + 120
        before = len(RecordStore(tmp_path).load())
        while time.monotonic() < deadline and process.poll() is None:
            if path.exists() and path.read_bytes().count(b"\n") >= before + kill_after:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
    interrupted = len(RecordStore(tmp_path).load())
    assert 0 < interrupted < EXPECTED_RECORDS, "the kill should land mid-run"
    resumed = evaluate(spec, tmp_path, quiet=True, plots=False)
    assert resumed.info["computed_records"] == EXPECTED_RECORDS - interrupted
    assert numbers(resumed) == numbers(results)
    keys = [record_key(r) for r in read_records(path)]
    assert len(keys) == len(set(keys)), "a resumed run must not duplicate records"


def test_accepted_labels_view_keeps_decisions_and_makes_attacks_leave_the_set() -> None:
    import torch
    from torch import nn

    from gradconceal.attacks import PGD
    from gradconceal.attacks.labelsets import AcceptedLabels

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 6)).eval()
    x = torch.rand(64, 3, 2, 2)
    accepted, label = [1, 4], 4
    merged = AcceptedLabels(net, accepted, label)
    with torch.no_grad():
        plain, seen = net(x).argmax(1), merged(x).argmax(1)
    assert torch.equal(torch.isin(plain, torch.tensor(accepted)), seen == label)
    image = x[:1]
    with torch.no_grad():
        start = int(net(image).argmax(1))
    twin = AcceptedLabels(net, [start, (start + 1) % 6], start)
    result = PGD(twin, norm="linf", eps=1.0, steps=10, alpha=0.2).perturb(image, torch.tensor([start]))
    with torch.no_grad():
        final = int(net(result.adversarial).argmax(1))
    assert bool(result.fooled[0]) == (final not in (start, (start + 1) % 6))


def test_in_memory_models_are_evaluated_by_name(tmp_path: Path) -> None:
    from gradconceal.evaluation.api import evaluate
    from gradconceal.models.zoo import load_model

    mine = load_model("fmnist-cnn").train()
    spec = {**SMALL_SPEC, "models": ["mine"], "defenses": ["none"], "attacks": [SMALL_SPEC["attacks"][0]]}
    results = evaluate(spec, tmp_path, quiet=True, plots=False, models={"mine": mine})
    reference = evaluate({**spec, "models": ["fmnist-cnn"]}, tmp_path / "zoo", quiet=True, plots=False)
    assert results.rows[0].model == "mine"
    assert results.ar("mine", "vanilla", "FGSM") == reference.ar("fmnist-cnn", "vanilla", "FGSM")
    assert mine.training and all(p.requires_grad for p in mine.parameters())  # given back as it came
