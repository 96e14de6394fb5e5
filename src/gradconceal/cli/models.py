"""``gradconceal models``: what the model zoo offers (names to use in specs and with --model)."""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List

EPILOG = """examples:
  gradconceal models                      # zoo names, small architectures, shipped checkpoints
  gradconceal models 'fmnist-*'           # a glob pattern
  gradconceal models 'timm:resnet*'       # models timm can build (weights: --weights PATH, offline)
  gradconceal models 'torchvision:*' --json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` subcommand."""
    parser = subparsers.add_parser(
        "models",
        help="list the models of the zoo",
        description="List model names accepted by 'gradconceal evaluate --model', specs and load_model().",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pattern", nargs="?", default="*", help="glob pattern (default: *)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def describe(name: str) -> Dict[str, Any]:
    """What a zoo name is, without building the model (shipped checkpoints: their metadata)."""
    from gradconceal.models import zoo
    from gradconceal.models.pretrained import LITES

    if name in LITES:
        lite = LITES[name]
        about = f"{lite.title} with the weights of the {lite.package} package"
        if not lite.installed():
            about += f" (not installed: {lite.install_hint()})"
        return {"name": name, "kind": "pretrained (ImageNet-1k, offline)", "input": "x".join(map(str, lite.input_size)),
                "about": about}
    if name.startswith("small:"):
        return {"name": name, "kind": "random init", "input": "1x28x28",
                "about": "small net for 28x28 grey images (train it with 'gradconceal train')"}
    if name.startswith(("timm:", "torchvision:")):
        return {"name": name, "kind": "architecture", "input": "model's own",
                "about": "random init with pretrained=False, or local weights with weights=PATH"}
    path = zoo.WEIGHTS_DIR / f"{name}.safetensors"
    if path.is_file():
        from gradconceal.models.checkpoint import read_checkpoint

        _, meta = read_checkpoint(path)
        extra = meta.get("extra", {}) or {}
        accuracy = extra.get("test_accuracy") or extra.get("accuracy")
        about = f"{meta.get('architecture', '?')} checkpoint"
        if isinstance(accuracy, (int, float)):
            about += f", test accuracy {100 * accuracy:.1f} %" if accuracy <= 1 else f", test accuracy {accuracy} %"
        return {"name": name, "kind": "shipped checkpoint", "input": "x".join(str(v) for v in meta.get("input_size", [])),
                "about": about}
    return {"name": name, "kind": "", "input": "", "about": ""}


def run(args: argparse.Namespace) -> int:
    """Handler of ``gradconceal models``."""
    from gradconceal.models.zoo import list_models

    names = list_models(args.pattern)
    rows: List[Dict[str, Any]] = [describe(n) for n in names]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no model matches {args.pattern!r} (try 'gradconceal models', 'timm:*' or 'torchvision:*')")
        return 0
    widths = {key: max(len(key), *(len(str(r[key])) for r in rows)) for key in ("name", "kind", "input")}
    print(f"{'name':<{widths['name']}}  {'kind':<{widths['kind']}}  {'input':<{widths['input']}}  about")
    for r in rows:
        print(f"{r['name']:<{widths['name']}}  {r['kind']:<{widths['kind']}}  {r['input']:<{widths['input']}}  {r['about']}")
    if args.pattern == "*":
        print("\nalso: timm:NAME and torchvision:NAME for any model those libraries know "
              "(list them with 'gradconceal models \"timm:*\"'), or a path to a .safetensors/.pt checkpoint")
    return 0
