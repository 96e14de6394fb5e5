"""How the runner's cost grows with images (100, 1,000, 10,000) and with processes (1 vs 2 under torchrun).

Images: ``evaluate`` in this process on the Fashion-MNIST CNN (vanilla, FGSM), a fresh folder per size;
a straight-line fit ``wall = fixed + per_image * n`` separates set-up cost from per-image cost, and
efficiency is each size's images/s over the largest size's. Processes: ``torchrun --standalone
--nproc_per_node P -m gradconceal evaluate`` on the same spec, one torch thread per process, timed as a
whole command (interpreter start and imports included) and by the run time the report records;
efficiency is speed-up / P. On a machine shared with other work, two processes do not get two cores.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from gcbench.context import BenchContext, BenchError
from gcbench.results import Row
from gcbench.runner import evaluate_quietly, small_spec

log = logging.getLogger(__name__)

NAME = "scaling"
TITLE = "runner scaling: wall time vs images (100 to 10,000) and vs processes (1, 2 under torchrun)"
ATTACKS = [{"label": "FGSM", "attack": "fgsm", "norm": "linf", "eps": 8 / 255}]
BATCH = 200


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> Tuple[float, float]:
    """Least-squares ``y = intercept + slope * x``; returns (intercept, slope)."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(f"linear_fit needs two or more (x, y) pairs, got {len(xs)} and {len(ys)}")
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        raise ValueError("linear_fit needs at least two different x values")
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread
    return mean_y - slope * mean_x, slope


def _images_scaling(ctx: BenchContext, sizes: Sequence[int], scratch: Path) -> Dict[int, float]:
    evaluate_quietly(small_spec(10, ATTACKS, ["none"], BATCH), scratch / "warm-up")  # imports, first model load
    walls: Dict[int, float] = {}
    for n in sizes:
        folder = scratch / f"images-{n}"
        started = time.perf_counter()
        evaluate_quietly(small_spec(n, ATTACKS, ["none"], BATCH), folder)
        walls[n] = time.perf_counter() - started
        shutil.rmtree(folder, ignore_errors=True)
        log.info("scaling: %d images in %.1f s", n, walls[n])
    return walls


def torchrun_command(processes: int, spec_path: Path, out_dir: Path) -> List[str]:
    """The torchrun command line that evaluates ``spec_path`` on ``processes`` CPU processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "gradconceal", "--quiet", "evaluate", str(spec_path), "--out", str(out_dir)]


def _processes_scaling(n: int, counts: Sequence[int], scratch: Path) -> Dict[int, Dict[str, float]]:
    spec_path = scratch / "spec.json"
    spec_path.write_text(json.dumps(small_spec(n, ATTACKS, ["none"], BATCH)), encoding="utf-8")
    found: Dict[int, Dict[str, float]] = {}
    for processes in counts:
        out_dir = scratch / f"procs-{processes}"
        env = dict(os.environ, OMP_NUM_THREADS="1")
        started = time.perf_counter()
        done = subprocess.run(torchrun_command(processes, spec_path, out_dir), capture_output=True, text=True,
                              env=env, timeout=1800, check=False)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise BenchError(f"torchrun with {processes} process(es) failed (exit {done.returncode}): "
                               f"{done.stderr[-2000:]}")
        info = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
        found[processes] = {"wall": wall, "runtime": float(info.get("runtime_s", float("nan"))),
                            "attack_seconds": float(info.get("attack_seconds", float("nan")))}
        shutil.rmtree(out_dir, ignore_errors=True)
        log.info("scaling: %d process(es), %d images: %.1f s (run time %.1f s)", processes, n, wall,
                 found[processes]["runtime"])
    return found


def plot_scaling(walls: Dict[int, float], processes: Dict[int, Dict[str, float]], path: Path,
                 title: str = "") -> Optional[Path]:
    """Two panels: wall time vs images (log-log, with ideal linear growth) and wall time vs processes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    sizes = sorted(walls)
    left.loglog(sizes, [walls[n] for n in sizes], "o-", label="measured")
    if sizes:
        per_image = walls[sizes[-1]] / sizes[-1]
        left.loglog(sizes, [per_image * n for n in sizes], "--", color="grey", label="linear in images")
    left.set_xlabel("images")
    left.set_ylabel("wall time (s)")
    left.set_title("runner wall time vs images")
    left.grid(True, which="both", alpha=0.3)
    left.legend()
    counts = sorted(processes)
    if counts:
        one = processes[counts[0]]
        right.plot(counts, [processes[p]["wall"] for p in counts], "o-", label="command (incl. start-up)")
        right.plot(counts, [processes[p]["runtime"] for p in counts], "s-", label="evaluate run time")
        right.plot(counts, [one["runtime"] * counts[0] / p for p in counts], "--", color="grey", label="ideal")
        right.set_xticks(counts)
    right.set_xlabel("processes (torchrun, 1 thread each)")
    right.set_ylabel("wall time (s)")
    right.set_title("runner wall time vs processes")
    right.grid(True, alpha=0.3)
    right.legend()
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def run(ctx: BenchContext) -> List[Row]:
    """Wall time for each image count and for 1 and 2 processes; the plot goes to the output folder."""
    sizes = ctx.pick([100, 1000], [100, 1000, 10000])
    process_images = ctx.pick(500, 4000)
    scratch = Path(tempfile.mkdtemp(prefix="gradconceal-bench-scaling-"))
    try:
        walls = _images_scaling(ctx, sizes, scratch)
        processes = _processes_scaling(process_images, [1, 2], scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    fixed, slope = linear_fit([float(n) for n in sizes], [walls[n] for n in sizes])
    largest = max(sizes)
    rows: List[Row] = []
    for n in sizes:
        rate = n / walls[n]
        rows.append(Row(NAME, f"fmnist-cnn vanilla FGSM, {n:,} images", "images/s (wall, in-process evaluate)", rate,
                        "img/s", note=f"{walls[n]:.1f} s; efficiency vs {largest:,} images "
                                      f"{rate / (largest / walls[largest]):.0%}", detail={"wall": walls[n]}))
    rows.append(Row(NAME, "fmnist-cnn vanilla FGSM, fit over image counts", "set-up cost / per-image cost",
                    f"{fixed:.2f} s / {slope * 1e3:.2f} ms", note="wall = set-up + per-image x images (least squares)"))
    one = processes[1]
    for count, found in processes.items():
        speedup = one["wall"] / found["wall"]
        run_speedup = one["runtime"] / found["runtime"]
        rows.append(Row(NAME, f"fmnist-cnn vanilla FGSM, {process_images:,} images, {count} process(es)",
                        "speed-up / efficiency (whole command)", f"{speedup:.2f}x / {speedup / count:.0%}",
                        note=f"command {found['wall']:.1f} s; evaluate run time {found['runtime']:.1f} s "
                             f"(speed-up {run_speedup:.2f}x, efficiency {run_speedup / count:.0%})",
                        detail=found))
    if ctx.out_dir is not None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        path = plot_scaling(walls, processes, ctx.subdir(".") / "scaling.png",
                            title=f"gradconceal benchmark: scaling ({'quick' if ctx.quick else 'full'}); "
                                  f"{os.cpu_count()}-core CPU, 1 thread per process, load {load:.1f}")
        if path is not None:
            rows[-1].note += f"; plot: {path.name}"
    return rows
