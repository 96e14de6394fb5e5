"""``gradconceal demo``: the main job. Pretrained EfficientNet-Lite0 on real photos, vanilla vs GCM.

It prints each photo's clean prediction with and without GCM, the gradient facts that explain GCM, then
the paper's attacks beside the adaptive ones, and writes the full report. The default run reduces a few
step counts so that it finishes in about five minutes of one CPU core (the reason is written into the
report); ``--full`` runs the presets as published.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any, Dict, List, Optional

from gradconceal.threads import add_threads_flag, apply_threads

log = logging.getLogger(__name__)

EPILOG = """examples:
  gradconceal demo                          # about 5 minutes of one core; report in gradconceal-report/
  gradconceal demo --out my-report/
  gradconceal demo --full                   # the presets unreduced (much longer on a CPU)
  gradconceal demo --device cuda
  gradconceal evaluate gradconceal-report/results.json   # run the demo's spec again and compare
"""

REDUCTION_REASON = (
    "The quick demo halves the PGD steps (doubling the step size, so each attack can still travel as far) and "
    "runs C&W with 2 binary-search steps of 10 Adam steps instead of 5 x 100 and APGD with 10 steps instead of 50, so that the whole demo takes about "
    "5 minutes of one CPU core; every attack still runs. On GCM the plain-gradient attacks fail whatever their "
    "steps (the gradient they follow is noise); 'gradconceal demo --full' runs the presets unreduced."
)
CW_QUICK = {"steps": 10, "binary_search_steps": 2}
APGD_QUICK_STEPS = 10


def demo_overrides(preset_name: str) -> Dict[str, Dict[str, Any]]:
    """The quick demo's settings changes for one preset (see REDUCTION_REASON), keyed by attack label."""
    from gradconceal.attacks.presets import preset
    from gradconceal.attacks.threat import parse_number

    overrides: Dict[str, Dict[str, Any]] = {}
    for spec in preset(preset_name, image_size=(3, 224, 224)):
        settings = spec.settings
        if spec.attack == "pgd" and int(settings.get("steps", 10)) > 10:
            change: Dict[str, Any] = {"steps": int(settings["steps"]) // 2}
            if "alpha" in settings:
                change["alpha"] = float(f"{2 * parse_number(settings['alpha'], 'alpha'):.6g}")
            overrides[spec.label] = change
        elif spec.attack == "cw":
            overrides[spec.label] = dict(CW_QUICK)
        elif spec.attack == "apgd":
            overrides[spec.label] = {"steps": APGD_QUICK_STEPS}
    return overrides


def demo_spec(*, full: bool = False, n: Optional[int] = None, device: str = "auto", batch_size: int = 16,
              seed: int = 0) -> Dict[str, Any]:
    """The demo's embedded spec: lite0 on the photos, vanilla vs GCM, the paper and adaptive presets."""
    attacks: List[Any] = []
    for name in ("paper", "adaptive"):
        entry: Dict[str, Any] = {"preset": name}
        overrides = demo_overrides(name)
        if overrides and not full:
            entry["overrides"] = overrides
            entry["reason"] = REDUCTION_REASON
        attacks.append(entry)
    data: Dict[str, Any] = {"source": "photos"}
    if n is not None:
        data["n"] = n
    return {
        "format_version": 1,
        "title": "gradconceal demo: EfficientNet-Lite0 on real photos, vanilla vs GCM" + ("" if full else " (quick)"),
        "models": ["lite0"],
        "defenses": ["none", "gcm"],
        "data": data,
        "attacks": attacks,
        "batch_size": batch_size,
        "device": device,
        "seed": seed,
        "gallery": 4,
    }


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="the main job: lite0 on real photos, the paper's attacks beside adaptive ones",
        description="Pretrained EfficientNet-Lite0 on real photos, vanilla vs GCM: clean predictions, gradient "
        "facts, the paper's attacks beside adaptive attacks, and a full report in --out.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", metavar="DIR", default="gradconceal-report", help="output folder (default: %(default)s/)")
    parser.add_argument("--full", action="store_true", help="run the presets unreduced")
    parser.add_argument("--n", type=int, metavar="N", help="use the first N photos only")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="B", help="images per batch (default: 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of all randomness (default: 0)")
    parser.add_argument("--recompute", action="store_true",
                        help="replace records of --out computed from other weights, images, settings or attack code")
    add_threads_flag(parser)
    parser.set_defaults(func=run)


