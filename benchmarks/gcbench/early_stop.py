"""Early stop: gradient evaluations and time of our PGD with and without dropping fooled samples.

On a vanilla model most samples fall within a few steps, so dropping them saves most of the work. On a
GCM model plain PGD fools almost nothing (the gradient is noise), so early stop saves nothing there and
should cost nothing either (it checks every ``check_every`` steps).
"""

from __future__ import annotations

from typing import Callable, Dict, List

from gcbench.context import BenchContext
from gcbench.results import Row
from gcbench.timing import median, paired_ratio
from gradconceal.defenses import conceal

NAME = "early-stop"
TITLE = "early stop: gradient evaluations and time, PGD-Linf-10, vanilla and GCM"


def run(ctx: BenchContext) -> List[Row]:
    """PGD-Linf-10 (8/255) with early stop on and off, on the vanilla and the GCM model."""
    from gradconceal.attacks import PGD, AttackResult

    cases = [("fmnist-cnn", "fashion-mnist", ctx.pick(64, 128), ctx.repeats)]
    if not ctx.quick:
        cases.append(("lite0", "photos", 4, 2))  # two timed rounds: one PGD-10 on lite0 costs seconds
    rows: List[Row] = []
    for model_name, source, batch, repeats in cases:
        base = ctx.model(model_name)
        images, labels = ctx.batch(source, batch)
        for defense, model in (("vanilla", base), ("gcm", conceal(base).eval())):
            on = PGD(model, norm="linf", eps=8 / 255, steps=10, early_stop=True)
            off = PGD(model, norm="linf", eps=8 / 255, steps=10, early_stop=False)
            last: Dict[str, AttackResult] = {}

            def call(name: str, attack: PGD) -> Callable[[], AttackResult]:
                def timed() -> AttackResult:
                    last[name] = attack.perturb(images, labels)
                    return last[name]
                return timed

            times = ctx.time({"on": call("on", on), "off": call("off", off)}, repeats, warmup=0)
            result_on, result_off = last["on"], last["off"]
            attacked = result_on.clean_correct
            evals_on = float(result_on.grad_evals[attacked].float().mean()) if bool(attacked.any()) else float("nan")
            evals_off = float(result_off.grad_evals[attacked].float().mean()) if bool(attacked.any()) else float("nan")
            case = f"{model_name} b{batch} {defense}"
            fooled = (f"fooled: {float(result_on.fooled[attacked].float().mean()):.0%} with, "
                      f"{float(result_off.fooled[attacked].float().mean()):.0%} without")
            rows.append(Row(NAME, case, "grad evals per attacked sample: early stop on / off",
                            evals_on / evals_off if evals_off else float("nan"), "x",
                            note=f"{evals_on:.2f} vs {evals_off:.2f}; {fooled}",
                            detail={"grad_evals_on": evals_on, "grad_evals_off": evals_off}))
            rows.append(Row(NAME, case, "time: early stop on / off", paired_ratio(times["on"], times["off"]), "x",
                            note=f"{median(times['on']) / batch * 1e3:.1f} vs {median(times['off']) / batch * 1e3:.1f} "
                                 "ms/image", detail={"seconds": times}))
    return rows
