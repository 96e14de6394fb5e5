"""One parser of model names and one of data sources: the spec accepts exactly what load_model / load_dataset open,
and the canonical strings a spec stores (job keys depend on them) are the ones earlier versions wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from PIL import Image

from gradconceal.data import load_dataset
from gradconceal.data.fashion_mnist import DEBIAN_DIR
from gradconceal.data.sources import DataSource, parse_data_source
from gradconceal.errors import GradconcealError
from gradconceal.evaluation.spec import check_data_source, default_model_label, load_spec
from gradconceal.models import load_model, save_checkpoint
from gradconceal.models.names import parse_model_name

TENCH = "n01440764"


@pytest.fixture()
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkpoint, a non-checkpoint file, an ImageNet-layout folder and a flat folder with labels, in the cwd."""
    monkeypatch.chdir(tmp_path)
    save_checkpoint(load_model("small:cnn"), tmp_path / "net.safetensors")
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "state.pt").write_bytes(b"")
    for folder in (tmp_path / "val" / TENCH, tmp_path / "flat"):
        folder.mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), 128, dtype=np.uint8)).save(folder / "a.png")
    (tmp_path / "labels.txt").write_text(f"{TENCH}\n")
    return tmp_path


def spec_error(**changes: object) -> Optional[str]:
    spec = {"models": ["small:cnn"], "data": "digits", "attacks": ["paper"], **changes}
    try:
        load_spec(spec)
    except GradconcealError as error:
        return str(error)
    return None


def load_error(load) -> Optional[str]:  # type: ignore[no-untyped-def]
    try:
        load()
    except GradconcealError as error:
        return str(error)
    return None


@pytest.mark.parametrize(
    "name, valid",
    [
        ("fmnist-cnn", True),
        (" fmnist-cnn ", True),
        ("small:cnn", True),
        ("timm:resnet18", True),
        ("torchvision:resnet18", True),
        ("{tmp}/net.safetensors", True),
        ("net.safetensors", True),
        ("./net.safetensors", True),
        ("small:nope", False),
        ("small:", False),
        ("timm:", False),
        ("timm:no_such_net", False),
        ("torchvision:fasterrcnn_resnet50_fpn", False),  # a detector, not a classifier
        ("fmnist-cn", False),
        ("lite9", False),
        ("nonsense:thing", False),
        ("x.pth", False),  # missing
        ("{tmp}/missing.safetensors", False),
        ("{tmp}/notes.txt", False),  # a file, but no checkpoint
        ("{tmp}/state.pt", False),  # a state dict: needs an architecture
        ("model.bin", False),
        ("notes.txt", False),
        ("{tmp}", False),  # a folder
    ],
)
def test_spec_and_load_model_agree_on_model_names(files: Path, name: str, valid: bool) -> None:
    name = name.format(tmp=files)
    from_spec = spec_error(models=[name])
    from_load = load_error(lambda: load_model(name, pretrained=False))  # nothing is downloaded
    assert (from_spec is None, from_load is None) == (valid, valid), (from_spec, from_load)
    relative_path = parse_model_name(name).kind == "checkpoint" and not Path(name).is_absolute()
    if not valid and not relative_path:  # a spec makes relative paths absolute, load_model keeps them as given
        assert from_spec == from_load  # one parser, one message


def test_spec_and_load_model_agree_on_an_empty_name() -> None:
    assert spec_error(models=[""]) == "models[0].name must be a non-empty string, got ''"
    assert load_error(lambda: load_model("")) == (
        "model name must be a non-empty string such as 'fmnist-cnn' or 'lite0', got ''"
    )


def test_a_checkpoint_with_separate_weights_is_refused_by_both(files: Path) -> None:
    path = str(files / "net.safetensors")
    message = f"model {path!r} is a checkpoint with its own weights; do not also pass weights={path!r}"
    assert spec_error(models=[{"name": path, "weights": path}]) == message
    assert load_error(lambda: load_model(path, weights=path)) == message


@pytest.mark.parametrize(
    "name, label",
    [
        ("fmnist-cnn", "fmnist-cnn"),
        ("timm:resnet18", "timm:resnet18"),
        ("small:cnn", "small:cnn"),
        ("/runs/a/model.safetensors", "model"),
        ("runs/a/final", "final"),
        ("net.pt", "net"),
        ("my-model", "my-model"),
    ],
)
def test_default_labels_are_unchanged(name: str, label: str) -> None:
    assert default_model_label(name) == label


needs_fashion_mnist = pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")


