"""The GPU check: the gpu-marked tests, PGD-10 images/s in fp32 / bf16 / bf16 + compile, and a 2-GPU run.

    bash benchmarks/gpu_check.sh                       # on a CUDA machine: 3 minutes on an H200 (180 s)
    bash benchmarks/gpu_check.sh --json gpu-check.json # the same, plus every number as JSON
    bash benchmarks/gpu_check.sh --cpu-smoke           # no GPU: the CPU-safe parts at tiny size (~1 min of CPU)

Step 1 runs ``pytest -m gpu`` in a child process beside step 2's first warm-ups (``BackgroundTests``);
step 2 waits for it before its first timed round. Step 2 times PGD-Linf-10 (8/255) on lite0 (shipped
weights) and timm ResNet-50 (random weights: speed does not depend on them) at batch 256, 224 px, in
float32, under bf16 autocast and under bf16 autocast with ``torch.compile``: ours (early stop off), torchattacks and the bare loop of
``gcbench.bare``, all nine contenders of a model timed in turns in one process (``gcbench.timing``), with
each one's peak CUDA memory. Beside ResNet-50's rows it prints the H100 anchors as ratios. Step 3, where
two or more GPUs exist, evaluates one spec in one process and under ``torchrun`` with two processes (NCCL)
and checks that the numbers and every record's outcome are the same.

Without CUDA it refuses to run (exit 2) unless ``--cpu-smoke`` is given; then it runs step 2 on the CPU at
tiny size (16 px, batch 1, one PGD step, one round; compile with the ``eager`` backend: the graph capture
without code generation), checks step 3's spec without running it, says which steps were not run, and
exits 0 when what ran passed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, cast

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:  # the gcbench package lives beside this file
    sys.path.insert(0, str(HERE))

log = logging.getLogger("gpu_check")

MODELS = ("lite0", "timm:resnet50")
VARIANTS = ("fp32", "bf16", "bf16 + compile")
SIDES = ("ours", "torchattacks", "bare")
# Every side that --sides can add (flag name: contender), beside the default three: ours as the runner calls it
# (the clean logits it already has are passed in, so the attack skips its own clean forward) and torchattacks
# with the two forwards a user adds to score its output (clean and adversarial correctness, as ours returns).
SIDE_FLAGS: Dict[str, str] = {
    "ours": "ours",
    "ours-clean-given": "ours, clean logits given",
    "torchattacks": "torchattacks",
    "torchattacks-scored": "torchattacks + scoring",
    "bare": "bare",
}
VARIANT_FLAGS: Dict[str, str] = {"fp32": "fp32", "bf16": "bf16", "bf16+compile": "bf16 + compile"}
# Bare-loop and torchattacks PGD-10 images/s of ResNet-50 on an H100, batch 256, 224 px: compare ratios, not speed.
ANCHORS: Dict[Tuple[str, str, str], float] = {
    ("timm:resnet50", "fp32", "bare"): 281.0,
    ("timm:resnet50", "bf16", "bare"): 414.0,
    ("timm:resnet50", "bf16 + compile", "bare"): 833.0,
    ("timm:resnet50", "fp32", "torchattacks"): 283.0,
}
STEP_TESTS = "step 1 (pytest -m gpu)"
STEP_THROUGHPUT = "step 2 (PGD-10 images/s and peak memory)"
STEP_DISTRIBUTED = "step 3 (2-process NCCL evaluation equal to 1 process)"
PASSED, FAILED, NOT_RUN = "passed", "failed", "not run"

# Step 3's spec: random starts, EOT draws, Square's proposals and a random defence, all seeded per image, so
# the records must not depend on the process an image lands in.
DISTRIBUTED_SPEC: Dict[str, Any] = {
    "models": ["lite0"],
    "defenses": ["none", "challenge"],
    "data": {"source": "photos", "n": 9},
    "attacks": [
        {"label": "PGD", "attack": "pgd", "norm": "linf", "eps": "4/255", "steps": 5, "alpha": "1/255"},
        {"label": "BPDA+EOT PGD", "attack": "pgd", "view": "bpda+eot", "eot_samples": 2, "norm": "linf",
         "eps": "4/255", "steps": 3, "alpha": "2/255"},
        {"label": "Square", "attack": "square", "norm": "linf", "eps": "4/255", "n_queries": 50},
    ],
    "batch_size": 4,
    "device": "cuda",
    "seed": 2,
    "audit": False,
    "gallery": 0,
}


@dataclass
class Step:
    """One step of the check: its status (passed, failed, not run), wall seconds and what it found."""

    name: str
    status: str
    seconds: float = 0.0
    detail: str = ""


@dataclass
class ThroughputRow:
    """PGD-10 on one model, variant and side: images/s, peak CUDA memory and the ratios the anchors have."""

    model: str
    variant: str
    side: str
    images_per_s: float
    peak_mib: Optional[float]  # None on the CPU (peak RSS never falls within a process, so sides cannot share one)
    time_vs_bare: float  # seconds of this side / seconds of the bare loop, same variant (paired rounds)
    speedup_vs_fp32: float  # seconds in fp32 / seconds in this variant, same side (paired rounds)
    anchor_images_per_s: Optional[float] = None
    anchor_time_vs_bare: Optional[float] = None
    anchor_speedup_vs_fp32: Optional[float] = None
    note: str = ""


@dataclass
class Settings:
    """Sizes of step 2 and where it runs."""

    device: str
    batch: int
    size: int
    repeats: int
    compile_backend: str
    steps: int = 10
    models: Sequence[str] = field(default_factory=lambda: list(MODELS))
    variants: Sequence[str] = field(default_factory=lambda: list(VARIANTS))
    sides: Sequence[str] = field(default_factory=lambda: list(SIDES))  # the bare loop always among them


# ----------------------------------------------------------------------------------------------- step 1
# Three pytest workers share the one device: the gpu tests are independent (each writes to its own tmp_path).
TEST_COMMAND = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-n", "3", "-p", "no:cacheprovider",
                str(ROOT / "tests")]


class BackgroundTests:
    """Step 1 in a child process started at once, so that it overlaps step 2's first warm-ups.

    ``finish()`` waits for it (idempotent) and returns its ``Step``: passed when pytest exits 0, failed when
    it fails, collects nothing (exit 5) or outlives ``timeout`` seconds; the detail is pytest's summary line
    (its whole output's tail when it failed). Step 2 calls ``finish()`` before its first timed round, so the
    timed rounds never share the device with the tests; only warm-ups (compilation, mostly CPU) do.
    """

    def __init__(self, command: Sequence[str] = TEST_COMMAND, timeout: float = 600.0) -> None:
        self.started = time.perf_counter()
        self.timeout = timeout
        self._output = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # a pipe could fill and block pytest
        self._process = subprocess.Popen(list(command), cwd=ROOT, stdout=self._output, stderr=subprocess.STDOUT,
                                         text=True)
        self._step: Optional[Step] = None

    def finish(self) -> Step:
        """Wait for the tests (at most ``timeout`` s after their start) and return step 1's result."""
        if self._step is not None:
            return self._step
        left = max(self.timeout - (time.perf_counter() - self.started), 0.0)
        try:
            code: Optional[int] = self._process.wait(timeout=left)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
            code = None
        seconds = time.perf_counter() - self.started
        self._output.seek(0)
        output = self._output.read().strip()
        self._output.close()
        lines = [line for line in output.splitlines() if line.strip()]
        summary = lines[-1] if lines else "(no output)"
        if code is None:
            self._step = Step(STEP_TESTS, FAILED, seconds, f"still running after {self.timeout:.0f} s: {output[-3000:]}")
        elif code == 5:  # pytest: no tests collected
            self._step = Step(STEP_TESTS, FAILED, seconds, f"no gpu-marked tests collected: {summary}")
        elif code != 0:
            self._step = Step(STEP_TESTS, FAILED, seconds, output[-3000:])
        else:
            self._step = Step(STEP_TESTS, PASSED, seconds, summary)
        log.info("%s: %s in %.0f s", STEP_TESTS, self._step.status, seconds)
        return self._step


# ----------------------------------------------------------------------------------------------- step 2
def load_frozen(name: str, device: Any, size: int) -> Any:
    """Zoo model ``name`` on ``device`` for ``size`` px, eval mode, parameters frozen; timm with random weights."""
    from gradconceal.models.zoo import load_model

    model = load_model(name, pretrained=not name.startswith("timm:")).eval().to(device)
    model.input_size = (model.input_size[0], size, size)  # both nets pool globally; attacks check this size
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def photo_batch(settings: Settings) -> Any:
    """``settings.batch`` sample photos (repeated) at ``settings.size`` px on the check's device."""
    import torch
    import torch.nn.functional as F

    from gcbench.context import BenchContext

    images, _ = BenchContext(device=torch.device(settings.device)).batch("photos", settings.batch)
    if images.shape[-1] != settings.size or images.shape[-2] != settings.size:
        images = F.interpolate(images, size=(settings.size, settings.size), mode="bilinear", antialias=True,
                               align_corners=False).clamp(0.0, 1.0)
    return images


def _with_peak(fn: Callable[[], object], device: Any, peaks: Dict[str, float], key: str) -> Callable[[], object]:
    """``fn`` that also keeps the largest CUDA memory peak of its calls in ``peaks[key]`` (nothing on the CPU)."""
    import torch

    def call() -> object:
        if device.type != "cuda":
            return fn()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        peaks[key] = max(peaks.get(key, 0.0), torch.cuda.max_memory_allocated(device) / 2 ** 20)
        return result

    return call


def _in_autocast(fn: Callable[[], object], device: Any, variant: str) -> Callable[[], object]:
    from gcbench.gpu import autocast

    def call() -> object:
        with autocast(device, "bf16" if variant.startswith("bf16") else "fp32"):
            return fn()

    return call


def model_throughput(name: str, settings: Settings,
                     before_timing: Callable[[], object] = lambda: None) -> List[ThroughputRow]:
    """Every variant and side of PGD-Linf on one model, timed in turns (warm-up first); one row each.

    ``before_timing`` is called between the warm-ups and the first timed round (step 1's wait).
    """
    import torch
    from torch import nn

    from gcbench.attacks import AttackCase, contenders
    from gcbench.timing import default_clock, interleaved

    device = torch.device(settings.device)
    model = load_frozen(name, device, settings.size)
    images = photo_batch(settings)
    with torch.no_grad():
        labels = model(images).argmax(1)  # every side attacks every sample (see gcbench.attacks)
    case = AttackCase(f"PGD-Linf-{settings.steps}", "pgd", "linf", 8 / 255, settings.steps)
    compiled = cast(nn.Module, torch.compile(model, backend=settings.compile_backend))  # an OptimizedModule
    calls: Dict[str, Callable[[], object]] = {}
    peaks: Dict[str, float] = {}
    failures: Dict[str, str] = {}
    for variant in settings.variants:
        sides = contenders(compiled if "compile" in variant else model, images, labels, case)
        for side in settings.sides:
            key = f"{variant} | {side}"
            call = _with_peak(_in_autocast(sides[side], device, variant), device, peaks, key)
            started = time.perf_counter()
            try:
                call()  # warm-up; compiles the compiled variant
            except (RuntimeError, torch.cuda.OutOfMemoryError) as error:
                failures[key] = f"{type(error).__name__}: {str(error)[:300]}"
                continue
            log.info("  %s %s: warm-up %.1f s", name, key, time.perf_counter() - started)
            calls[key] = call
    before_timing()
    peaks.clear()  # the warm-up's peak includes compilation; keep the timed rounds' peaks
    clock = default_clock(device, torch.get_num_threads())
    times = interleaved(calls, settings.repeats, warmup=0, device=device, clock=clock)
    return rows_from_times(name, settings.batch, times, peaks, failures, settings.variants, settings.sides)


def rows_from_times(name: str, batch: int, times: Dict[str, List[float]], peaks: Dict[str, float],
                    failures: Dict[str, str], variants: Sequence[str] = VARIANTS,
                    sides: Sequence[str] = SIDES) -> List[ThroughputRow]:
    """One row per variant and side from the seconds of each ``'variant | side'``, with the anchors' ratios."""
    from gcbench.timing import median, paired_ratio

    rows: List[ThroughputRow] = []
    for variant in variants:
        for side in sides:
            key = f"{variant} | {side}"
            if key not in times:
                rows.append(ThroughputRow(name, variant, side, math.nan, None, math.nan, math.nan,
                                          note=failures.get(key, "not timed")))
                continue
            seconds = times[key]
            bare, fp32 = times.get(f"{variant} | bare"), times.get(f"fp32 | {side}")
            anchor = ANCHORS.get((name, variant, side))
            anchor_bare, anchor_fp32 = ANCHORS.get((name, variant, "bare")), ANCHORS.get((name, "fp32", side))
            rows.append(ThroughputRow(
                name, variant, side, batch / median(seconds), peaks.get(key),
                paired_ratio(seconds, bare) if bare else math.nan,
                paired_ratio(fp32, seconds) if fp32 else math.nan,
                anchor,
                anchor_bare / anchor if anchor and anchor_bare else None,
                anchor / anchor_fp32 if anchor and anchor_fp32 else None,
            ))
    return rows


def run_throughput(settings: Settings,
                   before_timing: Callable[[], object] = lambda: None) -> Tuple[Step, List[ThroughputRow]]:
    """Step 2 on every model of ``settings``; failed when a contender failed or gave no finite speed.

    ``before_timing`` is called before each model's timed rounds (it must be cheap to call again).
    """
    started = time.perf_counter()
    rows: List[ThroughputRow] = []
    for name in settings.models:
        log.info("step 2: %s", name)
        try:
            rows += model_throughput(name, settings, before_timing)
        except Exception as error:  # noqa: BLE001 -- reported as this model's rows and a failed step; step 3 still runs
            log.exception("step 2 failed on %s", name)
            rows += rows_from_times(name, settings.batch, {}, {}, {
                f"{variant} | {side}": f"{type(error).__name__}: {str(error)[:300]}"
                for variant in settings.variants for side in settings.sides}, settings.variants, settings.sides)
    bad = [f"{r.model} {r.variant} {r.side}" for r in rows
           if not (math.isfinite(r.images_per_s) and r.images_per_s > 0)]
    detail = (f"batch {settings.batch}, {settings.size} px, {settings.repeats} timed round(s), device "
              f"{settings.device}, compile backend {settings.compile_backend}")
    if bad:
        detail += "; no speed for: " + ", ".join(bad)
    return Step(STEP_THROUGHPUT, FAILED if bad else PASSED, time.perf_counter() - started, detail), rows


def _number(value: Optional[float], digits: int, suffix: str = "") -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.{digits}f}{suffix}"


