"""How a command's wall time holds up when other processes compete for the CPU, for each thread setting.

    python benchmarks/contention.py                    # the quick demo on one photo, 2 busy loops, 1 repeat
    python benchmarks/contention.py --repeats 3 --settings default,torch
    python benchmarks/contention.py --command "gradconceal --quiet demo --out {out}"     # the whole demo

For each thread setting it runs the command once on its own ("idle") and once beside ``--busy`` processes
``python -c 'while 1: pass'`` ("busy"), idle and busy runs interleaved so that a change in the machine's
background load falls on both, and prints a table of wall times, busy/idle ratios, the 1-minute load average
before each run (what else the machine was doing) and the command that reproduces the table.

Settings (appended to the command as ``--threads``; the command's environment never carries OMP_NUM_THREADS):
``default`` (no flag: gradconceal's default), ``1``, ``auto``, any count, ``torch`` (one thread per core,
torch's own default) and ``passive`` (``torch`` with ``OMP_WAIT_POLICY=PASSIVE``: OpenMP threads sleep instead
of spinning while they wait).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

DEFAULT_COMMAND = "gradconceal --quiet demo --n 1 --out {out}"
DEFAULT_SETTINGS = "torch,passive,default,auto"
BUSY_LOOP = "while 1: pass"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def _invocation(setting: str, command: str, out: str) -> Tuple[List[str], Dict[str, str]]:
    """The argv and environment of one run of ``command`` under a thread setting."""
    argv = shlex.split(command.replace("{out}", shlex.quote(out)))
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    if setting in ("torch", "passive"):
        argv += ["--threads", str(_cores())]
        if setting == "passive":
            env["OMP_WAIT_POLICY"] = "PASSIVE"
    elif setting != "default":
        argv += ["--threads", setting]
    return argv, env


def _run_once(setting: str, command: str, busy: int, settle_s: float) -> Tuple[float, float]:
    """(wall seconds, load average before) of one run, beside ``busy`` busy loops."""
    loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]
    try:
        if loops:
            time.sleep(settle_s)
        load = _load()
        with tempfile.TemporaryDirectory(prefix="contention-") as folder:
            argv, env = _invocation(setting, command, str(Path(folder) / "out"))
            started = time.perf_counter()
            done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{shlex.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
        return wall, load
    finally:
        for loop in loops:
            loop.kill()
        for loop in loops:
            loop.wait()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--command", default=DEFAULT_COMMAND,
                        help="command to time; {out} becomes a fresh folder per run (default: %(default)s)")
    parser.add_argument("--settings", default=DEFAULT_SETTINGS,
                        help="comma-separated thread settings (default: %(default)s)")
    parser.add_argument("--busy", type=int, default=2, help="busy-loop processes beside the busy runs (default: 2)")
    parser.add_argument("--repeats", type=int, default=1, help="idle/busy pairs per setting; medians shown")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds the busy loops run before the command")
    args = parser.parse_args(argv)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    for setting in settings:
        if setting not in ("default", "torch", "passive", "auto") and not (setting.isdigit() and int(setting) >= 1):
            parser.error(f"--settings: unknown setting {setting!r} (default, torch, passive, auto or a count >= 1)")
    if args.busy < 1 or args.repeats < 1:
        parser.error("--busy and --repeats must be >= 1")

    times: Dict[Tuple[str, str], List[float]] = {}
    loads: Dict[Tuple[str, str], List[float]] = {}
    started = time.perf_counter()
    for repeat in range(args.repeats):
        for index, setting in enumerate(settings):
            # alternate which of idle and busy goes first, so neither always follows the other
            order = ("idle", "busy") if (index + repeat) % 2 == 0 else ("busy", "idle")
            for state in order:
                wall, load = _run_once(setting, args.command, args.busy if state == "busy" else 0, args.settle)
                times.setdefault((setting, state), []).append(wall)
                loads.setdefault((setting, state), []).append(load)
                print(f"  {setting:>8} {state:<4} {wall:8.1f} s  (load before {load:.2f})", file=sys.stderr, flush=True)

    command = shlex.join(["python", "benchmarks/contention.py", "--command", args.command, "--settings",
                          ",".join(settings), "--busy", str(args.busy), "--repeats", str(args.repeats)])
    print(f"command timed: {args.command}")
    print(f"{_cores()} cores; busy: {args.busy} x python -c '{BUSY_LOOP}'; {args.repeats} repeat(s), medians; "
          f"{time.perf_counter() - started:.0f} s in all")
    print()
    print("| setting | idle s | busy s | busy/idle | load before idle, busy |")
    print("|---|---:|---:|---:|---:|")
    for setting in settings:
        idle = statistics.median(times[(setting, "idle")])
        busy = statistics.median(times[(setting, "busy")])
        print(f"| {setting} | {idle:.1f} | {busy:.1f} | {busy / idle:.2f}x | "
              f"{statistics.median(loads[(setting, 'idle')]):.1f}, {statistics.median(loads[(setting, 'busy')]):.1f} |")
    print()
    print(f"reproduce: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
