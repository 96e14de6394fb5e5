"""The check table of docs/training.md: clean accuracy and white-box PGD-Linf accuracy of the undefended
shipped models on the first 1,000 Fashion-MNIST test images (20 steps of eps/8, random start, seed 0).

    python docs/results/training_check.py                       # all shipped Fashion-MNIST models
    python docs/results/training_check.py fmnist-vit fmnist-cnn  # some of them
"""

from __future__ import annotations

import argparse

import torch

from gradconceal.data import load_dataset
from gradconceal.models.zoo import load_model, shipped_checkpoints
from gradconceal.training import pgd_linf

EPSILONS = (0.05, 0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", help="shipped model names (default: every fmnist-* model)")
    parser.add_argument("--n", type=int, default=1000, help="test images (default 1000)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.models or [name for name in shipped_checkpoints() if name.startswith("fmnist-")]
    data = load_dataset("fashion-mnist", split="test", limit=args.n)
    images = data.images.float() / 255.0
    labels = torch.as_tensor(data.targets)
    print("| model | clean | " + " | ".join(f"PGD eps {eps}" for eps in EPSILONS) + " |")
    print("|---|---|" + "---|" * len(EPSILONS))
    for name in names:
        model = load_model(name).eval()
        cells = []
        with torch.no_grad():
            cells.append((model(images).argmax(1) == labels).float().mean().item())
        for eps in EPSILONS:
            adversarial = pgd_linf(model, images, labels, eps=eps, steps=20, step_size=eps / 8,
                                   generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                cells.append((model(adversarial).argmax(1) == labels).float().mean().item())
        print(f"| `{name}` | " + " | ".join(f"{100 * c:.1f} %" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
