"""Where does the challenge stack's gain under adaptive attacks come from: the random draws, or the transform?

The Fashion-MNIST table shows the challenge stack (GCM + random resize-and-pad, side 27 or less of 28 and a
random offset) keeping more AR under BPDA, BPDA+EOT and Square than the undefended CNN. This script attacks the
same images four ways, with the attacks of the table and with a stronger EOT, to tell the two causes apart:

1. the challenge stack as evaluated in the table (a new draw on every call; the table's verdict: correct on
   every one of 20 fresh draws, the worst case, beside the verdict of a single draw);
2. BPDA+EOT with more draws, more steps and a larger step (the attacker the literature prescribes);
3. the resize-and-pad layer frozen to one draw for attack and verdict alike (no randomness left: what remains
   is the transform);
4. the undefended CNN (the floor).

The PGD attacks start as the adaptive preset's do (the first run at the clean image, ``start="clean-first"``).

    python docs/results/randomness_check.py            # 300 test images, about 15 minutes on one CPU core
    python docs/results/randomness_check.py --n 100    # quicker
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, List, Tuple

import torch
from torch import Tensor, nn

from gradconceal.attacks import PGD, Square, adaptive_view
from gradconceal.data import load_dataset
from gradconceal.defenses.concealment import DefendedModel, GradientConcealment
from gradconceal.defenses.randomization import RandomResizePad, ResizePadDraw
from gradconceal.defenses.randomization import seeded_randomness
from gradconceal.evaluation.run import JUDGE_STREAM
from gradconceal.evaluation.spec import sample_seed, sample_seeds
from gradconceal.models.zoo import load_model

EPS = 8 / 255
DRAWS = 20  # the table's verdict: correct on every one of 20 fresh draws (docs/results/*.toml: draws = 20)


def survivors(model: nn.Module, attack_model: nn.Module, make: Callable[[nn.Module], object], images: Tensor,
              labels: Tensor, seeds: List[int], batch: int = 100) -> Tuple[int, int, int]:
    """(images still correct after the attack on one seeded draw, those correct on all DRAWS fresh draws as the
    evaluation judges them (seeds ``sample_seed(seed, JUDGE_STREAM)``), images correct before)."""
    kept = kept_all = correct = 0
    for start in range(0, len(labels), batch):
        x, y, s = images[start:start + batch], labels[start:start + batch], seeds[start:start + batch]
        with torch.no_grad(), seeded_randomness(model, s):
            ok = model(x).argmax(1) == y
        x, y, s = x[ok], y[ok], [v for v, keep in zip(s, ok.tolist()) if keep]
        correct += len(y)
        if not len(y):
            continue
        with seeded_randomness(attack_model, s):
            adversarial = make(attack_model).perturb(x, y, sample_seeds=s).adversarial  # type: ignore[attr-defined]
        with torch.no_grad(), seeded_randomness(model, s):
            kept += int((model(adversarial).argmax(1) == y).sum())
        with torch.no_grad(), seeded_randomness(model, [sample_seed(v, JUDGE_STREAM) for v in s]):
            right = torch.ones_like(y, dtype=torch.bool)
            for _ in range(DRAWS):  # each call is a fresh draw per image
                right &= model(adversarial).argmax(1) == y
        kept_all += int(right.sum())
    return kept, kept_all, correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="test images (default 300)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = load_model("fmnist-cnn").eval()
    for p in base.parameters():
        p.requires_grad_(False)
    data = load_dataset("fashion-mnist", split="test", limit=args.n)
    images = torch.stack([data[i][0] for i in range(args.n)])
    labels = torch.tensor([int(data.targets[i]) for i in range(args.n)])
    seeds = sample_seeds(0, range(args.n))
    pad = RandomResizePad(28, 27)
    stack = DefendedModel(base, [GradientConcealment(), pad]).eval()

    def pgd(steps: int, alpha: float) -> Callable[[nn.Module], object]:
        return lambda m: PGD(m, eps=EPS, steps=steps, alpha=alpha, start="clean-first")

    rows = [
        ("challenge stack, BPDA PGD-20 (table)", stack, lambda: adaptive_view(stack, bpda=True), pgd(20, 0.6 / 255)),
        ("challenge stack, BPDA+EOT-10 PGD-20 (table)", stack, lambda: adaptive_view(stack, bpda=True, eot_samples=10),
         pgd(20, 0.6 / 255)),
        ("challenge stack, BPDA+EOT-20 PGD-100, step 1/255", stack,
         lambda: adaptive_view(stack, bpda=True, eot_samples=20), pgd(100, 1 / 255)),
        ("challenge stack, Square 1000 queries (table)", stack, lambda: stack,
         lambda m: Square(m, eps=EPS, n_queries=1000, p_init=0.8)),
        ("undefended CNN, PGD-20 (table)", base, lambda: base, pgd(20, 0.6 / 255)),
        ("undefended CNN, PGD-100, step 1/255", base, lambda: base, pgd(100, 1 / 255)),
    ]
    print(f"Fashion-MNIST test images 0..{args.n - 1}, fmnist-cnn, Linf {EPS * 255:.0f}/255; AR = still correct / correct")
    print(f"AR % on one draw, and on all {DRAWS} fresh draws (the tables' worst case; the undefended CNN has none)")
    print(f"{'attack':58s} {'1 draw':>6s}  {'kept':>9s}  {f'{DRAWS} draws':>8s}  {'kept':>9s}  {'time':>6s}")

    def line(title: str, kept: int, kept_all: int, correct: int, started: float) -> str:
        return (f"{title:58s} {100 * kept / correct:6.1f}  {kept:4d}/{correct:<4d}  {100 * kept_all / correct:8.1f}  "
                f"{kept_all:4d}/{correct:<4d}  {time.perf_counter() - started:5.0f}s")

    for title, model, view, make in rows:
        started = time.perf_counter()
        print(line(title, *survivors(model, view(), make, images, labels, seeds), started))
    # the same transform without randomness: every call uses one draw (side 27, offset (0, 1))
    frozen = ResizePadDraw(side=27, top=0, left=1)
    with pad.fixed(frozen):
        for title, make in (("resize-pad frozen to one draw, BPDA PGD-20", pgd(20, 0.6 / 255)),
                            ("resize-pad frozen to one draw, BPDA PGD-100, step 1/255", pgd(100, 1 / 255))):
            started = time.perf_counter()
            print(line(title, *survivors(stack, adaptive_view(stack, bpda=True), make, images, labels, seeds), started))


if __name__ == "__main__":
    main()
