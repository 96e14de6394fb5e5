"""torch.profiler summaries, written next to the results when a measurement misses its target.

A profile names the operators where the time goes; comparing ours with the bare loop's shows what the
extra time is spent on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch.profiler import ProfilerActivity, profile

log = logging.getLogger(__name__)


def profile_table(fn: Callable[[], object], *, rows: int = 20, device: torch.device = torch.device("cpu")) -> str:
    """The operator table (self CPU time, top ``rows``) of one call of ``fn``."""
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, record_shapes=False) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort_by, row_limit=rows)


def write_profiles(path: Path, contenders: Mapping[str, Callable[[], object]], *,
                   device: torch.device = torch.device("cpu")) -> Path:
    """Profile each contender once (after one warm-up call) and write their tables to ``path``."""
    parts = []
    for name, fn in contenders.items():
        fn()
        parts.append(f"== {name} ==\n{profile_table(fn, device=device)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    log.info("profile written to %s", path)
    return path