TABLE_COLUMNS = ("model", "variant", "side", "img/s", "peak MiB", "time / bare", "speed-up over fp32",
                 "H100 anchor img/s", "anchor time / bare", "anchor speed-up over fp32")


def throughput_table(rows: Sequence[ThroughputRow]) -> str:
    """Step 2's rows as a Markdown table (columns: TABLE_COLUMNS)."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for r in rows:
        cells = [r.model, r.variant, r.side, _number(r.images_per_s, 1), _number(r.peak_mib, 0),
                 _number(r.time_vs_bare, 3, "x"), _number(r.speedup_vs_fp32, 2, "x"),
                 _number(r.anchor_images_per_s, 0), _number(r.anchor_time_vs_bare, 3, "x"),
                 _number(r.anchor_speedup_vs_fp32, 2, "x")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- step 3
def check_distributed_spec() -> None:
    """Validate step 3's spec (names, budgets, attack settings) without running it: a CPU-safe part."""
    from gradconceal.evaluation.spec import load_spec

    load_spec(DISTRIBUTED_SPEC)


def _outcomes(out_dir: Path) -> Dict[Any, Tuple[Any, Any, Any]]:
    from gradconceal.evaluation.store import RecordStore

    records = RecordStore(out_dir).load()
    found = {key: record.to_dict() for key, record in records.items()}
    return {key: (r.get("correct"), r.get("pred"), r.get("adv_pred")) for key, r in found.items()}


