"""torch.compile against eager for PGD-Linf-10 on a GCM model on the CPU (the evaluation's ``compile`` setting).

    python benchmarks/compile_cpu.py --batch 8 --rounds 3             # GCM-lite0, inductor; compiling takes long
    python benchmarks/compile_cpu.py --model fmnist-resnet --batch 100 --rounds 5   # a small net, quicker
    python benchmarks/compile_cpu.py --dtype bfloat16 --backend aot_eager

As the runner does it: only the model's base network is compiled (``dynamic=True``); the GCM layer in front stays
eager. Times the first compiled call (compilation included) once, then eager and compiled PGD-10 in turns on
one torch thread (process CPU time), and checks that both give the same decisions. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any, List, Optional, cast

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the gcbench package lives beside this file
    sys.path.insert(0, str(HERE))


def main(argv: Optional[List[str]] = None) -> int:
    """Parse the flags, time eager and compiled PGD-10, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lite0", help="a zoo model: lite0 on the photos, fmnist-* on Fashion-MNIST")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from gcbench.timing import interleaved, median
    from gradconceal.attacks import PGD
    from gradconceal.data import load_dataset
    from gradconceal.defenses import DefendedModel, GradientConcealment
    from gradconceal.models.zoo import load_model

    base = load_model(args.model).eval()
    for parameter in base.parameters():
        parameter.requires_grad_(False)
    layers = [GradientConcealment()]
    eager = DefendedModel(base, layers).eval()
    compiled_base = cast(torch.nn.Module, torch.compile(base, backend=args.backend, dynamic=True))
    compiled = DefendedModel(compiled_base, layers).eval()
    fashion = args.model.startswith("fmnist")
    data = load_dataset("fashion-mnist", limit=args.batch) if fashion else load_dataset("photos")
    images = torch.stack([data[i % len(data)][0] for i in range(args.batch)])
    with torch.no_grad():
        labels = eager(images).argmax(dim=1)

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast("cpu", dtype=torch.bfloat16) if args.dtype == "bfloat16" else contextlib.nullcontext()

    def pgd(model: torch.nn.Module) -> Any:
        with autocast():
            return PGD(model, eps=8 / 255, steps=10, alpha=2 / 255).perturb(images, labels)

    started = time.perf_counter()
    first = pgd(compiled)
    compile_seconds = time.perf_counter() - started
    reference = pgd(eager)
    same = torch.equal(first.fooled, reference.fooled)
    times = interleaved({"eager": lambda: pgd(eager), "compiled": lambda: pgd(compiled)}, args.rounds, warmup=0,
                        clock="cpu")
    ratios = [c / e for c, e in zip(times["compiled"], times["eager"])]
    print(f"PGD-Linf-10 on GCM-{args.model}, batch {args.batch}, {args.dtype}, backend {args.backend}, dynamic=True, "
          f"one torch thread, process CPU time, {args.rounds} rounds in turns; same fooled: {same} "
          f"({int(reference.fooled.sum())}/{args.batch}); first compiled call (compiling): {compile_seconds:.0f} s wall\n")
    print("| side | median s / call | compiled / eager (median, range) |\n|---|---|---|")
    print(f"| eager | {median(times['eager']):.2f} | |")
    print(f"| compiled | {median(times['compiled']):.2f} | {median(ratios):.3f}x ({min(ratios):.3f}-{max(ratios):.3f}x) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
