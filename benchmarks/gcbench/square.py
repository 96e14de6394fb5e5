"""Square: queries to success on vanilla and GCM lite0, ours vs torchattacks' Square at the same budget.

Square never looks at a gradient, so GCM should not change its query counts (GCM's forward is almost
the identity). Labels are the model's clean top-1 on each photo, so every image is attacked. Both sides
get the same budget: ours ``n_queries`` counts the initial point, torchattacks' counts iterations after
it, so torchattacks runs with ``n_queries - 1``. Ours checks for success after every query here
(``check_every=1``), as torchattacks does, so the counts compare; the default (every 3rd query) can spend
up to 2 more queries per image.
"""

from __future__ import annotations

import math
from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn

from gcbench.context import BenchContext
from gcbench.results import Row
from gcbench.timing import median, time_once
from gradconceal.defenses import conceal

NAME = "square"
TITLE = "Square: queries to success, vanilla and GCM lite0, ours vs torchattacks"
EPS = 8 / 255


def _stats(queries: List[float]) -> Tuple[float, float]:
    if not queries:
        return float("nan"), float("nan")
    return median(queries), sum(queries) / len(queries)


def ours_queries(model: nn.Module, images: Tensor, labels: Tensor, budget: int) -> Tuple[List[float], int, int]:
    """(queries of each fooled image, queries spent in all, images fooled) for our Square."""
    from gradconceal.attacks import Square

    attack = Square(model, norm="linf", eps=EPS, n_queries=budget, p_init=0.8, check_every=1)
    result = attack.perturb(images, labels, sample_seeds=list(range(images.shape[0])))
    spent = (result.forward_evals - 2).clamp_min(0)  # minus the clean check and the final verification
    fooled = result.fooled & result.clean_correct
    return [float(q) for q in spent[fooled].tolist()], int(spent.sum()), int(fooled.sum())


def torchattacks_queries(model: nn.Module, images: Tensor, labels: Tensor, budget: int) -> Tuple[List[float], int, int]:
    """(queries of each fooled image, queries spent in all, images fooled) for torchattacks' Square."""
    import torchattacks

    attack = torchattacks.Square(model, norm="Linf", eps=EPS, n_queries=budget - 1, n_restarts=1, p_init=0.8,
                                 loss="margin", seed=0)
    devices = [images.device] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(0)
        attack.init_hyperparam(images)
        queries, adversarial = attack.attack_single_run(images, labels)
        fooled = model(adversarial).argmax(1) != labels
    return [float(q) for q in queries[fooled].tolist()], int(queries.sum()), int(fooled.sum())


def run(ctx: BenchContext) -> List[Row]:
    """Our Square and torchattacks' on the first photos, vanilla and GCM lite0."""
    count, budget = ctx.pick((4, 150), (9, 1000))
    base = ctx.model("lite0")
    images, _ = ctx.batch("photos", count)
    with torch.no_grad():
        labels = base(images).argmax(1)
    rows: List[Row] = []
    for defense, model in (("vanilla", base), ("gcm", conceal(base).eval())):
        found: Dict[str, Tuple[List[float], int, int]] = {}
        seconds: Dict[str, float] = {}
        for side, fn in (("ours", ours_queries), ("torchattacks", torchattacks_queries)):
            holder: Dict[str, Tuple[List[float], int, int]] = {}
            seconds[side] = time_once(lambda: holder.setdefault("r", fn(model, images, labels, budget)), ctx.device,
                                      ctx.clock)
            found[side] = holder["r"]
        case = f"lite0 {defense} {count} photos, {budget} queries"
        for side in ("ours", "torchattacks"):
            queries, spent, fooled = found[side]
            med, mean = _stats(queries)
            rows.append(Row(NAME, case, f"{side}: median / mean queries to success", f"{med:.0f} / {mean:.1f}",
                            note=f"fooled {fooled}/{count}; {spent} queries spent; "
                                 f"{seconds[side] / max(spent, 1) * 1e3:.1f} ms/query",
                            detail={"queries": queries, "spent": spent, "fooled": fooled, "seconds": seconds[side]}))
        per_query = {s: seconds[s] / max(found[s][1], 1) for s in seconds}
        rows.append(Row(NAME, case, "time per query: ours / torchattacks",
                        per_query["ours"] / per_query["torchattacks"] if per_query["torchattacks"] else math.nan, "x"))
    return rows
