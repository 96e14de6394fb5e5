"""Timing helpers: medians, paired ratios and round-robin timing, so that side-by-side numbers share the load.

On a shared machine the speed drifts while a benchmark runs. Timing the contenders in turns (A, B, C, A, B,
C, ...) and taking the median of the per-round ratios cancels most of that drift; a ratio of two medians
taken minutes apart would not. On the CPU with one torch thread the clock is the process's CPU time
(``time.process_time``): the work done, without the time the process waits while other programs run.
Elsewhere (GPU, several threads) it is wall time.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from typing import Callable, Dict, List, Mapping, Sequence

import torch


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (the mean of the middle two for an even count); nan for none."""
    if not values:
        return float("nan")
    return float(statistics.median(values))


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, nan when the denominator is zero or either side is nan."""
    if denominator == 0 or math.isnan(numerator) or math.isnan(denominator):
        return float("nan")
    return numerator / denominator


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median over rounds of ``numerators[i] / denominators[i]``: the ratio of two sides timed in turns."""
    if len(numerators) != len(denominators):
        raise ValueError(f"paired_ratio needs as many numerators as denominators, got {len(numerators)} "
                         f"and {len(denominators)}")
    return median([ratio(a, b) for a, b in zip(numerators, denominators)])


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on the CPU) so that a timer measures finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = ("cpu", "wall")


def default_clock(device: torch.device, threads: int) -> str:
    """'cpu' (process CPU time) for single-threaded CPU work, else 'wall'."""
    return "cpu" if device.type == "cpu" and threads == 1 else "wall"


def time_once(fn: Callable[[], object], device: torch.device = torch.device("cpu"), clock: str = "wall") -> float:
    """Seconds one call of ``fn`` takes (device work included), on ``clock`` ('cpu' or 'wall')."""
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
    now = time.process_time if clock == "cpu" else time.perf_counter
    synchronize(device)
    started = now()
    fn()
    synchronize(device)
    return now() - started


def interleaved(
    contenders: Mapping[str, Callable[[], object]],
    repeats: int,
    *,
    warmup: int = 1,
    device: torch.device = torch.device("cpu"),
    clock: str = "wall",
) -> Dict[str, List[float]]:
    """Seconds per call of each contender, ``repeats`` rounds taken in turns after ``warmup`` untimed rounds.

    The order of the contenders rotates every round, so none always runs right after another's garbage.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(contenders)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            times[name].append(time_once(contenders[name], device, clock))
    return times


def per_item(seconds: float, items: int) -> float:
    """Seconds per item (image, record) of a call that handled ``items``."""
    return seconds / items if items else float("nan")
