"""The benchmark suite: run the chosen measurements, print the ratio table, write bench.json and table.md.

Each measurement is a module of this package (``gcbench``) with ``NAME``, ``TITLE`` and ``run(ctx) -> list[Row]``.
``run_suite`` runs them in order in one process (except those that need their own processes), so every
ratio compares sides measured on the same model, data, batch and device, under the same load.
"""

from __future__ import annotations

import importlib
import json
import logging
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from gcbench.context import BenchContext, BenchError, describe, machine_description
from gcbench.results import Row, ratio_table, targets_summary
from gradconceal.errors import GradconcealError, suggest

log = logging.getLogger(__name__)

# name -> module, in the order the suite runs them
BENCHMARKS: Dict[str, str] = {
    "gcm": "gcbench.gcm",
    "attacks": "gcbench.attacks",
    "early-stop": "gcbench.early_stop",
    "square": "gcbench.square",
    "cw-apgd": "gcbench.cw_apgd",
    "memory": "gcbench.memory",
    "runner": "gcbench.runner",
    "scaling": "gcbench.scaling",
    "gpu": "gcbench.gpu",
}


@dataclass
class SuiteResult:
    """Everything one suite run produced: rows, seconds per measurement, the machine and the command."""

    rows: List[Row]
    seconds: Dict[str, float]
    machine: Dict[str, Any]
    command: str
    quick: bool
    out_dir: Optional[Path] = None
    errors: Dict[str, str] = field(default_factory=dict)

    def table(self) -> str:
        """The ratio table (Markdown)."""
        return ratio_table(self.rows)

    def summary(self) -> str:
        """Machine, command, targets met and time taken, as printed under the table."""
        met, checked, missed = targets_summary(self.rows)
        lines = [f"machine: {describe(self.machine)}",
                 f"date: {self.machine['date']}",
                 f"targets met: {met} of {checked}" + (f" (missed: {', '.join(f'{r.case} {r.measure}' for r in missed)})"
                                                      if missed else ""),
                 "time per measurement: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items())
                 + f"; total {sum(self.seconds.values()):.0f} s",
                 f"reproduce: {self.command}"]
        for name, error in self.errors.items():
            lines.append(f"error in {name}: {error}")
        return "\n".join(lines)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict of the whole run."""
        return {"machine": self.machine, "command": self.command, "quick": self.quick, "seconds": self.seconds,
                "errors": self.errors, "rows": [row.to_dict() for row in self.rows]}

    def write(self, out_dir: Path) -> None:
        """Write ``bench.json`` and ``table.md`` into ``out_dir``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "bench.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        (out_dir / "table.md").write_text(self.table() + "\n\n" + self.summary() + "\n", encoding="utf-8")


def check_names(names: Sequence[str]) -> List[str]:
    """The measurement names, validated (unknown names raise with a suggestion), in suite order."""
    for name in names:
        if name not in BENCHMARKS:
            raise GradconcealError(f"unknown benchmark {name!r}{suggest(name, list(BENCHMARKS))}; "
                                   f"choose from {', '.join(BENCHMARKS)}")
    chosen = set(names)
    return [name for name in BENCHMARKS if name in chosen]


def bench_command(*, quick: bool, only: Sequence[str], out: Optional[str], repeats: Optional[int], threads: int,
                  device: str) -> str:
    """The ``python benchmarks/run.py`` command line that reproduces a run."""
    parts = ["python", "benchmarks/run.py"]
    if quick:
        parts.append("--quick")
    if only:
        parts += ["--only", *only]
    if repeats is not None:
        parts += ["--repeats", str(repeats)]
    if threads != 1:
        parts += ["--threads", str(threads)]
    if device != "cpu":
        parts += ["--device", device]
    if out:
        parts += ["--out", out]
    return " ".join(shlex.quote(p) for p in parts)


def run_suite(
    only: Sequence[str] = (),
    *,
    quick: bool = False,
    out_dir: Optional[Path] = None,
    repeats: Optional[int] = None,
    threads: int = 1,
    device: str = "cpu",
    command: Optional[str] = None,
) -> SuiteResult:
    """Run the measurements named in ``only`` (all when empty) and return their rows.

    ``repeats`` defaults to 3 (quick) or 5 (full); ``threads`` sets torch's intra-op threads for the run
    (restored afterwards). A measurement that fails is reported (``errors``, traceback in the log) and the
    suite goes on with the next; with ``out_dir`` the files are rewritten after each measurement.
    """
    names = check_names(only) if only else list(BENCHMARKS)
    if threads < 1:
        raise GradconcealError(f"threads must be >= 1, got {threads}")
    if device != "cpu" and not device.startswith("cuda"):
        raise GradconcealError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GradconcealError(f"device {device!r} asked for, but no CUDA device is available")
    count = repeats if repeats is not None else (3 if quick else 5)
    ctx = BenchContext(quick=quick, repeats=count, device=torch.device(device), out_dir=out_dir, threads=threads)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    machine = machine_description(ctx.device, threads, ctx.clock)
    if command is None:
        command = bench_command(quick=quick, only=list(only), out=str(out_dir) if out_dir else None,
                                repeats=repeats, threads=threads, device=device)
    rows: List[Row] = []
    seconds: Dict[str, float] = {}
    errors: Dict[str, str] = {}

    def snapshot() -> SuiteResult:
        return SuiteResult(rows=list(rows), seconds=dict(seconds), machine=machine, command=command, quick=quick,
                           out_dir=ctx.out_dir, errors=dict(errors))

    try:
        for name in names:
            module = importlib.import_module(BENCHMARKS[name])
            log.info("bench %s: %s", name, module.TITLE)
            started = time.perf_counter()
            try:
                found = module.run(ctx)
            except (GradconcealError, BenchError) as error:
                errors[name] = str(error)
                log.error("bench %s failed: %s", name, error)
                found = []
            except Exception as error:  # noqa: BLE001 - one failed measurement must not lose the others
                errors[name] = f"{type(error).__name__}: {error}"
                log.exception("bench %s failed with an unexpected error", name)
                found = []
            seconds[name] = time.perf_counter() - started
            rows.extend(found)
            log.info("bench %s: %d row(s) in %.0f s", name, len(found), seconds[name])
            if out_dir is not None:
                snapshot().write(out_dir)  # a crash or kill later keeps what is measured
    finally:
        torch.set_num_threads(previous_threads)
    result = snapshot()
    if out_dir is not None:
        result.write(out_dir)
    return result
