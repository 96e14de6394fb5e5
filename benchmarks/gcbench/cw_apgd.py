"""C&W-L2 and APGD: time per image, ours vs torchattacks, at the same number of gradient steps.

torchattacks' C&W runs one constant ``c`` (no binary search), so ours runs with ``binary_search_steps=1``
and ``initial_const=c`` for the like-for-like row; a second row shows ours with early stop. APGD: both
run ``steps`` iterations and one restart (one more gradient for the start point, on both sides).
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch
from torch import Tensor

from gcbench.context import BenchContext
from gcbench.results import Row
from gcbench.timing import median, paired_ratio

NAME = "cw-apgd"
TITLE = "C&W-L2 and APGD: time per image vs torchattacks"


def _forked(fn: Callable[[], Tensor], device: torch.device) -> Callable[[], Tensor]:
    """``fn`` with torch's global RNG saved and restored around it (torchattacks draws from it)."""

    def call() -> Tensor:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return fn()

    return call


def run(ctx: BenchContext) -> List[Row]:
    """C&W-L2 (eps 1.5 on 28x28 images) and APGD-CE Linf 8/255 on the Fashion-MNIST CNN, batch 64."""
    import torchattacks

    from gradconceal.attacks import APGD, CW

    batch = 64
    cw_steps, apgd_steps = ctx.pick((20, 10), (50, 50))
    model = ctx.model("fmnist-cnn")
    images, labels = ctx.predicted_batch("fmnist-cnn", "fashion-mnist", batch)  # every side attacks every sample
    device = images.device
    sides: Dict[str, Dict[str, Callable[[], object]]] = {}

    cw_off = CW(model, eps=1.5, steps=cw_steps, binary_search_steps=1, initial_const=1.0, lr=0.01, early_stop=False)
    cw_on = CW(model, eps=1.5, steps=cw_steps, binary_search_steps=1, initial_const=1.0, lr=0.01, early_stop=True)
    cw_theirs = torchattacks.CW(model, c=1.0, kappa=0, steps=cw_steps, lr=0.01)
    sides[f"C&W-L2 {cw_steps} steps"] = {
        "ours": lambda: cw_off.perturb(images, labels),
        "ours, early stop": lambda: cw_on.perturb(images, labels),
        "torchattacks": _forked(lambda: cw_theirs(images, labels), device),
    }
    apgd_off = APGD(model, norm="linf", eps=8 / 255, steps=apgd_steps, loss="ce", early_stop=False)
    apgd_on = APGD(model, norm="linf", eps=8 / 255, steps=apgd_steps, loss="ce", early_stop=True)
    apgd_theirs = torchattacks.APGD(model, norm="Linf", eps=8 / 255, steps=apgd_steps, n_restarts=1, loss="ce", seed=0)
    sides[f"APGD-CE Linf {apgd_steps} steps"] = {
        "ours": lambda: apgd_off.perturb(images, labels),
        "ours, early stop": lambda: apgd_on.perturb(images, labels),
        "torchattacks": _forked(lambda: apgd_theirs(images, labels), device),
    }
    rows: List[Row] = []
    for label, contenders in sides.items():
        times = ctx.time(contenders, max(2, min(3, ctx.repeats - 1)), warmup=0)
        per_image = {name: median(values) / batch * 1e3 for name, values in times.items()}
        case = f"fmnist-cnn b{batch} {label}"
        rows.append(Row(NAME, case, "time per image: ours / torchattacks",
                        paired_ratio(times["ours"], times["torchattacks"]), "x",
                        note=f"ms/image: ours {per_image['ours']:.1f}, torchattacks {per_image['torchattacks']:.1f}",
                        detail={"seconds": times, "batch": batch}))
        rows.append(Row(NAME, case, "time per image: ours with early stop / torchattacks",
                        paired_ratio(times["ours, early stop"], times["torchattacks"]), "x",
                        note=f"ms/image: {per_image['ours, early stop']:.1f}"))
    return rows
