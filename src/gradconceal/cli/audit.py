"""``gradconceal audit``: is a defence masking gradients? Prints the checks and a verdict, writes audit.json."""

from __future__ import annotations

import argparse
import logging

from gradconceal import _validate as check
from gradconceal.threads import add_threads_flag, apply_threads

log = logging.getLogger(__name__)

EPILOG = """examples:
  gradconceal audit lite0 --defense gcm --out audit-gcm/          # pretrained lite0 behind GCM, the photos
  gradconceal audit lite0 --out audit-vanilla/                    # the same model undefended
  gradconceal audit lite0 --defense gcm --quick                   # gradient checks only, seconds
  gradconceal audit fmnist-cnn --defense 'gcm:w=1e12,epsilon=1e-10' --data fashion-mnist --n 64
  gradconceal audit fmnist-cnn --defense bit-depth:bits=3
  gradconceal audit model.safetensors --defense challenge --data imagenet:/data/val --n 32

defenses: none, gcm[:w=W,epsilon=E], resize-pad[:min_size=S], challenge (gcm then resize-pad),
bit-depth[:bits=B]. The verdict is 'no masking detected', 'gradient masking suspected' (a warning sign),
or 'gradient masking confirmed' (an adaptive, black-box, transfer or noise attack beat the gradient attack).
Exit code 0 whatever the verdict; the verdict is in the last line and in DIR/audit.json.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``audit`` subcommand."""
    parser = subparsers.add_parser(
        "audit",
        help="check a model (and defence) for gradient masking",
        description="Run the gradient-masking checks on MODEL behind --defense, print the table and the verdict, "
        "and write DIR/audit.json.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="zoo name (lite0, fmnist-cnn, timm:NAME, ...) or checkpoint path")
    parser.add_argument("--weights", metavar="PATH", help="local weights for MODEL")
    parser.add_argument("--defense", default="none", metavar="NAME",
                        help="none | gcm | resize-pad | challenge | bit-depth, with options as NAME:key=value,... "
                        "(default: none)")
    parser.add_argument("--data", metavar="SOURCE",
                        help="photos | fashion-mnist[:DIR] | digits | imagenet:PATH (default: by the model's input size)")
    parser.add_argument("--n", type=int, metavar="N", help="number of images (default: all photos, else 64)")
    parser.add_argument("--eps", default="8/255", metavar="EPS", help="Linf budget of the attacks (default: 8/255)")
    parser.add_argument("--quick", action="store_true", help="gradient checks only (no attacks): a verdict in seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, metavar="B", help="attack batch size (default: 16 large, 128 small images)")
    parser.add_argument("--out", default=".", metavar="DIR", help="folder for audit.json (default: the current folder)")
    add_threads_flag(parser)
    parser.set_defaults(func=run)


def parse_eps(text: str) -> float:
    """``8/255``, ``0.03`` -> a float in (0, 1]."""
    return check.number(text, "--eps", minimum=0, maximum=1, above=True, fractions=True, detail=" ([0, 1] pixels)")


def run(args: argparse.Namespace) -> int:
    """Load the model, audit it, print the table and the verdict, save audit.json."""
    from gradconceal.masking import audit
    from gradconceal.masking.result import audit_path
    from gradconceal.models.zoo import load_model

    apply_threads(args.threads)
    eps = parse_eps(args.eps)
    if args.n is not None:
        check.integer(args.n, "--n", minimum=1)
    audit_path(args.out)  # refuse the user's own audit.json before the work, not after
    model = load_model(args.model, weights=args.weights)
    if not getattr(model, "model_name", ""):
        model.model_name = args.model
    report = audit(model, args.data, defense=args.defense, quick=args.quick, n=args.n, eps=eps, seed=args.seed,
                   batch_size=args.batch_size)
    print(report.table())
    print(report.verdict_line())
    path = report.save(args.out)
    log.info("wrote %s", path)
    return 0
