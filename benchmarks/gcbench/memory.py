"""Peak memory of PGD-Linf-10: ours vs torchattacks vs the bare loop, at the same model and batch.

On the CPU each side runs in its own process (peak RSS never falls within a process, so sides cannot
share one): the process loads the same libraries, model and batch, notes its resident memory, runs the
attack once and reports its peak RSS (VmHWM on Linux, ``resource.getrusage`` elsewhere). The attack's share is peak minus the
resident memory just before it. On a GPU the sides share one process and ``torch.cuda.max_memory_allocated``
is reset between them.

Run as ``PYTHONPATH=benchmarks python -m gcbench.memory --side ours --model lite0 --batch 8 --steps 10``
to measure one side; it prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from typing import Any, Callable, Dict, List, Optional

import torch

from gcbench.context import BenchContext, BenchError, child_env
from gcbench.results import Row

NAME = "memory"
TITLE = "peak memory of PGD-Linf-10: ours vs torchattacks vs the bare loop"
SIDES = ("bare", "ours", "torchattacks")
EPS = 8 / 255


def _status_mib(field: str) -> Optional[float]:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB; None where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 2 ** 10  # the value is in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _rss_mib() -> float:
    """Resident memory of this process now, in MiB."""
    value = _status_mib("VmRSS")
    return value if value is not None else _peak_rss_mib()


def _peak_rss_mib() -> float:
    """Peak resident memory of this process, in MiB.

    Linux: VmHWM, the high-water mark of this program's own address space. ``getrusage``'s ``ru_maxrss``
    is kept across fork and exec, so a child started by a large process would report its parent's
    peak; elsewhere ``ru_maxrss`` is all there is (KiB on Linux, bytes on macOS).
    """
    value = _status_mib("VmHWM")
    if value is not None:
        return value
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 2 ** 10


def attack_runner(side: str, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  steps: int) -> Callable[[], object]:
    """A callable that runs PGD-Linf (``steps`` steps, 8/255) on one side."""
    import torchattacks

    from gradconceal.attacks import PGD
    from gcbench.bare import bare_pgd

    alpha = 2.5 * EPS / steps
    if side == "ours":
        attack = PGD(model, norm="linf", eps=EPS, steps=steps, alpha=alpha, early_stop=False)
        return lambda: attack.perturb(images, labels)
    if side == "torchattacks":
        theirs = torchattacks.PGD(model, eps=EPS, alpha=alpha, steps=steps, random_start=True)
        return lambda: theirs(images, labels)
    if side == "bare":
        generator = torch.Generator(device=images.device).manual_seed(0)
        return lambda: bare_pgd(model, images, labels, norm="linf", eps=EPS, alpha=alpha, steps=steps,
                                generator=generator)
    raise ValueError(f"side must be one of {SIDES}, got {side!r}")


def measure_side(side: str, model_name: str, source: str, batch: int, steps: int, threads: int) -> Dict[str, Any]:
    """In this process: load everything, run one side once, return resident-before and peak RSS in MiB."""
    torch.set_num_threads(threads)
    import torchattacks  # noqa: F401  (every side loads the same libraries)

    import gradconceal.attacks  # noqa: F401

    ctx = BenchContext(quick=True, threads=threads)
    model = ctx.model(model_name)
    images, labels = ctx.predicted_batch(model_name, source, batch)  # every side attacks every sample
    run = attack_runner(side, model, images, labels, steps)
    before = _rss_mib()
    run()
    peak = _peak_rss_mib()
    return {"side": side, "rss_before_mib": before, "peak_rss_mib": peak, "attack_mib": peak - before}


def _subprocess_sides(model_name: str, source: str, batch: int, steps: int, threads: int) -> Dict[str, Dict[str, Any]]:
    """Every side in its own process, run at the same time (peak RSS is per process, so they do not mix)."""
    env = child_env(OMP_NUM_THREADS=str(threads))
    running = {}
    for side in SIDES:
        command = [sys.executable, "-m", "gcbench.memory", "--side", side, "--model", model_name,
                   "--source", source, "--batch", str(batch), "--steps", str(steps), "--threads", str(threads)]
        running[side] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    found: Dict[str, Dict[str, Any]] = {}
    failures = []
    for side, process in running.items():
        try:
            out, err = process.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if process.returncode != 0 or not lines:
            failures.append(f"{side} (exit {process.returncode}): {err[-1500:]}")
            continue
        found[side] = json.loads(lines[-1])
    if failures:
        raise BenchError("memory measurement failed: " + "; ".join(failures))
    return found


def _cuda_sides(ctx: BenchContext, model_name: str, source: str, batch: int, steps: int) -> Dict[str, Dict[str, Any]]:
    model = ctx.model(model_name)
    images, labels = ctx.predicted_batch(model_name, source, batch)  # every side attacks every sample
    found = {}
    for side in SIDES:
        run = attack_runner(side, model, images, labels, steps)
        torch.cuda.synchronize(ctx.device)
        torch.cuda.reset_peak_memory_stats(ctx.device)
        before = torch.cuda.memory_allocated(ctx.device) / 2 ** 20
        run()
        torch.cuda.synchronize(ctx.device)
        peak = torch.cuda.max_memory_allocated(ctx.device) / 2 ** 20
        found[side] = {"side": side, "rss_before_mib": before, "peak_rss_mib": peak, "attack_mib": peak - before}
    return found


def run(ctx: BenchContext) -> List[Row]:
    """Peak memory of each side: lite0 (batch 8, 10 steps; quick: batch 4, 3 steps), full mode also fmnist-cnn b256."""
    cases = [("lite0", "photos", ctx.pick(4, 8), ctx.pick(3, 10))]
    if not ctx.quick:
        cases.append(("fmnist-cnn", "fashion-mnist", 256, 10))
    rows: List[Row] = []
    for model_name, source, batch, steps in cases:
        if ctx.device.type == "cuda":
            found = _cuda_sides(ctx, model_name, source, batch, steps)
            what = "CUDA max_memory_allocated"
        else:
            found = _subprocess_sides(model_name, source, batch, steps, ctx.threads)
            what = "peak RSS"
        case = f"{model_name} b{batch} PGD-Linf-{steps}"
        for side in SIDES:
            rows.append(Row(NAME, case, f"{side}: attack memory ({what} - before)", found[side]["attack_mib"], "MiB",
                            note=f"{what} {found[side]['peak_rss_mib']:.0f} MiB", detail=found[side]))
        theirs = found["torchattacks"]["attack_mib"]
        rows.append(Row(NAME, case, "attack memory: ours / torchattacks",
                        found["ours"]["attack_mib"] / theirs if theirs > 0 else float("nan"), "x", ("<=", 1.0),
                        note="peak RSS is page-granular and includes allocator caching; differences under ~5 MiB "
                             "are noise" if what == "peak RSS" else ""))
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    """Measure one side in this process and print its numbers as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m gcbench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=SIDES, required=True)
    parser.add_argument("--model", default="lite0")
    parser.add_argument("--source", default="photos")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(measure_side(args.side, args.model, args.source, args.batch, args.steps, args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
