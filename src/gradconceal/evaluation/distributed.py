"""Where an evaluation runs: the torch device of a spec, and this process's place in a torchrun job."""

from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Tuple

import torch

from gradconceal.errors import GradconcealError


def resolve_device(name: str) -> torch.device:
    """The torch device of a spec's ``device`` (``auto``: CUDA when present); clear error when it is missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GradconcealError(f"device {name!r} asked for, but no CUDA device is available (use 'cpu' or 'auto')")
        index = int(name.split(":", 1)[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise GradconcealError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise GradconcealError("device 'mps' asked for, but it is not available (use 'cpu' or 'auto')")
    return torch.device(name)


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def all_ok(self, ok: bool, device: torch.device) -> bool:
        """True when every process reports ``ok`` (so that one process's error stops all, instead of a hang)."""
        if not self.active:
            return ok
        flag = torch.tensor([1 if ok else 0], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item())


def shard_images(n_images: int, batch_size: int, world_size: int, rank: int) -> List[int]:
    """The indices among ``range(n_images)`` that process ``rank`` of ``world_size`` evaluates: whole blocks of
    ``batch_size`` indices, every ``world_size``-th block (block k = images [k * batch_size, (k + 1) * batch_size)
    goes to rank k % world_size), so each batch holds the images it holds in one process and a torchrun job's
    records are bit for bit one process's."""
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise GradconcealError(f"cannot shard with batch_size={batch_size}, world_size={world_size}, rank={rank}")
    return [i for i in range(n_images) if (i // batch_size) % world_size == rank]


def uneven_subsets(subsets: Mapping[str, int], batch_size: int, world_size: int,
                   tolerance: float = 1.25) -> List[str]:
    """Warnings for attacks run on the first n images only (``subsets``: label -> n) whose images fall unevenly
    on the processes of a torchrun job: the first n images are the first ceil(n / batch_size) blocks, so with
    n = 100, batch_size = 100 and 2 processes rank 0 attacks all of them while rank 1 waits. One line per n
    whose busiest process gets more than ``tolerance`` times an even share, naming the labels and a batch size
    that spreads them (records do not depend on the batch size, beyond the last bits of float rounding)."""
    if world_size <= 1:
        return []
    by_n: Dict[int, List[str]] = {}
    for label, n in subsets.items():
        by_n.setdefault(n, []).append(label)
    notes = []
    for n, labels in sorted(by_n.items()):
        counts = [len(shard_images(n, batch_size, world_size, rank)) for rank in range(world_size)]
        if max(counts) <= tolerance * n / world_size:
            continue
        busiest = counts.index(max(counts))
        named = ", ".join(repr(label) for label in labels[:3]) + (f" and {len(labels) - 3} more" if len(labels) > 3 else "")
        notes.append(f"{len(labels)} attack(s) ({named}) run on the first {n} image(s): {math.ceil(n / batch_size)} "
                     f"batch(es) of batch_size {batch_size}, so the {world_size} processes attack {counts} of them "
                     f"and rank {busiest} does {100 * max(counts) / n:.0f} % of that work while the others wait; "
                     f"batch_size {max(1, math.ceil(n / world_size))} (or an n that is a multiple of "
                     f"{batch_size * world_size}) spreads them evenly")
    return notes


BARRIER_TIMEOUT = datetime.timedelta(days=7)  # how long a finished process waits for the others


def setup_distributed(device_name: str) -> Tuple[Distributed, str]:
    """Join the torchrun job when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA); returns it and the device name."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(), device_name
    import torch.distributed as dist

    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device_name = f"cuda:{local_rank}"
    if not dist.is_initialized():
        # The processes wait for each other only at the start and the end, and the work between is uneven (an
        # attack on the first n images may fall to one process for hours); with the default 30-minute timeout the
        # finished processes died at the final barrier and took the job with them. torchrun's agent still stops
        # the whole job when a process dies, so a long timeout never leaves one waiting for a dead peer.
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=BARRIER_TIMEOUT)
    return Distributed(dist.get_rank(), dist.get_world_size()), device_name
