"""The report's gallery: each correctly classified image beside the adversarial of the strongest attack that
fools the model with its saved 8-bit image, and never the claim that nothing fooled it when the folder merely
no longer holds that image (committed folders keep records, not always images)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, List

import pytest

from gradconceal.errors import GradconcealError

SPEC: Dict[str, Any] = {
    "models": ["fmnist-cnn"], "defenses": ["none"], "data": {"source": "fashion-mnist", "n": 4},
    "attacks": [{"label": "PGD-Linf 0.3", "attack": "pgd", "norm": "linf", "eps": 0.3, "steps": 10, "alpha": 0.05}],
    "batch_size": 4, "device": "cpu", "seed": 0, "audit": False, "gallery": 4,
}


def _gallery_notes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> List[Dict[str, Any]]:
    from gradconceal.evaluation import plots
    from gradconceal.evaluation.api import evaluate

    drawn: List[Dict[str, Any]] = []
    monkeypatch.setattr(plots, "plot_gallery", lambda title, items, path: drawn.extend(items))
    evaluate(SPEC, tmp_path / "out", quiet=True, plots=True)
    return drawn


def test_a_fooled_image_whose_adversarial_is_gone_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        first = _gallery_notes(tmp_path, monkeypatch)
    except GradconcealError as error:
        pytest.skip(f"Fashion-MNIST not available: {error}")
    fooled = [item for item in first if "adversarial" in item]
    assert len(first) == 4 and fooled, first  # eps 0.3 fools the plain CNN
    assert all(item["attack"] == "PGD-Linf 0.3" and item["adversarial"].shape == (1, 28, 28) for item in fooled)

    shutil.rmtree(tmp_path / "out" / "adversarial")
    again = _gallery_notes(tmp_path, monkeypatch)  # the re-report, from the kept records
    assert [("adversarial" in item) for item in again] == [False] * 4
    for before, after in zip(first, again):
        if "adversarial" in before:
            assert after["note"].startswith("PGD-Linf 0.3 fools the model, but this folder does not keep its image")
        else:
            assert after["note"] == before["note"]