@pytest.mark.parametrize(
    "source, valid",
    [
        ("photos", True),
        ("digits", True),
        pytest.param("fashion-mnist", True, marks=needs_fashion_mnist),
        pytest.param("fashion-mnist:", True, marks=needs_fashion_mnist),
        ("imagenet:{tmp}/val", True),
        ("imagenet:val", True),
        ("imagenet:{tmp}/flat:{tmp}/labels.txt", True),
        ("imagenet:flat:labels.txt", True),
        ("imagenet:", False),
        ("imagenet", False),
        ("imagenet:{tmp}/nowhere", False),
        ("imagenet:{tmp}/flat:{tmp}/missing.txt", False),
        ("photos:x", False),
        ("digits:{tmp}", False),
        ("fashion-mnist:{tmp}/nowhere", False),
        ("mnist", False),
        ("Photos", False),
        ("", False),
        ("photos@240", True),
        ("imagenet@240:{tmp}/val", True),
        ("imagenet@260:flat:labels.txt", True),
        ("photos@0", False),
        ("photos@240.5", False),
        ("photos@", False),
        ("imagenet@5000:{tmp}/val", False),
        ("imagenet:{tmp}/val@260", False),
        ("fashion-mnist@28", False),
        ("digits@8", False),
    ],
)
def test_spec_and_load_dataset_agree_on_data_sources(files: Path, source: str, valid: bool) -> None:
    source = source.format(tmp=files)
    from_spec = spec_error(data=source)
    from_load = load_error(lambda: load_dataset(source, limit=1))
    assert (from_spec is None, from_load is None) == (valid, valid), (from_spec, from_load)
    if not valid and source:
        assert from_spec == from_load  # one parser, one message (every path here is absolute or in the cwd)


@pytest.mark.parametrize("split, valid", [("test", True), ("train", False)])
def test_spec_and_load_dataset_agree_on_splits(split: str, valid: bool) -> None:
    from_spec = spec_error(data={"source": "photos", "split": split})
    from_load = load_error(lambda: load_dataset("photos", split=split, limit=1))
    assert (from_spec is None, from_load is None) == (valid, valid)
    assert from_spec == from_load


def _old_check_data_source(source: str, base_dir: Path) -> str:
    """The canonical string of a (valid) source as gradconceal 0.1 computed it, kept to pin it."""

    def resolve(text: str) -> str:
        path = Path(text).expanduser()
        return str(path if path.is_absolute() else (base_dir / path).resolve())

    kind, _, rest = source.partition(":")
    if kind in ("photos", "digits") or (kind == "fashion-mnist" and not rest):
        return kind
    if kind == "fashion-mnist":
        return f"fashion-mnist:{resolve(rest)}"
    folder, labels = rest, ""
    if not Path(resolve(rest)).exists() and ":" in rest:
        folder, labels = rest.rsplit(":", 1)
    return f"imagenet:{resolve(folder)}:{resolve(labels)}" if labels else f"imagenet:{resolve(folder)}"


@pytest.mark.parametrize(
    "source",
    [
        "photos", "digits", "fashion-mnist", "fashion-mnist:", "fashion-mnist:val", "fashion-mnist:{tmp}/val/",
        "imagenet:val", "imagenet:./val", "imagenet:{tmp}/val", "imagenet:{tmp}//val/", "imagenet:{tmp}/sub/../val",
        "imagenet:flat:labels.txt", "imagenet:{tmp}/flat:{tmp}/labels.txt", "imagenet:a:b", "imagenet:{tmp}/val:",
    ],
)
def test_canonical_source_strings_are_byte_identical_to_earlier_versions(tmp_path: Path, source: str) -> None:
    base = tmp_path / "specs"
    for folder in (base / "val", base / "flat", base / "a:b", tmp_path / "val", tmp_path / "flat", tmp_path / "sub"):
        folder.mkdir(parents=True, exist_ok=True)
    for labels in (base / "labels.txt", tmp_path / "labels.txt"):
        labels.write_text(f"{TENCH}\n")
    source = source.format(tmp=tmp_path)
    assert check_data_source(source, base) == _old_check_data_source(source, base)


def test_a_source_is_a_small_typed_value() -> None:
    parsed = parse_data_source("imagenet:/data/val:/data/labels.txt")
    assert parsed == DataSource("imagenet", "/data/val", "/data/labels.txt")
    assert parsed.to_string() == "imagenet:/data/val:/data/labels.txt" and parsed.single_set
    assert parse_data_source("fashion-mnist:").to_string() == "fashion-mnist"
    assert not parse_data_source("digits").single_set
