"""The ``gradconceal`` command: subcommands live in their own modules and register themselves here.

Exit codes: 0 success, 1 a clear one-line error (traceback only with --debug), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

from gradconceal.errors import GradconcealError

# Each module defines ``register(subparsers)`` that adds its parser and sets ``func`` on it.
SUBCOMMAND_MODULES = ("demo", "evaluate", "models", "audit", "train")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand whose module is present."""
    parser = argparse.ArgumentParser(
        prog="gradconceal",
        description="Gradient Concealment (GCM): add it to a model, reproduce the paper's table, "
        "and see what adaptive attacks say about it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'gradconceal COMMAND --help' for the examples of each command.\n"
        "Benchmarks (speed and memory against torchattacks) run from a source checkout: python benchmarks/run.py",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--quiet", action="store_true", help="no progress bars; log lines only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"gradconceal.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"gradconceal.cli.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if not args.quiet else logging.WARNING, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
        return int(result or 0)
    except GradconcealError as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # the machine's answer (disk full, no permission, a file where a folder goes)
        if args.debug:
            raise
        print(f"error: {error} (--debug shows where)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
