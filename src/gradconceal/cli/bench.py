"""``gradconceal bench``: measure speed and memory side by side (ours, torchattacks, the bare loop) and print ratios."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

EPILOG = """examples:
  gradconceal bench --quick                     # under 5 minutes on a 2-core CPU
  gradconceal bench --out bench-results/        # everything, under 20 minutes on a 2-core CPU
  gradconceal bench --quick --only gcm attacks  # just these measurements
  gradconceal bench --device cuda --only gpu    # fp32 / bf16 / torch.compile throughput on a GPU

measurements: gcm (GCM overhead), attacks (PGD-Linf/L2, FGSM vs torchattacks and the bare loop),
early-stop, square (queries to success), cw-apgd (time per image), memory (peak RSS / CUDA memory),
runner (end-to-end images/s, resume bookkeeping), scaling (images and processes), gpu.
Writes bench.json, table.md, plots and profiles to --out. Benchmarks run with one torch thread unless
--threads says otherwise: on a shared machine more threads mostly add noise.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand."""
    from gradconceal.bench.suite import BENCHMARKS

    parser = subparsers.add_parser(
        "bench",
        help="benchmark GCM and the attacks against torchattacks and the bare loop",
        description="Side-by-side timings and memory (same model, data, batch, device), printed as ratios with "
        "the command that reproduces them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (under 5 minutes)")
    parser.add_argument("--out", metavar="DIR", help="write bench.json, table.md, plots and profiles here")
    parser.add_argument("--only", nargs="+", metavar="NAME", default=[],
                        help=f"run only these measurements: {', '.join(BENCHMARKS)}")
    parser.add_argument("--repeats", type=int, metavar="N", help="timed rounds per comparison (default 3 quick, 5 full)")
    parser.add_argument("--threads", type=int, default=1, metavar="N", help="torch intra-op threads (default: 1)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the suite, print the table and the summary; exit 0 (missed targets are reported, not errors)."""
    from gradconceal.bench.suite import bench_command, run_suite

    out = Path(args.out) if args.out else None
    command = bench_command(quick=args.quick, only=args.only, out=args.out, repeats=args.repeats,
                            threads=args.threads, device=args.device)
    result = run_suite(args.only, quick=args.quick, out_dir=out, repeats=args.repeats, threads=args.threads,
                       device=args.device, command=command)
    print(result.table())
    print()
    print(result.summary())
    return 1 if result.errors else 0
