"""The evaluation runner end to end: images/s on a small spec, its cost over the attacks alone, and resume.

*end to end*: ``gradconceal.evaluate`` on a small spec (the Fashion-MNIST CNN, vanilla and GCM, FGSM and
PGD-Linf-10) into a fresh folder: clean pass, attacks, per-sample records (fsynced per batch), metrics and
report (no plots, no audit). *attacks alone*: the same attacks on the same batches with the same
per-sample seeds, called directly. *resume*: the same spec run again into the finished folder, which
only reads and checks the records and rewrites the report. *record store*: appending records in batches
of the spec's batch size. Everything here is wall time (the runner waits on the disk).
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch

from gcbench.context import BenchContext, BenchError, child_env
from gcbench.results import Row
from gcbench.timing import median, paired_ratio

log = logging.getLogger(__name__)

NAME = "runner"
TITLE = "runner: end-to-end images/s, overhead over the attacks alone, resume bookkeeping"
ATTACKS: List[Dict[str, Any]] = [
    {"label": "FGSM", "attack": "fgsm", "norm": "linf", "eps": 8 / 255},
    {"label": "PGD-Linf-10", "attack": "pgd", "norm": "linf", "eps": 8 / 255, "steps": 10},
]
BATCH = 100


def small_spec(n: int, attacks: List[Dict[str, Any]] = ATTACKS, defenses: Sequence[str] = ("none", "gcm"),
               batch_size: int = BATCH) -> Dict[str, Any]:
    """The benchmark's spec: fmnist-cnn on the first ``n`` Fashion-MNIST test images, CPU, no audit/gallery."""
    return {"format_version": 1, "title": "gradconceal benchmark", "models": ["fmnist-cnn"], "defenses": list(defenses),
            "data": {"source": "fashion-mnist", "n": n}, "attacks": [dict(a) for a in attacks],
            "batch_size": batch_size, "device": "cpu", "seed": 0, "audit": False, "gallery": 0}


def evaluate_quietly(spec: Dict[str, Any], out_dir: Path) -> Any:
    """``evaluate`` without progress bars, plots or info logging."""
    from gradconceal.evaluation import evaluate

    logger = logging.getLogger("gradconceal.evaluation")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        return evaluate(spec, out_dir=out_dir, quiet=True, plots=False)
    finally:
        logger.setLevel(level)


def attacks_alone(ctx: BenchContext, n: int, attacks: List[Dict[str, Any]] = ATTACKS) -> None:
    """The spec's clean pass and attacks, called directly on the same batches and per-sample seeds."""
    from gradconceal.attacks import create_attack
    from gradconceal.defenses import DefendedModel, GradientConcealment
    from gradconceal.evaluation.spec import sample_seeds

    base = ctx.model("fmnist-cnn")
    images, labels = ctx.batch("fashion-mnist", n)
    for layers in ([], [GradientConcealment()]):
        model = DefendedModel(base, layers).eval()
        with torch.no_grad():
            for start in range(0, n, BATCH):
                model(images[start:start + BATCH]).argmax(1)
        for entry in attacks:
            settings = {k: v for k, v in entry.items() if k not in ("label", "attack")}
            attack = create_attack(entry["attack"], model, **settings)
            for start in range(0, n, BATCH):
                stop = min(n, start + BATCH)
                attack.perturb(images[start:stop], labels[start:stop], sample_seeds=sample_seeds(0, range(start, stop)))


def store_throughput(folder: Path, records: int) -> float:
    """Records per second that the record store appends (JSON lines, fsync per batch of ``BATCH``)."""
    import dataclasses

    from gradconceal.evaluation.records import AttackRecord
    from gradconceal.evaluation.store import RecordStore

    record = AttackRecord(model="fmnist-cnn", defense="gcm", attack="PGD-Linf-10", index=0, job="0" * 16, label=3,
                          clean_correct=True, status="attacked", adv_pred=5, correct=False, fooled=True, norm=0.031,
                          grad_evals=10, forward_evals=2, adv_pred_8bit=5, correct_8bit=False)
    started = time.perf_counter()
    with RecordStore(folder) as store:
        for start in range(0, records, BATCH):
            store.append([dataclasses.replace(record, index=i) for i in range(start, min(records, start + BATCH))])
    return records / (time.perf_counter() - started)


