"""Where should PGD-L2 start? Robust accuracy of PGD-L2 from the clean image, from one random start of each
kind, with restarts, and torchattacks' PGDL2, on the same model and images.

The budget and step are the paper preset's PGD-L2 scaled to 1x28x28 (eps 0.57735, alpha 0.0433013, 20 steps).
Starts compared, one run each over ``--seeds`` seeds:

* clean: no random start (also ``start="clean-first"`` with one run);
* radius: a uniform direction times a radius uniform in [0, eps] (torchattacks' PGDL2, our restarts);
* ball: uniform in the ball (foolbox's start, ``start="foolbox"``: the default and the paper preset's).

    python benchmarks/random_start_l2.py                      # fmnist-cnn, 200 images, 5 seeds
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from typing import List

import torch
from torch import Tensor

from gradconceal.attacks import PGD
from gradconceal.attacks.base import RunState
from gradconceal.attacks.pgd import restart_offset

EPS, ALPHA, STEPS = 0.57735, 0.0433013, 20


class RadiusStartPGD(PGD):
    """PGD whose every run starts at ``restart_offset`` (radius uniform in [0, eps]): only for this comparison."""

    def _start(self, origin: Tensor, rows: Tensor, state: RunState, restart: int) -> Tensor:
        return (origin + restart_offset(rows, state.random, origin, self.threat.norm, self.threat.eps)).clamp_(0, 1)


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fmnist-cnn")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("$ python benchmarks/random_start_l2.py " + shlex.join(argv))

    from gradconceal.data import load_dataset
    from gradconceal.models.zoo import load_model

    model = load_model(args.model).eval()
    data = load_dataset("fashion-mnist", limit=args.images)
    images = torch.stack([data[i][0] for i in range(len(data))])
    labels = torch.tensor(data.targets[: len(data)], dtype=torch.int64)
    settings = dict(norm="l2", eps=EPS, steps=STEPS, alpha=ALPHA)

    def report(name: str, values: List[float]) -> None:
        spread = f" (min {min(values):.3f}, max {max(values):.3f})" if len(values) > 1 else ""
        print(f"{name:<44} {statistics.mean(values):.3f}{spread}")

    with torch.no_grad():
        clean = float((model(images).argmax(1) == labels).float().mean())
    print(f"{args.model}, {len(labels)} images, L2 eps {EPS}, {STEPS} steps, alpha {ALPHA}; clean accuracy {clean:.3f}")
    print("robust accuracy (lower is stronger), mean over seeds")
    report("clean start (clean-first, one run)", [
        PGD(model, **settings, start="clean-first").perturb(images, labels).robust_accuracy])
    seeds = range(args.seeds)
    report("radius U[0, eps] x direction, one run", [
        RadiusStartPGD(model, **settings, seed=s).perturb(images, labels).robust_accuracy for s in seeds])
    report("uniform in the ball (foolbox), one run", [
        PGD(model, **settings, start="foolbox", seed=s).perturb(images, labels).robust_accuracy for s in seeds])
    report("clean-first + 2 restarts (3 runs)", [
        PGD(model, **settings, start="clean-first", restarts=3, seed=s).perturb(images, labels).robust_accuracy for s in seeds])
    report("foolbox start (default), 3 runs", [
        PGD(model, **settings, start="foolbox", restarts=3, seed=s).perturb(images, labels).robust_accuracy
        for s in seeds])
    try:
        import torchattacks
    except ImportError:
        print("torchattacks not installed: no reference")
        return
    reference = []
    for s in seeds:
        with torch.random.fork_rng():
            torch.manual_seed(s)
            adversarial = torchattacks.PGDL2(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)(images, labels)
        with torch.no_grad():
            reference.append(float((model(adversarial).argmax(1) == labels).float().mean()))
    report("torchattacks PGDL2, random start", reference)


if __name__ == "__main__":
    main(sys.argv[1:])
