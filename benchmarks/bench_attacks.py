"""Time PGD-Linf-10: gradconceal's PGD vs torchattacks' PGD vs a bare loop of 10 forward+backward passes.

All three run in one process on the same model, batch and device; each is timed ``--repeats`` times
after a warm-up (interleaved, so load drift hits all alike) and the median is reported with its ratio to the bare loop. Ours is timed with early
stop off (pure per-step overhead: it also runs one clean and one final forward) and on (the default:
samples leave the batch once fooled). On CUDA the peak memory of each is printed too.

    python benchmarks/bench_attacks.py                                  # fmnist-cnn, 256 images, CPU
    python benchmarks/bench_attacks.py --model lite0 --data photos --batch 9
    python benchmarks/bench_attacks.py --device cuda --batch 512 --autocast bf16
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import statistics
import sys
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradconceal.attacks import PGD

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 10


def load(args: argparse.Namespace) -> Tuple[nn.Module, Tensor, Tensor]:
    """The model (eval mode), a batch of ``--batch`` images on ``--device`` and the model's own predictions.

    The labels are the model's clean top-1, so every side attacks every image: our PGD skips the images the
    model already gets wrong, torchattacks and the bare loop do not, and true labels would time ours on fewer.
    """
    from gradconceal.data import load_dataset
    from gradconceal.models.zoo import load_model

    model = load_model(args.model).eval().to(args.device)
    data = load_dataset(args.data, limit=args.batch)
    images = torch.stack([data[i][0] for i in range(len(data))])
    labels = torch.tensor(data.targets[: len(data)])
    repeat = -(-args.batch // len(images))  # small data sets (photos) are tiled up to the batch size
    images = images.repeat(repeat, 1, 1, 1)[: args.batch].to(args.device)
    with torch.no_grad():
        predictions = model(images).argmax(1)
    accuracy = float((predictions.cpu() == labels.repeat(repeat)[: args.batch]).float().mean())
    print(f"clean accuracy {accuracy:.3f} on the true labels; the model's own predictions are the labels below")
    return model, images, predictions


def bare_loop(model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    """What any PGD-10 must at least do: 10 forward passes and 10 backward passes to the input."""
    x = images
    for _ in range(STEPS):
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x), labels)
        (grad,) = torch.autograd.grad(loss, x)
        x = x + 0 * grad
    return x


def time_runs(runs: Dict[str, Callable[[], object]], device: str, repeats: int) -> Dict[str, Tuple[float, Optional[int]]]:
    """Median seconds per run and peak CUDA memory (bytes) of one call; runs are interleaved so drift hits all."""
    cuda = device.startswith("cuda")
    for run in runs.values():  # warm-up
        run()
    times: Dict[str, List[float]] = {name: [] for name in runs}
    peaks: Dict[str, Optional[int]] = {name: None for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            run()
            if cuda:
                torch.cuda.synchronize()
                peaks[name] = torch.cuda.max_memory_allocated()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), peaks[name]) for name in runs}


@contextlib.contextmanager
def precision(mode: str, device: str) -> Iterator[None]:
    """bf16 autocast on the device, or nothing."""
    if mode == "bf16":
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
            yield
    else:
        yield


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fmnist-cnn", help="zoo name (default fmnist-cnn)")
    parser.add_argument("--data", default="fashion-mnist", help="data spec (default fashion-mnist)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads on CPU (0: torch's default)")
    parser.add_argument("--autocast", choices=("none", "bf16"), default="none")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, images, labels = load(args)

    runs: Dict[str, Callable[[], object]] = {
        "bare loop (10 fwd+bwd)": lambda: bare_loop(model, images, labels),
        "gradconceal PGD, early stop off": lambda: PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS,
                                                       early_stop=False).perturb(images, labels),
        "gradconceal PGD (early stop)": lambda: PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS).perturb(images, labels),
    }
    try:
        import torchattacks

        reference = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
        runs["torchattacks PGD"] = lambda: reference(images, labels)
    except ImportError:
        print("torchattacks not installed: its row is left out")

    with precision(args.autocast, args.device):
        with torch.random.fork_rng(devices=[images.device] if images.is_cuda else []):
            results = time_runs(runs, args.device, args.repeats)
        fooled = PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS).perturb(images, labels)

    bare = results["bare loop (10 fwd+bwd)"][0]
    print(f"PGD-Linf eps=8/255 alpha=2/255 steps=10 | model={args.model} data={args.data} batch={args.batch} "
          f"device={args.device} threads={torch.get_num_threads()} autocast={args.autocast} repeats={args.repeats}")
    print(f"share of images PGD does not fool {fooled.robust_accuracy:.3f}, "
          f"samples stopped early {int(fooled.stopped_early.sum())}")
    print(f"{'run':34s} {'median s':>9s} {'x bare':>7s} {'peak MiB':>9s}")
    for name, (seconds, peak) in results.items():
        memory = f"{peak / 2**20:9.1f}" if peak is not None else f"{'-':>9s}"
        print(f"{name:34s} {seconds:9.4f} {seconds / bare:7.3f} {memory}")
    print("reproduce: python benchmarks/bench_attacks.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
