"""Where an evaluation runs: the torch device of a spec, and this process's place in a torchrun job."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Tuple

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
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size()), device_name
