"""Clean logits passed into the attacks: PGD-10 time against the bare loop, and the runner's records unchanged.

    python benchmarks/clean_logits.py timing --batch 8 --rounds 5     # PGD-Linf-10 on GCM-lite0, about 10 minutes
    python benchmarks/clean_logits.py records                          # the runner with and without, 4 models

``timing``: ours with the clean logits passed in (as the runner does for a deterministic row), ours making
its own clean forward, and the bare loop (``gcbench.bare.bare_pgd``), timed in turns on one torch thread
(process CPU time), labels the model's own predictions so that every image is attacked. Prints a Markdown
table: median seconds per call and the per-round ratio to the bare loop (median and range).

``records``: evaluates a small spec on each model twice, once as the runner now does and once with the
clean logits never passed (every attack making its own clean forward), and compares records.jsonl byte
for byte; also counts the defended model's forward calls (batches) in each run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the gcbench package lives beside this file
    sys.path.insert(0, str(HERE))

MODELS = {  # model: (data source, images)
    "fmnist-cnn": ("fashion-mnist", 24),
    "fmnist-resnet": ("fashion-mnist", 16),
    "fmnist-vit": ("fashion-mnist", 16),
    "lite0": ("photos", 9),
}


def timing(batch: int, rounds: int, steps: int, early_stop: bool = True) -> str:
    """The Markdown table of PGD-Linf-``steps`` on GCM-lite0: with / without clean logits / bare loop."""
    from gcbench.bare import bare_pgd
    from gcbench.timing import interleaved, median
    from gradconceal import conceal
    from gradconceal.attacks import PGD
    from gradconceal.data import load_dataset
    from gradconceal.models.zoo import load_model

    base = load_model("lite0").eval()
    for parameter in base.parameters():
        parameter.requires_grad_(False)
    model = conceal(base).eval()
    data = load_dataset("photos")
    images = torch.stack([data[i % len(data)][0] for i in range(batch)])
    with torch.no_grad():
        logits = model(images)
    labels = logits.argmax(dim=1)
    eps, alpha = 8 / 255, 2 / 255
    attack = PGD(model, norm="linf", eps=eps, steps=steps, alpha=alpha, early_stop=early_stop)
    generator = torch.Generator()

    def bare() -> Tensor:
        generator.manual_seed(0)
        return bare_pgd(model, images, labels, norm="linf", eps=eps, alpha=alpha, steps=steps, generator=generator)

    passed = attack.perturb(images, labels, clean_logits=logits)
    own = attack.perturb(images, labels)
    same = all(torch.equal(getattr(passed, k), getattr(own, k)) for k in ("adversarial", "fooled", "forward_evals"))
    times = interleaved({
        "ours, clean logits passed": lambda: attack.perturb(images, labels, clean_logits=logits),
        "ours, own clean forward": lambda: attack.perturb(images, labels),
        "bare loop": bare,
    }, rounds, warmup=1, clock="cpu")
    lines = [f"PGD-Linf-{steps} (8/255, step 2/255) on GCM-lite0, batch {batch} (3x224x224), "
             f"early stop {'on' if early_stop else 'off'}, {rounds} rounds in turns after a warm-up, one torch thread, "
             f"process CPU time; results identical with and without: {same}; fooled {int(own.fooled.sum())}/{batch}",
             "", "| contender | median s / call | / bare loop (median) | / bare loop (range) |", "|---|---|---|---|"]
    for name, values in times.items():
        ratios = [a / b for a, b in zip(values, times["bare loop"])]
        lines.append(f"| {name} | {median(values):.2f} | {median(ratios):.3f}x | "
                     f"{min(ratios):.3f}-{max(ratios):.3f}x |")
    saved = [b / a for a, b in zip(times["ours, clean logits passed"], times["ours, own clean forward"])]
    lines.append(f"\nown clean forward / clean logits passed: {median(saved):.3f}x "
                 f"(range {min(saved):.3f}-{max(saved):.3f}x)")
    return "\n".join(lines)


def _spec(model: str, source: str, count: int) -> Dict[str, Any]:
    eps = "8/255"
    spec: Dict[str, Any] = {
        "models": [model], "defenses": ["none", "gcm"], "data": {"source": source, "n": count},
        "attacks": [
            {"label": "PGD", "attack": "pgd", "norm": "linf", "eps": eps, "steps": 2, "alpha": "2/255"},
            {"label": "APGD-T", "attack": "apgd", "norm": "linf", "eps": eps, "steps": 2, "loss": "dlr",
             "targeted": True, "n_target_classes": 2},
            {"label": "BPDA-PGD", "attack": "pgd", "view": "bpda", "norm": "linf", "eps": eps, "steps": 2},
            {"label": "BPDA-FAB", "attack": "fab", "view": "bpda", "norm": "linf", "eps": eps, "steps": 2},
        ],
        "batch_size": 4, "device": "cpu", "seed": 5, "audit": False, "gallery": 0,
    }
    if model == "lite0":  # FAB's per-class gradients over 1000 classes take hours on a CPU
        spec["attacks"] = spec["attacks"][:3]
    return spec


def records(models: List[str], dtype: str) -> str:
    """One Markdown row per model: records identical with and without, the defended model's forward calls."""
    from torch.nn.modules.module import register_module_forward_pre_hook

    from gradconceal.defenses import DefendedModel
    from gradconceal.evaluation.api import evaluate
    from gradconceal.evaluation.run import Runner

    original_rule = Runner.__dict__["_reuses_clean_logits"]  # the staticmethod itself
    made = [0]

    def counting(module: Any, inputs: Any) -> None:
        if isinstance(module, DefendedModel):
            made[0] += 1

    handle = register_module_forward_pre_hook(counting)
    lines = [f"dtype {dtype}", "", "| model | records | identical | defended-model forward calls: with / without |",
             "|---|---|---|---|"]
    try:
        with tempfile.TemporaryDirectory(prefix="gradconceal-clean-logits-") as folder:
            for model in models:
                source, count = MODELS[model]
                spec = {**_spec(model, source, count), "dtype": dtype}
                counts = []
                for label in ("with", "without"):
                    Runner._reuses_clean_logits = (original_rule if label == "with"  # type: ignore[method-assign]
                                                   else staticmethod(lambda job, defended: False))
                    made[0] = 0
                    evaluate(spec, Path(folder) / model / label, quiet=True, plots=False)
                    counts.append(made[0])
                with_bytes = (Path(folder) / model / "with" / "records.jsonl").read_bytes()
                without_bytes = (Path(folder) / model / "without" / "records.jsonl").read_bytes()
                lines.append(f"| {model} | {len(with_bytes.splitlines())} | {with_bytes == without_bytes} | "
                             f"{counts[0]} / {counts[1]} |")
                print(lines[-1], flush=True)
    finally:
        handle.remove()
        Runner._reuses_clean_logits = original_rule  # type: ignore[method-assign]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Parse the command and print its table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    timed = commands.add_parser("timing", help="PGD-10 on GCM-lite0: clean logits passed / own forward / bare loop")
    timed.add_argument("--batch", type=int, default=8)
    timed.add_argument("--rounds", type=int, default=5)
    timed.add_argument("--steps", type=int, default=10)
    timed.add_argument("--early-stop", choices=["on", "off"], default="on",
                       help="off: every image runs every step (like for like with the bare loop)")
    checked = commands.add_parser("records", help="runner records with and without passed clean logits")
    checked.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    checked.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.command == "timing":
        print(timing(args.batch, args.rounds, args.steps, args.early_stop == "on"))
    else:
        print(records(args.models, args.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(main())