def run_distributed(work_dir: Path) -> Step:
    """Step 3: the spec in this process and under torchrun with 2 processes; equal numbers and outcomes."""
    from gradconceal.evaluation.api import evaluate
    from gradconceal.evaluation.results import numbers

    started = time.perf_counter()
    single = evaluate(DISTRIBUTED_SPEC, work_dir / "single", quiet=True, plots=False)
    spec_file = work_dir / "spec.json"
    spec_file.write_text(json.dumps(DISTRIBUTED_SPEC), encoding="utf-8")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "gradconceal", "--quiet", "evaluate", str(spec_file), "--out", str(work_dir / "two")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return Step(STEP_DISTRIBUTED, FAILED, seconds, f"torchrun exit {done.returncode}: {done.stderr[-2000:]}")
    two = json.loads((work_dir / "two" / "results.json").read_text(encoding="utf-8"))
    same_numbers = numbers(two["rows"]) == numbers(single.to_dict()["rows"])
    one_outcomes, two_outcomes = _outcomes(work_dir / "single"), _outcomes(work_dir / "two")
    differing = sum(one_outcomes.get(key) != value for key, value in two_outcomes.items())
    differing += len(set(one_outcomes) ^ set(two_outcomes))
    ok = two.get("world_size") == 2 and same_numbers and differing == 0
    detail = (f"world size {two.get('world_size')}, {len(two_outcomes)} records; numbers "
              f"{'equal' if same_numbers else 'DIFFER'}; records with another outcome: {differing}")
    return Step(STEP_DISTRIBUTED, PASSED if ok else FAILED, seconds, detail)


