"""What FGSM through GCM amounts to on Fashion-MNIST: random noise, or the true FGSM on the black pixels.

GCM multiplies the model's input gradient by ``1 + w * epsilon * cos(w * x)`` (about 1e12 in size). At a pixel
that is exactly 0, ``cos(0) = 1``: the factor is positive and the gradient keeps its true sign there; at other
pixels its sign is uncorrelated with the true gradient's. Fashion-MNIST backgrounds are exactly 0 (about half of
all pixels), so FGSM through GCM is the true FGSM on the background plus a random-sign step elsewhere. For each
model, on the correctly classified images among the first ``--images`` test images, at Linf ``--eps``:

* the share of pixels whose GCM gradient has the true gradient's sign, at zero pixels and at the others;
* AR % under FGSM through GCM, the true FGSM, the true FGSM on the zero pixels only and on the others only,
  and random-sign noise (``x + eps * sign``, uniform random signs, mean over ``--draws`` draws).

    python docs/results/fgsm_through_gcm.py                      # the plain models and the trained
                                                                 # ConvNeXts, 1,000 images (1 min)
    python docs/results/fgsm_through_gcm.py --models fmnist-convnext-fgsm --images 500
"""

from __future__ import annotations

import argparse
import statistics
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradconceal.data import load_dataset
from gradconceal.defenses import conceal
from gradconceal.errors import GradconcealError
from gradconceal.models.zoo import load_model

MODELS = ("fmnist-cnn", "fmnist-resnet", "fmnist-vit", "fmnist-convnext", "fmnist-convnext-fgsm",
          "fmnist-convnext-pgd")
BATCH = 250


def _predict(model: nn.Module, images: Tensor) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(images[i:i + BATCH]).argmax(1) for i in range(0, len(images), BATCH)])


def _gradient(model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    """d(summed cross-entropy)/d(pixels), (N, C, H, W)."""
    parts = []
    for i in range(0, len(images), BATCH):
        x = images[i:i + BATCH].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x), labels[i:i + BATCH], reduction="sum"), x)
        parts.append(grad)
    return torch.cat(parts)


def measure(model: nn.Module, images: Tensor, labels: Tensor, eps: float, draws: int, seed: int) -> Dict[str, float]:
    """The sign agreements (shares) and AR % of one model; ``images`` (N, C, H, W) in [0, 1] pixels."""
    concealed = conceal(model).eval()
    correct = _predict(model, images) == labels
    n_correct = max(int(correct.sum()), 1)

    def ar(adversarial: Tensor) -> float:
        return 100.0 * float(((_predict(model, adversarial.clamp(0.0, 1.0)) == labels) & correct).sum()) / n_correct

    true_sign = _gradient(model, images, labels).sign()
    gcm_sign = _gradient(concealed, images, labels).sign()
    nonzero_grad, black = true_sign != 0, images == 0
    agree = (true_sign == gcm_sign).float()
    generator = torch.Generator().manual_seed(seed)
    noise = [ar(images + eps * (torch.randint(0, 2, images.shape, generator=generator).to(images.dtype) * 2 - 1))
             for _ in range(draws)]
    return {
        "zero pixels %": 100.0 * float(black.float().mean()),
        "sign agrees at zero pixels": float(agree[nonzero_grad & black].mean()),
        "sign agrees elsewhere": float(agree[nonzero_grad & ~black].mean()),
        "FGSM through GCM": ar(images + eps * gcm_sign),
        "true FGSM": ar(images + eps * true_sign),
        "true FGSM, zero pixels only": ar(images + eps * true_sign * black),
        "true FGSM, other pixels only": ar(images + eps * true_sign * ~black),
        "random-sign noise": statistics.mean(noise),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), metavar="NAME", help="zoo models")
    parser.add_argument("--images", type=int, default=1000, help="the first N test images (default 1000)")
    parser.add_argument("--draws", type=int, default=5, help="random-sign noise draws (default 5)")
    parser.add_argument("--eps", type=float, default=8 / 255, help="Linf budget in [0, 1] pixels (default 8/255)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.images < 1 or args.draws < 1 or not 0 < args.eps <= 1:
        parser.error("--images and --draws must be >= 1 and --eps in (0, 1] ([0, 1] pixels)")
    torch.set_num_threads(1)
    try:
        data = load_dataset("fashion-mnist", limit=args.images)
        images = torch.stack([data[i][0] for i in range(len(data))])
        labels = torch.tensor([int(data[i][1]) for i in range(len(data))])
        rows = {name: measure(load_model(name).eval(), images, labels, args.eps, args.draws, args.seed)
                for name in args.models}
    except GradconcealError as error:
        raise SystemExit(f"fgsm_through_gcm.py: {error}") from None
    columns = list(next(iter(rows.values())))
    print(f"Linf {args.eps:.5f}, first {len(images)} test images; AR % over each model's correct images\n")
    print("| model | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns))
    for name, row in rows.items():
        cells = [f"{v:.3f}" if k.startswith("sign") else f"{v:.1f}" for k, v in row.items()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\npython docs/results/fgsm_through_gcm.py --models {' '.join(args.models)} --images {args.images} "
          f"--draws {args.draws}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
