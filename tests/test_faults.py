"""Faults: kill -9 at random moments, a full disk, two runs on one folder. Nothing finished is lost, no record
is torn or written twice, and the resumed run ends with the numbers of an uninterrupted one.

The kill tests drive real processes (``python -m gradconceal ...``); they are marked slow. The disk-full
tests make the store's ``os.write``/``os.fsync`` (or the report's temporary file) fail with ENOSPC.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest

from gradconceal.cli import main
from gradconceal.evaluation import store as store_module
from gradconceal.evaluation.records import record_key
from gradconceal.evaluation.run import STALE_BANNER
from gradconceal.evaluation.store import RecordStore
from gradconceal.folders import LOCK_FILE, FolderLock

pytestmark = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Debian package dataset-fashion-mnist is not installed"
)

# Both defences and every kind of per-image randomness (PGD's random start, Square's proposals), few steps.
FAULT_SPEC: Dict[str, Any] = {
    "format_version": 1,
    "models": ["fmnist-cnn"],
    "defenses": ["none", "gcm"],
    "data": {"source": "fashion-mnist", "n": 10},
    "attacks": [
        {"label": "FGSM", "attack": "fgsm", "norm": "linf", "eps": "8/255"},
        {"label": "PGD", "attack": "pgd", "norm": "linf", "eps": "8/255", "steps": 3, "alpha": "2/255"},
        {"label": "Square", "attack": "square", "norm": "linf", "eps": "8/255", "n_queries": 20},
    ],
    "batch_size": 2,
    "device": "cpu",
    "seed": 5,
    "audit": False,
    "gallery": 0,
}
TOTAL_RECORDS = 10 * 2 * (1 + 3)  # images x defences x (clean + attacks)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
REPORT_FILES = ("report.md", "results.json", "results.csv")


# -- helpers --------------------------------------------------------------------------------------------

def _dicts(records: dict) -> dict:
    """Records as their JSON objects, to compare fields that only some record types have."""
    return {k: r.to_dict() for k, r in records.items()}

def numbers(results) -> dict:
    from gradconceal.evaluation.results import numbers as counts

    return counts(results.to_dict()["rows"])


def outcomes(out_dir: Path) -> dict:
    """The decisions of every record (norms may differ in the last digits when batches are formed differently)."""
    return {k: (r.get("correct"), r.get("pred"), r.get("adv_pred"), r.get("status"), r.get("fooled"))
            for k, r in _dicts(RecordStore(out_dir).load()).items()}


def check_records_file(path: Path, *, torn_tail_allowed: bool) -> List[dict]:
    """Every line but (optionally) a torn last one is a whole JSON record; no record appears twice."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    assert torn_tail_allowed or tail == b"", f"torn last line of {len(tail)} bytes"
    records = [json.loads(line) for line in lines]
    keys = [record_key(r) for r in records]
    assert len(keys) == len(set(keys)), "a record was written twice"
    return records


