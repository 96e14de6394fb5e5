"""PGD-Linf-10, PGD-L2-10 and FGSM: ours vs torchattacks vs the bare loop, same model, batch and device.

Labels are the model's own clean predictions, so every side attacks every sample (ours would otherwise
skip the misclassified ones). Ours runs twice: with early stop off (the same gradient evaluations as the
others, plus the clean check and the verification of the final iterate that every ``perturb`` does: two
forward passes the others do not make, counted in the table) and on (samples leave the batch once fooled).
Targets (issue 8): PGD <= 1.1 x the bare loop; no slower than torchattacks without early stop and
<= 0.8 x torchattacks with it on a vanilla model. FGSM has no target: one gradient against two
forward-only passes (clean check, verification) that torchattacks does not do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import torch
from torch import Tensor, nn

from gcbench.bare import bare_fgsm, bare_pgd
from gcbench.context import BenchContext
from gcbench.profiling import write_profiles
from gcbench.results import Row
from gcbench.timing import median, paired_ratio

log = logging.getLogger(__name__)

NAME = "attacks"
TITLE = "PGD-Linf-10, PGD-L2-10, FGSM: ours vs torchattacks vs the bare loop"
BARE_TARGET = 1.1
TORCHATTACKS_TARGET = 1.0
EARLY_STOP_TARGET = 0.8


@dataclass(frozen=True)
class AttackCase:
    """One attack setting timed on every side."""

    label: str
    attack: str  # "pgd" or "fgsm"
    norm: str
    eps: float
    steps: int

    @property
    def alpha(self) -> float:
        return 2.5 * self.eps / self.steps


def attack_cases(l2_eps: float) -> List[AttackCase]:
    """PGD-Linf-10 (8/255), PGD-L2-10 (``l2_eps``) and FGSM (8/255)."""
    return [AttackCase("PGD-Linf-10", "pgd", "linf", 8 / 255, 10), AttackCase("PGD-L2-10", "pgd", "l2", l2_eps, 10),
            AttackCase("FGSM", "fgsm", "linf", 8 / 255, 1)]


def contenders(model: nn.Module, images: Tensor, labels: Tensor, case: AttackCase) -> Dict[str, Callable[[], object]]:
    """Callables running ``case`` on the batch: bare, ours (early stop off / on), torchattacks."""
    import torchattacks

    from gradconceal.attacks import FGSM, PGD, Attack

    generator = torch.Generator(device=images.device)
    if case.attack == "pgd":
        ours_off: Attack = PGD(model, norm=case.norm, eps=case.eps, steps=case.steps, alpha=case.alpha, early_stop=False)
        ours_on: Attack = PGD(model, norm=case.norm, eps=case.eps, steps=case.steps, alpha=case.alpha, early_stop=True)
        if case.norm == "linf":
            theirs = torchattacks.PGD(model, eps=case.eps, alpha=case.alpha, steps=case.steps, random_start=True)
        else:
            theirs = torchattacks.PGDL2(model, eps=case.eps, alpha=case.alpha, steps=case.steps, random_start=True)

        def bare() -> Tensor:
            generator.manual_seed(0)
            return bare_pgd(model, images, labels, norm=case.norm, eps=case.eps, alpha=case.alpha, steps=case.steps,
                            generator=generator)
    else:
        ours_off = FGSM(model, norm=case.norm, eps=case.eps)
        ours_on = ours_off
        theirs = torchattacks.FGSM(model, eps=case.eps)

        def bare() -> Tensor:
            return bare_fgsm(model, images, labels, eps=case.eps)

    def torchattacks_call() -> Tensor:
        with torch.random.fork_rng(devices=[images.device] if images.device.type == "cuda" else []):
            return theirs(images, labels)

    def torchattacks_scored() -> Tensor:
        # what a user of torchattacks adds to get AR or robust accuracy: a clean and an adversarial forward
        with torch.no_grad():
            correct = model(images).argmax(1) == labels
        adversarial = torchattacks_call()
        with torch.no_grad():
            return correct & (model(adversarial).argmax(1) == labels)

    sides: Dict[str, Callable[[], object]] = {
        "bare": bare,
        "ours": lambda: ours_off.perturb(images, labels),
        "torchattacks": torchattacks_call,
        "torchattacks + scoring": torchattacks_scored,
    }
    if case.attack == "pgd":
        sides["ours, early stop"] = lambda: ours_on.perturb(images, labels)
        clean: List[Tensor] = []

        def ours_given_clean() -> object:
            # as the runner calls it: the clean logits it already has for clean accuracy are passed in
            # (computed once, at the first call, under the caller's autocast)
            if not clean:
                with torch.no_grad():
                    clean.append(model(images))
            return ours_off.perturb(images, labels, clean_logits=clean[0])

        sides["ours, clean logits given"] = ours_given_clean
    return sides


def count_passes(model: nn.Module, fn: Callable[[], object]) -> Tuple[int, int]:
    """(forward passes, backward passes) of ``model`` during one call of ``fn``, counted with hooks."""
    counts = [0, 0]

    def forward_hook(module: nn.Module, args: object, output: Tensor) -> None:
        counts[0] += 1
        if isinstance(output, Tensor) and output.requires_grad:
            output.register_hook(lambda grad: counts.__setitem__(1, counts[1] + 1))

    handle = model.register_forward_hook(forward_hook)
    try:
        fn()
    finally:
        handle.remove()
    return counts[0], counts[1]


def fooled_share(model: nn.Module, adversarial: Tensor, labels: Tensor) -> float:
    """Share of the batch misclassified on ``adversarial``."""
    with torch.no_grad():
        return float((model(adversarial).argmax(1) != labels).float().mean())


def run_case(ctx: BenchContext, model_name: str, source: str, batch: int, cases: List[AttackCase],
             repeats: int, warmup: int = 1) -> List[Row]:
    """Time every attack of ``cases`` on one model and batch; profile any miss of the bare-loop target."""
    model = ctx.model(model_name)
    images, labels = ctx.predicted_batch(model_name, source, batch)
    rows: List[Row] = []
    where = f"{model_name} b{batch}"
    for case in cases:
        sides = contenders(model, images, labels, case)
        times = ctx.time(sides, repeats, warmup=warmup)
        medians = {name: median(values) for name, values in times.items()}
        per_image = ", ".join(f"{name} {value / batch * 1e3:.1f}" for name, value in medians.items())
        label = f"{where} {case.label}"
        is_pgd = case.attack == "pgd"
        vs_bare = paired_ratio(times["ours"], times["bare"])
        note = f"ms/image: {per_image}"
        if is_pgd and vs_bare > BARE_TARGET and ctx.out_dir is not None:
            path = write_profiles(ctx.subdir("profiles") / f"{model_name}-{case.label}.txt",
                                  {"ours": sides["ours"], "bare": sides["bare"]}, device=ctx.device)
            note += f"; profile: {path.name}"
        rows.append(Row(NAME, label, "ours / bare loop", vs_bare, "x", ("<=", BARE_TARGET) if is_pgd else None,
                        note=note, detail={"seconds": times, "batch": batch}))
        rows.append(Row(NAME, label, "ours / torchattacks", paired_ratio(times["ours"], times["torchattacks"]), "x",
                        ("<=", TORCHATTACKS_TARGET) if is_pgd else None))
        rows.append(Row(NAME, label, "ours / torchattacks + scoring",
                        paired_ratio(times["ours"], times["torchattacks + scoring"]), "x",
                        note="same output: both sides end with per-image success (clean and adversarial forward)"))
        if is_pgd:
            ours_fooled = float(sides["ours, early stop"]().fooled.float().mean())  # type: ignore[attr-defined]
            theirs_fooled = fooled_share(model, sides["torchattacks"](), labels)  # type: ignore[arg-type]
            # The target is for a vanilla model on which most samples fall; early stop cannot save the
            # steps of samples that never fall.
            most_fall = ours_fooled >= 0.5
            rows.append(Row(NAME, label, "ours with early stop / torchattacks",
                            paired_ratio(times["ours, early stop"], times["torchattacks"]), "x",
                            ("<=", EARLY_STOP_TARGET) if most_fall else None,
                            note=f"fooled: ours {ours_fooled:.0%}, torchattacks {theirs_fooled:.0%}"
                                 + ("" if most_fall else "; no target: most samples never fall here")))
        rows.append(Row(NAME, label, "torchattacks / bare loop", paired_ratio(times["torchattacks"], times["bare"]), "x"))
        calls = {name: count_passes(model, sides[name]) for name in ("bare", "ours", "torchattacks")}
        rows.append(Row(NAME, label, "model passes per call: bare / ours / torchattacks",
                        " / ".join(f"{f} fwd + {b} bwd" for f, b in calls.values()),
                        note="ours: + the clean check, and the final check of images not already seen fooled"))
    return rows


def run(ctx: BenchContext) -> List[Row]:
    """The Fashion-MNIST CNN (batch 128; quick 64) for all three attacks; lite0 (batch 4) PGD-Linf-10 in full mode."""
    rows = run_case(ctx, "fmnist-cnn", "fashion-mnist", ctx.pick(64, 128), attack_cases(l2_eps=1.5), ctx.repeats)
    if not ctx.quick:
        # lite0 is already warm from the GCM measurement; one PGD-10 on it costs seconds, so no warm-up round
        rows += run_case(ctx, "lite0", "photos", 4, attack_cases(l2_eps=8.0)[:1], 3, warmup=0)
    return rows
