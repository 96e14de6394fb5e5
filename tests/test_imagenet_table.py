"""The paper's ImageNet table, end to end on a tiny fake ImageNet folder (random-weight timm models)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gradconceal import GradconcealError
from gradconceal.evaluation.spec import load_spec

SPEC = Path(__file__).resolve().parents[1] / "docs" / "results" / "imagenet-paper.toml"
SYNSETS = ["n01440764", "n01443537", "n01484850"]  # ImageNet classes 0, 1, 2 (tench, goldfish, white shark)


def test_the_documented_spec_names_the_papers_six_families_and_needs_local_weights():
    import tomllib

    spec = tomllib.loads(SPEC.read_text())
    names = [m["name"] for m in spec["models"]]
    assert names == ["timm:resnet50", "timm:wide_resnet50_2", "timm:densenet121", "timm:efficientnet_b4",
                     "timm:vit_base_patch16_224", "timm:swin_small_patch4_window7_224"]
    assert [a["preset"] for a in spec["attacks"]] == ["paper", "adaptive"]
    with pytest.raises(GradconcealError, match="resnet50.pth|imagenet"):  # nothing is downloaded: a clear error
        load_spec(SPEC)


@pytest.mark.slow
def test_imagenet_folder_to_report_end_to_end(tmp_path):
    from gradconceal import evaluate

    rng = np.random.default_rng(0)
    for synset in SYNSETS:
        folder = tmp_path / "val" / synset
        folder.mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, size=(300, 260, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"ILSVRC2012_val_{synset}_{i}.JPEG")
    spec = {
        "format_version": 1,
        "models": [{"name": "timm:resnet10t", "pretrained": False}, {"name": "timm:vit_tiny_patch16_224", "pretrained": False}],
        "defenses": ["none", "gcm"],
        "data": {"source": f"imagenet:{tmp_path / 'val'}", "n": 6},
        "attacks": [
            {"label": "PGD-Linf", "attack": "pgd", "norm": "linf", "eps": "8/255", "steps": 2, "alpha": "4/255"},
            {"label": "BPDA PGD-Linf", "attack": "pgd", "view": "bpda", "norm": "linf", "eps": "8/255", "steps": 2,
             "alpha": "4/255"},
        ],
        "batch_size": 6,
        "device": "cpu",
        "audit": False,
        "seed": 0,
    }
    results = evaluate(spec, tmp_path / "report", quiet=True, plots=False)
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    rows = saved["rows"]
    assert len(rows) == 4  # two models x (vanilla, GCM)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "PGD-Linf" in report and "BPDA PGD-Linf" in report
    records = [json.loads(line) for line in (tmp_path / "report" / "records.jsonl").read_text().splitlines()]
    assert {r["model"] for r in records} == {"timm:resnet10t", "timm:vit_tiny_patch16_224"}
    assert len({r["index"] for r in records}) == 6
    assert results.row("timm:resnet10t", "gcm").clean.n == 6
