"""Run every gradconceal benchmark with one command and print the ratio table and how to reproduce it.

    python benchmarks/run.py --quick          # under 5 minutes on a 2-core CPU
    python benchmarks/run.py --out bench-out  # everything, under 20 minutes on a 2-core CPU

    python benchmarks/run.py --quick --only gcm attacks
    python benchmarks/run.py --device cuda --only gpu

It runs the measurements of the ``gcbench`` package beside this file (GCM overhead, attack speed against
torchattacks and the bare loop, early stop, Square queries, C&W/APGD, memory, the runner, scaling, GPU) in
one process, then the attack engine's own PGD-Linf comparison, ``benchmarks/bench_attacks.py``. It needs
gradconceal with the ``compare`` extra (``pip install -e .[compare]``); the benchmarks are not part of the
installed package.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the gcbench package lives beside this file
    sys.path.insert(0, str(HERE))

EPILOG = """measurements: gcm (GCM overhead), attacks (PGD-Linf/L2, FGSM vs torchattacks and the bare loop),
early-stop, square (queries to success), cw-apgd (time per image), memory (peak RSS / CUDA memory),
runner (end-to-end images/s, resume bookkeeping), scaling (images and processes), gpu.
Writes bench.json, table.md, plots and profiles to --out. Benchmarks run with one torch thread unless
--threads says otherwise: on a shared machine more threads mostly add noise.
"""


def _bench_attacks(quick: bool, threads: int, repeats: Optional[int]) -> Optional[str]:
    """Output of ``benchmarks/bench_attacks.py`` at this run's threads and a batch that fits the time budget."""
    script = HERE / "bench_attacks.py"
    if not script.is_file():
        return None
    command = [sys.executable, str(script)]
    helptext = subprocess.run(command + ["--help"], capture_output=True, text=True, timeout=120, check=False).stdout
    wanted = {"--threads": str(threads), "--batch": "64" if quick else "128",
              "--repeats": str(repeats or (3 if quick else 5))}
    for flag, value in wanted.items():
        if flag in helptext:
            command += [flag, value]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False)
    text = done.stdout.strip()
    if done.returncode != 0:
        text += f"\n(exit {done.returncode})\n{done.stderr.strip()[-2000:]}"
    return f"$ {' '.join(shlex.quote(c) for c in command)}\n{text}"


def main(argv: Optional[List[str]] = None) -> int:
    """Parse the flags, run the suite, print the table, the summary and the reproducing command."""
    from gcbench.suite import BENCHMARKS, bench_command, run_suite
    from gradconceal.errors import GradconcealError

    parser = argparse.ArgumentParser(prog="python benchmarks/run.py", description=__doc__.splitlines()[0],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (under 5 minutes)")
    parser.add_argument("--out", metavar="DIR", help="write bench.json, table.md, scaling.png and profiles here")
    parser.add_argument("--only", nargs="+", metavar="NAME", default=[], help=f"subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--repeats", type=int, metavar="N",
                        help="timed rounds per comparison (default 3 quick, 5 full)")
    parser.add_argument("--threads", type=int, default=1, metavar="N", help="torch intra-op threads (default: 1)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    parser.add_argument("--skip-bench-attacks", action="store_true", help="do not run benchmarks/bench_attacks.py")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    command = bench_command(quick=args.quick, only=args.only, out=args.out, repeats=args.repeats,
                            threads=args.threads, device=args.device)

    started = time.perf_counter()
    try:
        result = run_suite(args.only, quick=args.quick, out_dir=Path(args.out) if args.out else None,
                           repeats=args.repeats, threads=args.threads, device=args.device, command=command)
    except GradconcealError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    extra = None if args.skip_bench_attacks or args.only else _bench_attacks(args.quick, args.threads, args.repeats)
    print(result.table())
    print()
    if extra is not None:
        print("PGD-Linf from the attack engine's own benchmark:")
        print(extra)
        print()
        if args.out:
            (Path(args.out) / "bench_attacks.txt").write_text(extra + "\n", encoding="utf-8")
    print(result.summary())
    print(f"wall time of this command: {time.perf_counter() - started:.0f} s")
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
