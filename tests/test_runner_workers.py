"""An image folder is decoded once, in ``data.workers`` DataLoader workers, and never changes a number."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import pytest
from PIL import Image
from torch import nn

from gradconceal.data.base import FileImageDataset
from gradconceal.errors import GradconcealError
from gradconceal.evaluation.spec import load_spec
from gradconceal.evaluation.store import RecordStore

SYNSETS = ["n01440764", "n01443537"]


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(1)
    for synset in SYNSETS:
        (root / synset).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, size=(260, 240, 3), dtype=np.uint8)).save(root / synset / f"{i}.JPEG")
    return root


def _spec(folder: Path, **data) -> dict:
    return {"models": ["mine"], "defenses": ["none"], "data": {"source": f"imagenet:{folder}", **data},
            "attacks": [{"label": "FGSM", "attack": "fgsm", "norm": "linf", "eps": "8/255"}],
            "batch_size": 3, "device": "cpu", "seed": 0, "audit": False, "gallery": 0}


def test_workers_decode_once_and_give_the_same_records(tmp_path: Path, monkeypatch) -> None:
    from gradconceal.evaluation.api import evaluate

    folder = _folder(tmp_path / "val")
    model = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 1000)).eval()
    calls: List[dict] = []
    original = FileImageDataset.preload

    def spy(self, indices=None, **kwargs):
        calls.append({"indices": list(indices) if indices is not None else None, **kwargs})
        return original(self, indices, **kwargs)

    monkeypatch.setattr(FileImageDataset, "preload", spy)
    outcomes = []
    for name, data in (("default", {}), ("workers", {"workers": 1})):
        evaluate(_spec(folder, **data), tmp_path / name, quiet=True, plots=False, models={"mine": model})
        outcomes.append({k: (r.correct, r.to_dict().get("adv_pred"), r.to_dict().get("pred"))
                         for k, r in RecordStore(tmp_path / name).load().items()})
    assert outcomes[0] == outcomes[1] and len(outcomes[0]) == 8
    assert [c["workers"] for c in calls] == [0, 1] and all(c["indices"] == [0, 1, 2, 3] for c in calls)


def test_workers_setting_is_checked(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "val")
    assert load_spec(_spec(folder, workers=2), extra_models=["mine"]).data.workers == 2
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(GradconcealError, match="data.workers"):
            load_spec(_spec(folder, workers=bad), extra_models=["mine"])