def run(ctx: BenchContext) -> List[Row]:
    """End-to-end and attacks-alone wall time (in turns), resume time, record-store throughput."""
    n = ctx.pick(100, 500)
    spec = small_spec(n)
    scratch = Path(tempfile.mkdtemp(prefix="gradconceal-bench-runner-"))
    attempt = {"count": 0}
    results: Dict[str, Any] = {}

    def end_to_end() -> None:
        attempt["count"] += 1
        folder = scratch / f"run{attempt['count']}"
        results["last"] = evaluate_quietly(spec, folder)
        results["folder"] = folder

    try:
        alone = lambda: attacks_alone(ctx, n)  # noqa: E731
        alone()  # warm-up: imports, first model load
        # both clocks from the same calls: CPU time (robust to other load) and wall time (includes disk waits)
        walls: Dict[str, List[float]] = {"end to end": [], "attacks alone": []}
        cpus: Dict[str, List[float]] = {"end to end": [], "attacks alone": []}
        for round_index in range(min(ctx.repeats, 3)):
            order = [("end to end", end_to_end), ("attacks alone", alone)]
            for name, fn in order if round_index % 2 == 0 else order[::-1]:
                wall_start, cpu_start = time.perf_counter(), time.process_time()
                fn()
                walls[name].append(time.perf_counter() - wall_start)
                cpus[name].append(time.process_time() - cpu_start)
        info = results["last"].info
        computed = int(info.get("computed_records", 0))
        resume_seconds = []
        for _ in range(ctx.repeats):
            started = time.perf_counter()
            evaluate_quietly(spec, results["folder"])
            resume_seconds.append(time.perf_counter() - started)
        store_rate = median([store_throughput(scratch / f"store{i}", ctx.pick(2000, 10000)) for i in range(3)])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    e2e = median(walls["end to end"])
    alone_wall = median(walls["attacks alone"])
    case = f"fmnist-cnn {n} images, vanilla+gcm, FGSM+PGD-Linf-10, batch {BATCH}"
    rows = [
        Row(NAME, case, "end to end: images/s (wall)", n / e2e, "img/s",
            note=f"{e2e:.1f} s for {n} images x 2 defences; {computed} records",
            detail={"wall": walls, "cpu": cpus}),
        Row(NAME, case, "end to end / attacks alone (wall)", paired_ratio(walls["end to end"], walls["attacks alone"]),
            "x", note=f"attacks alone {alone_wall:.1f} s"),
        Row(NAME, case, "end to end / attacks alone (CPU time)",
            paired_ratio(cpus["end to end"], cpus["attacks alone"]), "x"),
        Row(NAME, case, "resume of a finished run: records/s", computed / median(resume_seconds), "rec/s",
            note=f"{median(resume_seconds):.2f} s to read, check and re-report {computed} records",
            detail={"seconds": resume_seconds}),
        Row(NAME, "record store", f"append, fsync every {BATCH} records: records/s", store_rate, "rec/s",
            note=f"{1e6 / store_rate:.0f} us per record"),
    ]
    if not ctx.quick:
        try:
            rows.append(demo_row(2, ctx.threads))
        except Exception as error:  # noqa: BLE001 - the other runner numbers stand on their own
            log.exception("the demo command failed")
            rows.append(Row(NAME, "gradconceal demo, 2 photos", "end to end: images/s (wall)", "failed",
                            note=f"{type(error).__name__}: {error}"))
    return rows


def demo_row(photos: int, threads: int = 1) -> Row:
    """The demo as users run it (``gradconceal demo``, quick settings, audit included) on the first ``photos`` photos.

    The command runs in its own process (the benchmarks never import the CLI): wall and CPU time cover the
    whole command, startup, clean predictions, gradient facts and report included; its ``results.json``
    gives the share of ``evaluate`` and of the attacks. The child gets ``threads`` OpenMP threads.
    """
    scratch = Path(tempfile.mkdtemp(prefix="gradconceal-bench-demo-"))
    command = [sys.executable, "-m", "gradconceal", "--quiet", "demo", "--n", str(photos), "--device", "cpu",
               "--out", str(scratch / "demo")]
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall_start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False,
                              env=child_env(OMP_NUM_THREADS=str(threads)))
        wall = time.perf_counter() - wall_start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise BenchError(f"'{' '.join(command[1:])}' exited {done.returncode}: {done.stderr.strip()[-1500:]}")
        info = json.loads((scratch / "demo" / "results.json").read_text(encoding="utf-8"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    attack_seconds = float(info.get("attack_seconds", float("nan")))
    evaluate_seconds = float(info.get("runtime_s", float("nan")))
    return Row(NAME, f"gradconceal demo (lite0, vanilla+gcm, paper+adaptive presets, quick settings), {photos} photos",
               "end to end: images/s (wall)", photos / wall, "img/s",
               note=f"{wall:.0f} s wall, {cpu:.0f} s CPU for the whole command; evaluate {evaluate_seconds:.0f} s, "
                    f"attacks {attack_seconds:.0f} s of it",
               detail={"wall": wall, "cpu": cpu, "evaluate_seconds": evaluate_seconds,
                       "attack_seconds": attack_seconds})
