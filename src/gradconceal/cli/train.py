"""``gradconceal train``: train a zoo model with the challenge recipe (or plainly, or with PGD), resumably."""

from __future__ import annotations

import argparse
import dataclasses
import re
from typing import Any, Dict

from gradconceal import _validate as check
from gradconceal.threads import add_threads_flag, apply_threads
from gradconceal.training.config import (
    DEVICES,
    MIXES,
    OPTIMIZERS,
    PRESETS,
    SCHEDULES,
    TrainConfig,
    field_names,
    flag_name,
)

EPILOG = """examples:
  gradconceal train small:cnn --epochs 5 --out runs/cnn
      plain training (AdamW + cosine, crop/flip augmentation) of the small CNN on Fashion-MNIST
  gradconceal train small:cnn --preset challenge --out runs/cnn-fgsm
      the paper's challenge recipe: Adamax + step decay, CutMix/MixUp, FGSM regularisation
  gradconceal train small:resnet --preset pgd --pgd-steps 7 --train-limit 20000 --out runs/resnet-pgd
      PGD adversarial training at Linf 0.1 (the honest robust baseline) on 20k training images
  gradconceal train small:cnn --out runs/cnn --resume
      continue a run after a kill, from the last finished epoch (same settings; --threads may differ)
  gradconceal train timm:resnet18 --data imagenet:/data/train --test-data imagenet:/data/val --out runs/r18
      any zoo model on ImageNet-layout folders (one folder per synset)

FGSM/PGD examples are computed on the undefended model (GCM's gradient is noise); add GCM at test time.
Checkpoints: OUT/epoch-NNNN.safetensors (+ .state.safetensors) every epoch, OUT/model.safetensors at the end.
"""

_CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "mix": MIXES, "device": DEVICES}
_OPTIONAL_TYPES = {"train_limit": int, "test_limit": int, "pgd_step_size": float, "test_data": str}
_HELP = {
    "data": "training data spec (default fashion-mnist; its train split, or the whole folder for imagenet:PATH)",
    "test_data": "data spec for test accuracy (default: the test split of --data)",
    "pretrained": "start from the zoo's pretrained weights (timm/torchvision models)",
    "epochs": "number of epochs",
    "batch_size": "images per batch",
    "optimizer": "optimiser (challenge: adamax)",
    "lr": "base learning rate",
    "weight_decay": "weight decay",
    "momentum": "SGD momentum (Nesterov when > 0)",
    "schedule": "learning-rate schedule, per step: cosine to 0, step decay, or constant",
    "step_milestones": "step schedule: fractions of all steps where the rate is multiplied by --step-gamma",
    "step_gamma": "step schedule: decay factor",
    "crop_padding": "random crop after zero padding by this many pixels (0: no crop)",
    "hflip": "random horizontal flips",
    "erasing": "probability of random erasing per image",
    "mix": "CutMix or MixUp (chosen at random) on the clean loss term",
    "mix_prob": "probability that a batch is mixed",
    "cutmix_alpha": "CutMix Beta(alpha, alpha)",
    "mixup_alpha": "MixUp Beta(alpha, alpha)",
    "label_smoothing": "label smoothing of every cross-entropy term",
    "clean_weight": "weight of the clean (or CutMix/MixUp) loss term; 0 trains on adversarial examples only",
    "fgsm": "add the challenge recipe's FGSM pair (untargeted + targeted) to every batch",
    "fgsm_eps_min": "smallest FGSM eps (pixels in [0, 1])",
    "fgsm_eps_max": "largest FGSM eps",
    "fgsm_eps_count": "number of evenly spaced eps values; one is drawn per batch",
    "fgsm_weight": "loss weight of each FGSM term",
    "fgsm_targeted": "include the targeted FGSM example (toward a random other class)",
    "pgd": "add PGD-Linf adversarial examples to every batch (adversarial training)",
    "pgd_eps": "PGD Linf budget (pixels in [0, 1])",
    "pgd_steps": "PGD iterations",
    "pgd_step_size": "PGD step size ('none': 2.5 * eps / steps)",
    "pgd_weight": "loss weight of the PGD term",
    "seed": "seed of all training randomness",
    "train_limit": "use only the first N training images ('none' for all)",
    "test_limit": "evaluate on the first N test images ('none' for all)",
    "device": "auto (CUDA when available), cpu or cuda",
    "amp": "mixed precision on CUDA (ignored on CPU)",
}


def _optional(kind: type):
    """argparse type accepting 'none' for an optional number."""

    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__
    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train a model (plain, challenge recipe with FGSM regularisation, or PGD adversarial training)",
        description="Train a zoo model on a data source; checkpoints every epoch, resumable, seeded.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", nargs="?", default="small:cnn", help="zoo model name (default small:cnn)")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS), help="recipe preset (default: default)")
    parser.add_argument("--out", default=None, help="run folder for checkpoints (default runs/<model>-<preset>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    parser.add_argument("--stop-after", type=int, default=None, help="stop after N epochs in this call (resume later)")
    parser.add_argument("--export", default=None, help="also write the final model to this .safetensors path")
    add_threads_flag(parser)
    settings = parser.add_argument_group("training settings (default: the preset's)")
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        if field.name == "model":
            continue
        default = getattr(defaults, field.name)
        flag = flag_name(field.name)
        help_text = _HELP.get(field.name, field.name.replace("_", " "))
        if isinstance(default, bool):
            settings.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif isinstance(default, tuple):
            settings.add_argument(flag, type=float, nargs="+", default=None, help=help_text)
        elif field.name in _OPTIONAL_TYPES:
            settings.add_argument(flag, type=_optional(_OPTIONAL_TYPES[field.name]), default=None, help=help_text)
        elif field.name in _CHOICES:
            settings.add_argument(flag, choices=_CHOICES[field.name], default=None, help=help_text)
        else:
            settings.add_argument(flag, type=type(default), default=None, help=help_text)
    parser.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> Dict[str, Any]:
    """The training settings given on the command line (unset ones are left to the preset)."""
    given: Dict[str, Any] = {}
    for name in field_names():
        if name == "model":
            continue
        value = getattr(args, name, None)
        if value is not None:
            given[name] = tuple(value) if isinstance(value, list) else value
    return given


def run(args: argparse.Namespace) -> int:
    """Train, then print the per-epoch table and where the model was written."""
    from gradconceal.training import train

    out: str = args.out or f"runs/{re.sub(r'[^A-Za-z0-9_.-]+', '-', args.model)}-{args.preset}"
    if args.stop_after is not None:
        check.integer(args.stop_after, "--stop-after", minimum=1)
    apply_threads(args.threads)
    result = train(
        args.model,
        preset=args.preset,
        out_dir=out,
        resume=args.resume,
        stop_after=args.stop_after,
        export=args.export,
        progress=not args.quiet,
        **_settings(args),
    )
    print(f"{'epoch':>5}  {'train loss':>10}  {'train acc':>9}  {'test acc':>8}  {'seconds':>7}")
    for row in result.history:
        print(
            f"{row['epoch']:>5}  {row['train_loss']:>10.4f}  {row['train_accuracy']:>9.4f}  "
            f"{row['test_accuracy']:>8.4f}  {row['seconds']:>7.1f}"
        )
    if result.finished:
        print(
            f"done: {result.epochs_done} epochs, {result.wall_time_s:.0f} s, test accuracy "
            f"{result.test_accuracy:.4f} on {result.test_images} images -> {result.checkpoint}"
        )
        if args.export:
            print(f"exported: {args.export}")
    else:
        print(f"stopped after epoch {result.epochs_done}/{result.config.epochs}; rerun with --resume to continue")
    return 0
