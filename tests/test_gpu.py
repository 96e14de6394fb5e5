"""End to end on a CUDA device: training, evaluation on CUDA against the CPU, and ``compile`` on CUDA.

Marked ``gpu`` and skipped without a CUDA device; ``bash benchmarks/gpu_check.sh`` runs them (step 1). They
need only what the package ships (lite0's weights, the sample photos, scikit-learn's digits), no data set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
from torch import nn

from attacks_support import RECORD_DECISIONS, evaluate_records, load_gpu_check, write_imagenet_splits

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

# The GPU check's distributed spec (lite0 on the photos; a plain PGD, BPDA+EOT PGD and Square), with GCM added
# beside no defence and the challenge stack (random), in one process.
PHOTOS_SPEC: Dict[str, Any] = {**load_gpu_check().DISTRIBUTED_SPEC, "defenses": ["none", "gcm", "challenge"]}


def _evaluate(spec: Dict[str, Any], out: Path, **kwargs: Any) -> List[Dict[str, Any]]:
    return sorted(evaluate_records(spec, out, **kwargs), key=_key)


def _key(record: Dict[str, Any]) -> Any:
    return (record["model"], record["defense"], record["attack"], record["index"])


def test_mixed_precision_challenge_training_on_an_imagenet_folder(tmp_path: Path) -> None:
    from gradconceal.training import train

    write_imagenet_splits(tmp_path, images_per_class=4)
    result = train("timm:test_resnet", data=f"imagenet:{tmp_path / 'train'}", test_data=f"imagenet:{tmp_path / 'val'}",
                   preset="challenge", epochs=1, batch_size=4, device="cuda", out_dir=tmp_path / "run", progress=False)
    assert next(result.model.parameters()).device.type == "cuda"
    assert all(torch.isfinite(v).all() for v in result.model.state_dict().values() if v.is_floating_point())
    assert 0.0 <= result.test_accuracy <= 1.0


def test_evaluation_on_cuda_classifies_and_attacks_as_on_the_cpu(tmp_path: Path) -> None:
    on_cpu = _evaluate({**PHOTOS_SPEC, "device": "cpu"}, tmp_path / "cpu")
    on_cuda = _evaluate({**PHOTOS_SPEC, "device": "cuda"}, tmp_path / "cuda")
    assert [_key(r) for r in on_cuda] == [_key(r) for r in on_cpu]
    assert [r["job"] for r in on_cuda] == [r["job"] for r in on_cpu]  # the device is not part of the job key
    clean = [(a, b) for a, b in zip(on_cpu, on_cuda) if a["attack"] == "clean"]
    assert len(clean) == 9 * 3
    for a, b in clean:  # the photos' clean margins are far above float noise: the same prediction
        assert (a["pred"], a["correct"]) == (b["pred"], b["correct"]), (a, b)
    cpu_rows = json.loads((tmp_path / "cpu" / "results.json").read_text(encoding="utf-8"))["rows"]
    cuda_rows = json.loads((tmp_path / "cuda" / "results.json").read_text(encoding="utf-8"))["rows"]
    assert len(cuda_rows) == len(cpu_rows) == 3
    for a, b in zip(cpu_rows, cuda_rows):
        assert a["clean_accuracy"]["k"] == b["clean_accuracy"]["k"]
        if a["defense"] != "challenge":  # deterministic: the same attack on the same images, within one image
            for attack, numbers in a["attacks"].items():
                if numbers is None or b["attacks"][attack] is None:  # an attack that does not apply to the row
                    assert numbers is b["attacks"][attack] is None, (a["defense"], attack)
                    continue
                here, there = numbers["robust_accuracy"], b["attacks"][attack]["robust_accuracy"]
                assert (here is None) == (there is None), (a["defense"], attack)
                assert here is None or abs(here["k"] - there["k"]) <= 1, (a["defense"], attack)


class _DigitsNet(nn.Module):
    """A small CNN for 8 x 8 digits, trained for a few steps on the GPU so its margins are not float noise."""

    input_size = (1, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _trained_digits_net() -> nn.Module:
    from gradconceal.data import load_dataset

    data = load_dataset("digits", split="train")
    images = torch.stack([data[i][0] for i in range(512)]).cuda()
    labels = torch.tensor([int(data[i][1]) for i in range(512)]).cuda()
    torch.manual_seed(0)
    model = _DigitsNet().cuda()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return model.eval()


def test_compiled_evaluation_on_cuda_decides_as_eager(tmp_path: Path) -> None:
    model = _trained_digits_net()
    spec: Dict[str, Any] = {
        "models": ["digits-net"], "defenses": ["none", "gcm"], "data": {"source": "digits", "n": 32},
        "attacks": [
            {"label": "PGD", "attack": "pgd", "norm": "linf", "eps": "32/255", "steps": 6, "alpha": "8/255",
             "check_every": 1},
            {"label": "BPDA-PGD", "attack": "pgd", "view": "bpda", "norm": "linf", "eps": "32/255", "steps": 4},
        ],
        "batch_size": 8, "device": "cuda", "seed": 2, "audit": False, "gallery": 0,
    }
    eager = _evaluate(spec, tmp_path / "eager", models={"digits-net": model})
    torch._dynamo.reset()
    compiled = _evaluate({**spec, "compile": True}, tmp_path / "compiled", models={"digits-net": model})
    assert len(compiled) == len(eager) == 32 * 2 * 3  # clean, PGD and BPDA-PGD records
    assert any(r.get("fooled") for r in eager) and any(r.get("fooled") is False for r in eager)
    for a, b in zip(eager, compiled):
        assert {k: a.get(k) for k in RECORD_DECISIONS} == {k: b.get(k) for k in RECORD_DECISIONS}, (a, b)