def write_spec(folder: Path, spec: Dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def cli(capsys, *argv: str) -> Tuple[int, str]:
    code = main(["--quiet", *argv])
    return code, capsys.readouterr().err


def one_error_line(err: str, *needles: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, timeout: float = 120.0) -> bool:
    """Poll until ``condition`` holds (True) or the process ends or time runs out (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            return True
        time.sleep(0.02)
    return False


def line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of FAULT_SPEC: the numbers and decisions every faulted run must end with."""
    from gradconceal.evaluation.api import evaluate

    out = tmp_path_factory.mktemp("reference")
    results = evaluate(FAULT_SPEC, out, quiet=True, plots=False)
    assert results.info["total_records"] == TOTAL_RECORDS
    return numbers(results), outcomes(out)


# -- disk full ------------------------------------------------------------------------------------------
class FullDisk:
    """Makes the store's n-th ``os.write`` (or ``os.fsync``) fail with ENOSPC after writing part of its data."""

    def __init__(self, monkeypatch, fail_at: int, call: str = "write", truncate_fails: bool = False) -> None:
        self.calls, self.fail_at, self.call = 0, fail_at, call
        real_write, real_fsync, real_truncate = os.write, os.fsync, os.ftruncate

        def write(fd: int, data) -> int:
            if self.call == "write" and self._count():
                real_write(fd, bytes(data[: max(1, len(data) // 2)]))  # half a batch reaches the disk
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, data)

        def fsync(fd: int) -> None:
            if self.call == "fsync" and self._count():
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_fsync(fd)

        def ftruncate(fd: int, size: int) -> None:
            if truncate_fails:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real_truncate(fd, size)

        monkeypatch.setattr(store_module.os, "write", write)
        monkeypatch.setattr(store_module.os, "fsync", fsync)
        monkeypatch.setattr(store_module.os, "ftruncate", ftruncate)

    def _count(self) -> bool:
        self.calls += 1
        return self.calls == self.fail_at


@pytest.mark.parametrize("call, fail_at, truncate_fails", [
    ("write", 3, False),   # in the clean pass of the undefended model
    ("write", 9, False),   # among the attacks
    ("fsync", 6, False),   # the data reached the page cache, but could not be made durable
    ("write", 7, True),    # even cutting back fails: the next run repairs the torn line
])
def test_disk_full_while_writing_records(capsys, monkeypatch, tmp_path: Path, reference, call: str, fail_at: int,
                                         truncate_fails: bool) -> None:
    from gradconceal.evaluation.api import evaluate

    out = tmp_path / "out"
    spec = write_spec(tmp_path, FAULT_SPEC)
    with monkeypatch.context() as patch:
        full = FullDisk(patch, fail_at, call, truncate_fails)
        code, err = cli(capsys, "evaluate", str(spec), "--out", str(out))
    assert full.calls >= fail_at
    assert code == 1
    one_error_line(err, f"cannot write records to {out / 'records.jsonl'}: [Errno 28] No space left on device",
                   "finished records are kept, rerun to resume")
    kept = check_records_file(out / "records.jsonl", torn_tail_allowed=truncate_fails)
    assert 0 < len(kept) < TOTAL_RECORDS
    assert not any((out / name).exists() for name in REPORT_FILES)
    FolderLock(out).acquire().release()  # the failed run let go of the folder
    resumed = evaluate(spec, out, quiet=True, plots=False)
    assert resumed.info["computed_records"] == TOTAL_RECORDS - len(kept)
    assert numbers(resumed) == reference[0]
    assert outcomes(out) == reference[1]
    assert len(check_records_file(out / "records.jsonl", torn_tail_allowed=False)) == TOTAL_RECORDS


def test_disk_full_while_writing_the_report_leaves_no_report_that_looks_complete(capsys, monkeypatch,
                                                                                  tmp_path: Path, reference) -> None:
    from gradconceal.evaluation import report as report_module
    from gradconceal.evaluation.api import evaluate

    small = {**FAULT_SPEC, "data": {"source": "fashion-mnist", "n": 4}}
    out = tmp_path / "out"
    evaluate(small, out, quiet=True, plots=False)  # a finished report of 4 images ...
    assert (out / "report.md").is_file()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    spec = write_spec(tmp_path, FAULT_SPEC)  # ... then 10 images into the same folder, and the disk fills up
    with monkeypatch.context() as patch:
        patch.setattr(report_module, "write_atomic", no_space)  # the report's writes fail, nothing else's
        code, err = cli(capsys, "evaluate", str(spec), "--out", str(out))
    assert code == 1
    one_error_line(err, f"cannot write the report into {out}: [Errno 28] No space left on device",
                   "the records are kept, rerun the same command to write it")
    # the 4-image report is kept (nothing removed before a new one replaces it) but says it is stale
    assert (out / "report.md").read_text().startswith(STALE_BANNER)
    assert json.loads((out / "results.json").read_text())["status"] == "stale"
    assert not list(out.glob("*.tmp"))
    assert len(check_records_file(out / "records.jsonl", torn_tail_allowed=False)) == TOTAL_RECORDS
    again = evaluate(spec, out, quiet=True, plots=False)
    assert again.info["computed_records"] == 0 and numbers(again) == reference[0]
    assert "10 images of `fashion-mnist`" in (out / "report.md").read_text()


def test_a_torn_record_anywhere_in_the_last_line_is_cut_and_recomputed(tmp_path: Path, reference) -> None:
    """What a crash mid-write leaves on a file system that does not append atomically: part of a line."""
    from gradconceal.evaluation.api import evaluate

    out = tmp_path / "out"
    evaluate(FAULT_SPEC, out, quiet=True, plots=False)
    path = out / "records.jsonl"
    whole = path.read_bytes()
    lines = whole.split(b"\n")[:-1]
    rng = random.Random(7)
    for _ in range(3):
        keep = rng.randrange(len(lines) // 2, len(lines))
        head = b"".join(line + b"\n" for line in lines[:keep])
        path.write_bytes(head + lines[keep][: rng.randrange(1, len(lines[keep]))])
        resumed = evaluate(FAULT_SPEC, out, quiet=True, plots=False)
        assert resumed.info["computed_records"] == TOTAL_RECORDS - keep
        assert numbers(resumed) == reference[0] and outcomes(out) == reference[1]
        check_records_file(path, torn_tail_allowed=False)


# -- kill -9 of an evaluation ---------------------------------------------------------------------------
EVALUATE = [sys.executable, "-m", "gradconceal", "--quiet", "evaluate"]


@pytest.mark.slow
def test_kill_9_of_an_evaluation_at_random_moments_then_resume(tmp_path: Path, reference) -> None:
    from gradconceal.evaluation.api import evaluate

    out = tmp_path / "out"
    spec = write_spec(tmp_path, FAULT_SPEC)
    path = out / "records.jsonl"
    rng = random.Random(20220521)  # fixed, so that a failure can be replayed; the moments still vary widely
    kills = []
    for _ in range(3):
        before = line_count(path)
        target = before + rng.randint(1, max(1, (TOTAL_RECORDS - before) // 2))
        process = subprocess.Popen([*EVALUATE, str(spec), "--out", str(out)], env=ENV,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        reached = wait_for(lambda: line_count(path) >= target, process)
        time.sleep(rng.uniform(0.0, 0.2))  # mid-attack, mid-write or between batches
        process.send_signal(signal.SIGKILL)
        process.wait()
        if not reached and process.returncode == 0:
            break  # it finished before the moment came
        kept = check_records_file(path, torn_tail_allowed=True)
        assert len(kept) >= before, "records were lost"
        assert not any((out / name).exists() for name in REPORT_FILES)
        kills.append(len(kept))
    assert len(kills) >= 2 and kills[-1] < TOTAL_RECORDS, f"too few kills landed mid-run: {kills}"
    interrupted = len(RecordStore(out).load())
    resumed = evaluate(spec, out, quiet=True, plots=False)
    assert resumed.info["computed_records"] == TOTAL_RECORDS - interrupted
    assert numbers(resumed) == reference[0]
    assert outcomes(out) == reference[1]
    assert len(check_records_file(path, torn_tail_allowed=False)) == TOTAL_RECORDS
    assert (out / "report.md").is_file() and not list(out.glob("*.tmp"))


@pytest.mark.slow
def test_a_second_run_on_the_same_folder_refuses_instead_of_interleaving(capsys, tmp_path: Path, reference) -> None:
    out = tmp_path / "out"
    spec = write_spec(tmp_path, FAULT_SPEC)
    first = subprocess.Popen([*EVALUATE, str(spec), "--out", str(out)], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = out / LOCK_FILE
    try:
        assert wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid), first), \
            "the first run never took the folder"
        code, err = cli(capsys, "evaluate", str(spec), "--out", str(out))
        running = first.poll() is None
    finally:
        _, first_err = first.communicate(timeout=300)
    assert running, "the first run ended before the second one tried"
    assert code == 1
    one_error_line(err, f"output folder {out} is in use by another gradconceal run; wait for it or choose another --out")
    assert first.returncode == 0, first_err
    assert len(check_records_file(out / "records.jsonl", torn_tail_allowed=False)) == TOTAL_RECORDS
    assert outcomes(out) == reference[1]
    code, err = cli(capsys, "evaluate", str(spec), "--out", str(out))  # free again once the first run is done
    assert code == 0, err


# -- kill -9 of a training run --------------------------------------------------------------------------
TRAIN_ARGS = ["small:cnn", "--epochs", "5", "--train-limit", "256", "--test-limit", "64", "--batch-size", "32",
              "--threads", "1"]


def check_run_folder(folder: Path) -> int:
    """Whatever a kill left: last.json is whole and names loadable files; every finished file loads. Returns the epoch."""
    from safetensors.torch import load_file

    from gradconceal.models.checkpoint import read_checkpoint

    pointer_path = folder / "last.json"
    if not pointer_path.exists():
        return 0
    pointer = json.loads(pointer_path.read_text())
    read_checkpoint(folder / pointer["model"])
    load_file(str(folder / pointer["state"]))
    for path in folder.glob("*.safetensors"):
        load_file(str(path))  # a kill mid-save leaves at most a *.tmp file, never a torn checkpoint
    return int(pointer["epoch"])


@pytest.mark.slow
def test_kill_9_of_training_at_random_moments_then_resume(capsys, tmp_path: Path) -> None:
    from gradconceal.models.checkpoint import read_checkpoint

    straight = tmp_path / "straight"
    assert main(["--quiet", "train", *TRAIN_ARGS, "--out", str(straight)]) == 0
    capsys.readouterr()
    killed = tmp_path / "killed"
    rng = random.Random(2205)
    epochs = []
    for attempt in range(5):
        done = check_run_folder(killed)
        if done >= 4 or sum(epoch < 5 for epoch in epochs) >= 3:
            break
        target = rng.randint(done + 1, max(done + 1, 3))  # kill during the epoch after `target` epochs are saved, or while saving
        command = [sys.executable, "-m", "gradconceal", "--quiet", "train", *TRAIN_ARGS, "--out", str(killed)]
        process = subprocess.Popen(command + (["--resume"] if attempt else []), env=ENV,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: check_pointer_epoch(killed) >= target, process)
        time.sleep(rng.uniform(0.0, 0.05))  # epochs take well under a second on an idle machine
        process.send_signal(signal.SIGKILL)
        process.wait()
        epochs.append(check_run_folder(killed))
        assert epochs[-1] >= done, "a saved epoch was lost"
        if (killed / "model.safetensors").exists():
            break
    assert sum(epoch < 5 for epoch in epochs) >= 2, f"too few kills landed mid-run: {epochs}"
    assert main(["--quiet", "train", *TRAIN_ARGS, "--out", str(killed), "--resume"]) == 0
    a, _ = read_checkpoint(straight / "model.safetensors")
    b, meta = read_checkpoint(killed / "model.safetensors")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    reference = read_checkpoint(straight / "model.safetensors")[1]["extra"]["training"]["history"]
    assert [h["train_loss"] for h in meta["extra"]["training"]["history"]] == [h["train_loss"] for h in reference]


def check_pointer_epoch(folder: Path) -> int:
    try:
        return int(json.loads((folder / "last.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0
