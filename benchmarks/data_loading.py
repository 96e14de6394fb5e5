"""Decoded 224-px images per second from an ImageNet-layout folder of JPEGs, with 0, 1, 2 DataLoader workers.

Builds a synthetic folder in a temporary directory (one folder per synset; JPEGs cut from the shipped sample
photos with random crops, flips and ImageNet-like sizes, so no two files are alike), then times
``FileImageDataset.preload(workers=W)``: read, decode, resize 256, centre-crop 224, into one float32 cache.
The worker counts are timed in turns (0, 1, 2, then 1, 2, 0, ...), so load drift hits all alike; wall time,
since the workers are other processes. Each round starts its workers afresh: their start-up is in the time.
Images per CPU second (this process and its joined workers) show the workers' overhead apart from the load.

    python benchmarks/data_loading.py                    # 300 images, 3 rounds, workers 0 1 2
    python benchmarks/data_loading.py --images 1000 --workers 0 2 4 8
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch
from PIL import Image

from gradconceal.data import imagenet_synsets, open_rgb
from gradconceal.data.imagenet import load_imagenet
from gradconceal.data.photos import photo_path, photo_records


def write_folder(root: Path, images: int, *, seed: int = 0) -> int:
    """Write ``images`` JPEGs under ``root`` in the one-folder-per-synset layout; returns their total bytes."""
    rng = random.Random(seed)
    records = photo_records()
    photos = [open_rgb(photo_path(record)) for record in records]
    synsets = imagenet_synsets()
    total = 0
    for number in range(images):
        which = number % len(records)
        photo = photos[which]
        side = rng.uniform(0.5, 1.0)
        width, height = int(photo.width * side), int(photo.height * side)
        left, top = rng.randint(0, photo.width - width), rng.randint(0, photo.height - height)
        crop = photo.crop((left, top, left + width, top + height))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        shorter = rng.choice((333, 375, 400, 500))  # ImageNet validation images: mostly 500 x 375 or 375 x 500
        scale = shorter / min(crop.size)
        crop = crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.Resampling.BICUBIC)
        folder = root / synsets[int(records[which]["labels"][0])]
        folder.mkdir(exist_ok=True)
        path = folder / f"ILSVRC2012_val_{number:08d}.JPEG"
        crop.save(path, quality=rng.randint(75, 95))
        total += path.stat().st_size
    return total


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished (joined) children: the workers' work counts too."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def measure(
    root: Path, workers: Sequence[int], rounds: int, batch_size: int
) -> Tuple[Dict[int, List[float]], Dict[int, List[float]]]:
    """Per worker count, ``rounds`` times each, in turns: images per wall second and per CPU second of a preload."""
    rates: Dict[int, List[float]] = {count: [] for count in workers}
    cpu_rates: Dict[int, List[float]] = {count: [] for count in workers}
    load_imagenet(root).preload(range(min(8, len(workers) * 4)), progress=False)  # warm: imports, first decode
    for round_number in range(rounds):
        shift = round_number % len(workers)
        for count in list(workers[shift:]) + list(workers[:shift]):
            dataset = load_imagenet(root)
            started, cpu_started = time.perf_counter(), _cpu_seconds()
            dataset.preload(workers=count, batch_size=batch_size, progress=False)
            seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
            rates[count].append(len(dataset) / seconds)
            cpu_rates[count].append(len(dataset) / cpu)
            print(f"  round {round_number + 1}: {count} workers, {seconds:6.2f} s, {rates[count][-1]:6.1f} images/s, "
                  f"{cpu:6.2f} CPU s", file=sys.stderr)
    return rates, cpu_rates


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="JPEGs in the synthetic folder (default 300)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts (default 0 1 2)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per worker count (default 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per DataLoader batch (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process (default 1)")
    args = parser.parse_args(list(argv))
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="gradconceal-imagenet-") as temp:
        root = Path(temp)
        started = time.perf_counter()
        size = write_folder(root, args.images)
        print(f"wrote {args.images} JPEGs ({size / 1e6:.1f} MB, {len(list(root.iterdir()))} synsets) in "
              f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
        rates, cpu_rates = measure(root, args.workers, args.rounds, args.batch_size)
    base = statistics.median(rates[args.workers[0]])
    print(f"\ncommand: python benchmarks/data_loading.py {' '.join(argv)}".rstrip())
    print(f"machine: {os.cpu_count()} CPUs ({platform.machine()}), load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}, Python {platform.python_version()}, torch "
          f"{torch.__version__}, {args.images} JPEGs, batch {args.batch_size}, {args.rounds} rounds\n")
    print(f"| workers | images/s (median) | rounds | vs. {args.workers[0]} workers | images per CPU second |")
    print("|---|---|---|---|---|")
    for count in args.workers:
        median = statistics.median(rates[count])
        spread = ", ".join(f"{rate:.0f}" for rate in rates[count])
        per_cpu = statistics.median(cpu_rates[count])
        print(f"| {count} | {median:.1f} | {spread} | {median / base:.2f}x | {per_cpu:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
