"""Leave the user's things as found: the global random generators and a model's buffers and modes.

``preserved_rng()`` gives back torch's CPU and CUDA generators, numpy's global generator and Python's
``random`` as they were before the block; ``preserved_model(model)`` gives back every buffer (batch-norm
running statistics, ``num_batches_tracked``) and every submodule's training flag. Attacks, the audit and the
evaluation run inside them, so that calling gradconceal changes nothing the caller owns.
"""

from __future__ import annotations

import contextlib
import random
from typing import Dict, Iterator, List, Tuple

import numpy
import torch
from torch import Tensor, nn

__all__ = ["preserved_model", "preserved_rng"]


def _cuda_devices() -> List[int]:
    """The CUDA devices whose generators may have state to keep (none when CUDA was never initialised)."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return []
    return list(range(torch.cuda.device_count()))


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Within the block draw from the global generators as usual; afterwards they are as they were before.

    Covers torch's CPU generator and every initialised CUDA device's (``torch.random.fork_rng``), numpy's
    global ``RandomState`` and Python's ``random``.
    """
    numpy_state = numpy.random.get_state()
    python_state = random.getstate()
    with torch.random.fork_rng(devices=_cuda_devices()):
        try:
            yield
        finally:
            numpy.random.set_state(numpy_state)
            random.setstate(python_state)


@contextlib.contextmanager
def preserved_model(model: nn.Module) -> Iterator[None]:
    """Within the block the model runs as it is (its mode is kept); afterwards every buffer holds its old
    values again (the same tensor objects, restored in place) and every submodule has its old training flag.

    A forward pass in training mode updates batch-norm running statistics and ``num_batches_tracked``; an
    attack or an audit must not leave those changes behind.
    """
    modes = [(module, module.training) for module in model.modules()]
    saved: List[Tuple[nn.Module, str, Tensor, Tensor]] = []
    names: Dict[int, set] = {}
    for module in model.modules():
        names[id(module)] = set(module._buffers)
        for name, buffer in module._buffers.items():
            if buffer is not None:
                saved.append((module, name, buffer, buffer.detach().clone()))
    try:
        yield
    finally:
        with torch.no_grad():
            for module, name, original, values in saved:
                module._buffers[name] = original
                if original.shape == values.shape:
                    original.copy_(values)
                else:  # resized in place (rare): give it its old size back
                    original.set_(values)  # type: ignore[call-overload]  # torch's stubs lack the documented set_(Tensor)
            for module, _ in modes:
                for name in set(module._buffers) - names.get(id(module), set()):
                    del module._buffers[name]
        for module, training in modes:
            module.training = training
