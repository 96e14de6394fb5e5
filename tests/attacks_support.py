"""Shared pieces of the tests: the Fashion-MNIST CNN, a batch of its test images, tiny models, an evaluation's
records, a synthetic ImageNet-layout folder and the GPU check imported as a module."""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Mapping, Tuple

import pytest
import torch
from torch import Tensor, nn

from gradconceal.errors import GradconcealError

FMNIST_CACHE = Path(tempfile.gettempdir()) / "gradconceal-tests" / "fmnist-cnn-1epoch.safetensors"
BENCHMARKS_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
# The fields of an attack record that say what was decided (compared between eager and compiled runs, devices)
RECORD_DECISIONS = ("status", "correct", "clean_correct", "fooled", "adv_pred", "correct_8bit", "non_finite", "label")


def fmnist_batch(count: int, split: str = "test") -> Tuple[Tensor, Tensor]:
    """The first ``count`` Fashion-MNIST images and labels (skips the test when the data is missing)."""
    from gradconceal.data import load_dataset

    try:
        data = load_dataset("fashion-mnist", split=split, limit=count)
    except GradconcealError as error:
        pytest.skip(f"Fashion-MNIST not available: {error}")
    images = torch.stack([data[i][0] for i in range(len(data))])
    return images, torch.tensor(data.targets[: len(data)], dtype=torch.int64)


def _train_one_epoch() -> nn.Module:
    """A small CNN trained one epoch on 20,000 Fashion-MNIST images, cached in the temp folder."""
    from gradconceal.models.checkpoint import save_checkpoint
    from gradconceal.models.pixel import PixelModel
    from gradconceal.models.small import FASHION_MNIST_MEAN, FASHION_MNIST_STD, SMALL_ARCHITECTURES
    from gradconceal.models.zoo import load_model

    if not FMNIST_CACHE.is_file():
        images, labels = fmnist_batch(20000, split="train")
        model = PixelModel(SMALL_ARCHITECTURES["cnn"](in_chans=1, num_classes=10), mean=FASHION_MNIST_MEAN,
                           std=FASHION_MNIST_STD, input_size=(1, 28, 28), class_names=[str(i) for i in range(10)],
                           model_name="fmnist-cnn-test", architecture="small:cnn")
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
        model.train()
        for start in range(0, len(images), 128):
            batch = order[start:start + 128]
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        save_checkpoint(model, FMNIST_CACHE, architecture="small:cnn")
    return load_model(str(FMNIST_CACHE))


def fmnist_model() -> nn.Module:
    """The shipped undefended Fashion-MNIST CNN in eval mode (a one-epoch stand-in if it is not shipped)."""
    from gradconceal.models.zoo import load_model

    try:
        model = load_model("fmnist-cnn")
    except GradconcealError:
        model = _train_one_epoch()
    return model.eval()


class CountingModel(nn.Module):
    """A linear classifier on 1x8x8 images that counts its forward calls (for 'no work before errors')."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.linear = nn.Linear(64, classes)
        self.calls = 0
        self.input_size = (1, 8, 8)
        self.num_classes = classes

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return self.linear(x.flatten(1))


@pytest.fixture(scope="module", autouse=False)
def one_thread():
    """Run a module's tests on one intra-op thread (much faster than two on a loaded two-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def evaluate_records(spec: Mapping[str, Any], out: Path, **kwargs: Any) -> List[Dict[str, Any]]:
    """Evaluate ``spec`` into ``out`` (no plots, quiet) and return its records in file order."""
    from gradconceal.evaluation.api import evaluate

    evaluate(dict(spec), out, quiet=True, plots=False, **kwargs)
    return [json.loads(line) for line in (out / "records.jsonl").read_text(encoding="utf-8").splitlines()]


def write_imagenet_splits(root: Path, images_per_class: int) -> None:
    """``root/train`` and ``root/val`` in the ImageNet folder layout: two synsets (classes 0 and 1), each with
    ``images_per_class`` random 64 x 64 RGB PNGs (seeded, the same on every call)."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for synset in ("n01440764", "n01443537"):
            folder = root / split / synset
            folder.mkdir(parents=True)
            for index in range(images_per_class):
                pixels = (torch.rand(64, 64, 3, generator=generator) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{index}.png")


def load_gpu_check() -> ModuleType:
    """``benchmarks/gpu_check.py`` imported as a module, once (it puts gcbench on sys.path itself)."""
    name = "gradconceal_gpu_check"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS_DIR / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module