def _photo_lines(vanilla: Any, concealed: Any, dataset: Any, device: Any) -> List[str]:
    """One line per photo: accepted labels, vanilla top-1, GCM top-1."""
    import torch

    images = torch.stack([dataset[i][0] for i in range(len(dataset))]).to(device)
    with torch.no_grad():
        plain = vanilla(images).argmax(1).tolist()
        hidden = concealed(images).argmax(1).tolist()
    names = dataset.class_names
    photo_names = getattr(dataset, "photo_names", [str(i) for i in range(len(dataset))])
    label_sets = getattr(dataset, "label_sets", [{t} for t in dataset.targets])
    width = max(len(p) for p in photo_names)

    def show(label: int) -> str:
        mark = "ok" if label in accepted else "WRONG"
        return f"{names[label][:24]} ({label}) {mark}"

    lines = [f"{'photo':<{width}}  {'vanilla top-1':<36}  {'GCM top-1':<36}  accepted labels"]
    for i, photo in enumerate(photo_names):
        accepted = label_sets[i]
        lines.append(f"{photo:<{width}}  {show(plain[i]):<36}  {show(hidden[i]):<36}  "
                     f"{', '.join(str(v) for v in sorted(accepted))}")
    same = sum(a == b for a, b in zip(plain, hidden))
    lines.append(f"same top-1 with and without GCM: {same} of {len(plain)} photos")
    return lines


def run(args: argparse.Namespace) -> int:
    """Handler of ``gradconceal demo``."""
    import torch

    from gradconceal.data import load_dataset
    from gradconceal.defenses import conceal
    from gradconceal.evaluation.api import evaluate
    from gradconceal.evaluation.report import summary_lines
    from gradconceal.evaluation.distributed import resolve_device
    from gradconceal.evaluation.spec import load_spec
    from gradconceal.facts import gradient_facts
    from gradconceal.folders import check_output_folder
    from gradconceal.models.zoo import load_model

    started = time.perf_counter()
    apply_threads(args.threads)
    check_output_folder(args.out)  # refuse a folder of the user's before the work, not after
    spec = demo_spec(full=args.full, n=args.n, device=args.device, batch_size=args.batch_size, seed=args.seed)
    checked = load_spec(spec)  # fail on a bad flag before any model loads
    device = resolve_device(checked.device)
    dataset = load_dataset("photos", limit=args.n)
    vanilla = load_model("lite0").eval().to(device)
    concealed = conceal(vanilla)
    print("Clean predictions of EfficientNet-Lite0 on the photos, without and with GCM:")
    for line in _photo_lines(vanilla, concealed, dataset, device):
        print("  " + line)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))]).to(device)
    facts = gradient_facts(vanilla, concealed, images)
    print("\nGradient facts (why the paper's attacks fail on GCM, and why that is not robustness):")
    for line in facts.lines():
        print("  " + line)
    extra = {"gradient_facts": facts.as_dict(), "gradient_facts_lines": facts.lines()}
    del vanilla, concealed
    print("\nAttacking (the paper's attacks, then the adaptive ones)...", flush=True)
    results = evaluate(spec, args.out, quiet=bool(getattr(args, "quiet", False)), extra_info=extra,
                       recompute=bool(args.recompute))
    print()
    print(results.table())
    print()
    for line in summary_lines(results):
        print(line)
    print(f"demo run time: {time.perf_counter() - started:.0f} s")
    return 0
