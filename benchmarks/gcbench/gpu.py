"""GPU throughput: lite0 PGD-Linf-10 images/s in float32 and bf16 autocast, torch.compile off and on, and GCM
overhead on the GPU. Runs only where CUDA is available (``python benchmarks/run.py --device cuda --only gpu``);
elsewhere it reports one row saying why it was skipped.

CUDA graphs are not timed separately: our attacks shrink the batch as samples are fooled (early stop),
which a captured graph cannot follow; ``torch.compile(mode="reduce-overhead")`` uses CUDA graphs where
shapes stay fixed and is one of the timed variants.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Dict, List, Tuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from gcbench.context import BenchContext
from gcbench.results import Row
from gcbench.timing import median, paired_ratio

log = logging.getLogger(__name__)

NAME = "gpu"
TITLE = "GPU: lite0 PGD-10 throughput (fp32 / bf16, torch.compile off / on) and GCM overhead"
BATCHES = (64, 128, 256)


def skip_reason(ctx: BenchContext) -> str:
    """Why the GPU measurements cannot run here ('' when they can)."""
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    if ctx.device.type != "cuda":
        return "the suite runs on the CPU; rerun with --device cuda"
    return ""


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for dtype 'bf16'; no change for 'fp32'."""
    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _largest_batch(ctx: BenchContext, model: nn.Module) -> int:
    """The largest batch of BATCHES whose forward+backward fits in GPU memory with room to spare."""
    chosen = BATCHES[0]
    for batch in BATCHES:
        images, labels = ctx.batch("photos", batch)
        try:
            x = images.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(x), labels), x)
            del grad
            torch.cuda.synchronize(ctx.device)
            chosen = batch
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
    return chosen


def run(ctx: BenchContext) -> List[Row]:
    """PGD-10 images/s for each (dtype, compile) variant; GCM forward overhead in fp32 and bf16."""
    reason = skip_reason(ctx)
    if reason:
        return [Row(NAME, "lite0 PGD-Linf-10 throughput", "skipped", "skipped", note=reason)]
    from gradconceal.attacks import PGD
    from gradconceal.defenses import conceal

    base = ctx.model("lite0")
    batch = _largest_batch(ctx, base)
    # The model's own predictions as labels: ours skips samples it already gets wrong, and images/s counts
    # only attacked images then (with the photos' labels, 2 of lite0's 9 photos would be skipped).
    images, labels = ctx.predicted_batch("lite0", "photos", batch)
    rows: List[Row] = []
    device_name = torch.cuda.get_device_name(ctx.device)
    variants: Dict[str, Tuple[nn.Module, str]] = {"fp32": (base, "fp32"), "bf16 autocast": (base, "bf16")}
    for mode in ("default", "reduce-overhead"):
        try:
            compiled = cast(nn.Module, torch.compile(base, mode=mode))  # an OptimizedModule
        except RuntimeError as error:  # torch.compile unavailable on this install
            rows.append(Row(NAME, f"lite0 b{batch} compile {mode}", "skipped", "skipped", note=str(error)[:200]))
            continue
        variants[f"fp32 compile {mode}"] = (compiled, "fp32")
        variants[f"bf16 autocast compile {mode}"] = (compiled, "bf16")
    calls: Dict[str, Callable[[], object]] = {}
    for name, (model, dtype) in variants.items():
        attack = PGD(model, norm="linf", eps=8 / 255, steps=10, early_stop=False)

        def call(attack: PGD = attack, dtype: str = dtype) -> object:
            with autocast(ctx.device, dtype):
                return attack.perturb(images, labels)

        try:
            call()  # compiles and warms up
        except (RuntimeError, torch.cuda.OutOfMemoryError) as error:
            rows.append(Row(NAME, f"lite0 b{batch} {name}", "PGD-Linf-10 images/s", "failed", note=str(error)[:200]))
            continue
        calls[name] = call
    times = ctx.time(calls, warmup=1)
    for name, values in times.items():
        rows.append(Row(NAME, f"lite0 b{batch} {name}", "PGD-Linf-10 images/s", batch / median(values), "img/s",
                        note=f"{device_name}; speed-up over fp32 {paired_ratio(times['fp32'], values):.2f}x"
                        if "fp32" in times else device_name, detail={"seconds": values}))

    defended = conceal(base).eval()
    for dtype in ("fp32", "bf16"):
        def forward(model: nn.Module, dtype: str = dtype) -> Callable[[], object]:
            def call() -> object:
                with torch.no_grad(), autocast(ctx.device, dtype):
                    return model(images)
            return call

        found = ctx.time({"undefended": forward(base), "defended": forward(defended)})
        rows.append(Row(NAME, f"lite0 b{batch} {dtype}", "GCM forward: defended / undefended",
                        paired_ratio(found["defended"], found["undefended"]), "x", ("<=", 1.02),
                        note=device_name, detail={"seconds": found}))
    return rows