# ----------------------------------------------------------------------------------------------- main
def not_run_message(steps: Sequence[Step], reason: str) -> str:
    """One plain line naming every step that was not run and why."""
    names = [f"{s.name}: {s.detail}" for s in steps if s.status == NOT_RUN]
    return f"{reason}. Not run: " + "; ".join(names) + "." if names else ""


def _chosen_sides(flags: Optional[Sequence[str]]) -> List[str]:
    """The contenders named by ``--sides`` in SIDE_FLAGS' order, the bare loop always last; default: SIDES."""
    if not flags:
        return list(SIDES)
    return [SIDE_FLAGS[f] for f in SIDE_FLAGS if f in flags and f != "bare"] + ["bare"]


def main(argv: Optional[List[str]] = None) -> int:
    """Parse the flags, run the steps, print the table and each step's time; 0 when every step run passed."""
    parser = argparse.ArgumentParser(prog="bash benchmarks/gpu_check.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="run the CPU-safe parts at tiny size on the CPU (no GPU needed; numbers mean nothing)")
    parser.add_argument("--batch", type=int, help="step 2 batch (default 256; --cpu-smoke: 1)")
    parser.add_argument("--size", type=int, help="step 2 image side in px (default 224; --cpu-smoke: 16)")
    parser.add_argument("--repeats", type=int, help="step 2 timed rounds (default 3; --cpu-smoke: 1)")
    parser.add_argument("--steps", type=int, help="PGD steps (default 10, as the anchors; --cpu-smoke: 1)")
    parser.add_argument("--compile-backend", help="torch.compile backend (default inductor; --cpu-smoke: eager)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), metavar="NAME",
                        help=f"step 2 models (default: {' '.join(MODELS)})")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANT_FLAGS), metavar="VARIANT",
                        help=f"step 2 variants (default: all; choices: {' '.join(VARIANT_FLAGS)})")
    parser.add_argument("--sides", nargs="+", choices=list(SIDE_FLAGS), metavar="SIDE",
                        help="step 2 contenders; the bare loop is always timed (default: ours torchattacks bare; "
                             f"choices: {' '.join(SIDE_FLAGS)})")
    parser.add_argument("--skip-tests", action="store_true", help="do not run step 1 (pytest -m gpu)")
    parser.add_argument("--json", metavar="PATH", help="also write the steps and rows as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for flag in ("batch", "size", "repeats", "steps"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag} must be >= 1, got {value}")

    import torch

    has_cuda = torch.cuda.is_available()
    if not has_cuda and not args.cpu_smoke:
        print("error: no GPU found (torch.cuda.is_available() is False): the GPU check needs a CUDA device. "
              "Run `bash benchmarks/gpu_check.sh --cpu-smoke` to run only its CPU-safe parts at tiny size.",
              file=sys.stderr)
        return 2
    smoke = args.cpu_smoke
    settings = Settings(device="cpu" if smoke else "cuda", batch=args.batch or (1 if smoke else 256),
                        size=args.size or (16 if smoke else 224), repeats=args.repeats or (1 if smoke else 3),
                        compile_backend=args.compile_backend or ("eager" if smoke else "inductor"),
                        steps=args.steps or (1 if smoke else 10), models=args.models,
                        variants=[VARIANT_FLAGS[v] for v in args.variants] if args.variants else list(VARIANTS),
                        sides=_chosen_sides(args.sides))
    if smoke:
        torch.set_num_threads(1)
    started = time.perf_counter()
    steps: List[Step] = []

    tests: Optional[BackgroundTests] = None
    if smoke:
        steps.append(Step(STEP_TESTS, NOT_RUN, detail="needs a CUDA device"))
    elif args.skip_tests:
        steps.append(Step(STEP_TESTS, NOT_RUN, detail="--skip-tests"))
    else:
        log.info("%s: started beside step 2's first warm-ups; step 2 times nothing until it ends", STEP_TESTS)
        tests = BackgroundTests()

    log.info("%s ...", STEP_THROUGHPUT)
    step, rows = run_throughput(settings, tests.finish if tests is not None else lambda: None)
    if tests is not None:
        steps.insert(0, tests.finish())  # already finished unless step 2 failed before its first timed round
    steps.append(step)
    log.info("%s: %s in %.0f s", STEP_THROUGHPUT, step.status, step.seconds)

    check_distributed_spec()
    gpus = 0 if smoke else torch.cuda.device_count()
    if gpus < 2:
        steps.append(Step(STEP_DISTRIBUTED, NOT_RUN,
                          detail="needs 2 CUDA devices" + ("" if smoke else f", found {gpus}")))
    else:
        log.info("%s ...", STEP_DISTRIBUTED)
        with tempfile.TemporaryDirectory(prefix="gradconceal-gpu-check-") as work_dir:
            steps.append(run_distributed(Path(work_dir)))
        log.info("%s: %s in %.0f s", STEP_DISTRIBUTED, steps[-1].status, steps[-1].seconds)
    total = time.perf_counter() - started

    device_name = torch.cuda.get_device_name(0) if not smoke else "CPU, 1 torch thread"
    print(f"\nPGD-Linf-{settings.steps} (8/255) images/s on {device_name}, {step.detail}")
    print("time / bare: seconds of the side / seconds of the bare loop in the same variant; speed-up over fp32: "
          "seconds in fp32 / seconds in this variant, same side (both medians of rounds timed in turns). "
          "H100 anchors: batch 256, 224 px; compare ratios, not absolute speed.\n")
    print(throughput_table(rows))
    for r in rows:
        if r.note:
            print(f"{r.model} {r.variant} {r.side}: {r.note}")
    print()
    for s in steps:
        timing = f" in {s.seconds:.0f} s" if s.status != NOT_RUN else ""
        print(f"{s.name}: {s.status}{timing}" + (f" ({s.detail})" if s.detail and s.name != STEP_THROUGHPUT else ""))
    print(f"total: {total:.0f} s")
    if not has_cuda:
        reason = "no GPU found (torch.cuda.is_available() is False)"
    else:
        reason = "--cpu-smoke: the GPU is not used" if smoke else f"{gpus} CUDA device found"
    message = not_run_message(steps, reason)
    if message:
        print(message)
    if smoke:
        print("The numbers above were measured on the CPU at tiny size: they check the plumbing, not GPU speed.")
    if args.json:
        payload = {"settings": asdict(settings), "device": device_name, "total_seconds": total,
                   "steps": [asdict(s) for s in steps], "rows": [asdict(r) for r in rows],
                   "not_run_message": message}
        Path(args.json).write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
    return 1 if any(s.status == FAILED for s in steps) else 0


if __name__ == "__main__":
    sys.exit(main())
