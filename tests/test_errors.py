"""The catalogue of bad inputs (docs/errors.md): each is refused with one line that names the problem and the
file or argument, exit code 1 from the command line (a traceback only with --debug), and no report left
behind that could pass for a finished one. Grey, RGBA, palette and 16-bit images are converted, not refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from gradconceal.cli import main
from gradconceal.errors import GradconcealError
from gradconceal.models.checkpoint import read_checkpoint, save_checkpoint
from gradconceal.models.pixel import PixelModel
from gradconceal.models.zoo import load_model

HAVE_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist").is_dir()
needs_fashion_mnist = pytest.mark.skipif(not HAVE_FASHION_MNIST, reason="Debian package dataset-fashion-mnist is not installed")

# A run that would take a few seconds if nothing were wrong: every error below stops it before that.
QUICK = ["--n", "2", "--attacks", "paper", "--no-audit", "--device", "cpu"]
REPORT_FILES = ("report.md", "results.json", "results.csv")


# -- helpers --------------------------------------------------------------------------------------------
def cli(capsys, *argv: str) -> Tuple[int, str, str]:
    """Run the command in this process; returns (exit code, stdout, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clear_error(code: int, out: str, err: str, *needles: str) -> None:
    """Exit 1, one 'error: ...' line holding every needle, no traceback.

    A progress bar may have been drawn before the error; it rewrites one terminal line with carriage returns
    and clears itself, so what stays on the screen is the text after the last carriage return.
    """
    assert code == 1, (code, err)
    bar, _, visible = err.rpartition("\r")
    assert "\n" not in bar, err
    assert visible.startswith("error: ") and visible.count("\n") == 1 and visible.endswith("\n"), err
    for needle in needles:
        assert needle in visible, (needle, visible)
    assert "Traceback" not in out + err


def assert_no_report(out_dir: Path) -> None:
    """Nothing in the folder passes for a finished report."""
    for name in REPORT_FILES:
        assert not (out_dir / name).exists(), name


def write_spec(folder: Path, **entries) -> Path:
    """A JSON spec on Fashion-MNIST with two images, changed by ``entries`` (None removes a key)."""
    spec = {"format_version": 1, "models": ["fmnist-cnn"], "data": {"source": "fashion-mnist", "n": 2},
            "attacks": ["paper"], "device": "cpu", "audit": False}
    spec.update(entries)
    spec = {k: v for k, v in spec.items() if v is not None}
    path = folder / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def evaluate_spec(capsys, tmp_path: Path, **entries) -> Tuple[int, str, str]:
    spec = write_spec(tmp_path, **entries)
    return cli(capsys, "evaluate", str(spec), "--out", str(tmp_path / "out"))


# -- files ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cnn() -> PixelModel:
    return load_model("fmnist-cnn")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, cnn) -> Path:
    """A good checkpoint of fmnist-cnn and broken variants of it."""
    folder = tmp_path_factory.mktemp("checkpoints")
    good = save_checkpoint(cnn, folder / "good.safetensors")
    state, _ = read_checkpoint(good)
    with open(good, "rb") as handle:
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    metadata = header["__metadata__"]

    def variant(name: str, tensors=None, **changes) -> None:
        meta = {k: v for k, v in {**metadata, **changes}.items() if v is not None}
        save_file(dict(tensors if tensors is not None else state), str(folder / name), metadata=meta)

    variant("missing-key.safetensors", {k: v for k, v in state.items() if k != "classifier.3.bias"})
    variant("extra-key.safetensors", {**state, "classifier.9.weight": torch.zeros(3)})
    variant("wrong-architecture.safetensors", architecture="small:resnet")
    variant("wrong-classes.safetensors", class_names=json.dumps([f"c{i}" for i in range(12)]))
    variant("bad-json.safetensors", input_size="[1, 28,")
    variant("no-architecture.safetensors", architecture=None)
    variant("text-mean.safetensors", mean=json.dumps("abc"))
    variant("negative-size.safetensors", input_size=json.dumps([1, -28, 28]))
    variant("zero-std.safetensors", std=json.dumps([0.0]))
    variant("hostile-architecture.safetensors", architecture="timm:../../../etc/passwd")
    raw = good.read_bytes()
    (folder / "truncated.safetensors").write_bytes(raw[: len(raw) // 2])
    (folder / "empty.safetensors").write_bytes(b"")
    # a header that claims 2**60 bytes: refused without trying to read or allocate them
    (folder / "huge-header.safetensors").write_bytes((1 << 60).to_bytes(8, "little") + b"{}")
    torch.save(cnn.net.state_dict(), folder / "state.pt")
    pt = (folder / "state.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(pt[: len(pt) // 2])
    (folder / "empty.pt").write_bytes(b"")
    (folder / "notes.txt").write_text("not a model")
    return folder


@pytest.fixture(scope="module")
def rgb_checkpoint(tmp_path_factory) -> Path:
    """A small random CNN for 224 x 224 RGB ImageNet images (cheap to run on image folders)."""
    from gradconceal.data.classes import imagenet_class_names
    from gradconceal.models.small import SMALL_ARCHITECTURES

    torch.manual_seed(0)
    net = SMALL_ARCHITECTURES["cnn"](in_chans=3, num_classes=1000)
    model = PixelModel(net, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), input_size=(3, 224, 224),
                       class_names=imagenet_class_names(), model_name="rgb-cnn", architecture="small:cnn")
    return save_checkpoint(model, tmp_path_factory.mktemp("rgb") / "rgb-cnn.safetensors")


def save_image(path: Path, array: np.ndarray, mode: str = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def rgb_array(seed: int = 0, size: Tuple[int, int] = (40, 50)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def evaluate_folder(capsys, rgb_checkpoint: Path, data: str, out: Path, *extra: str) -> Tuple[int, str, str]:
    return cli(capsys, "evaluate", "--model", str(rgb_checkpoint), "--defense", "none", "--data", data, *QUICK, *extra,
               "--out", str(out))


# == models =============================================================================================
@needs_fashion_mnist
def test_missing_model_name(capsys, tmp_path: Path) -> None:
    code, out, err = cli(capsys, "evaluate", "--model", "", "--data", "fashion-mnist", *QUICK, "--out", str(tmp_path))
    assert_clear_error(code, out, err, "models[0].name must be a non-empty string, got ''")
    code, out, err = evaluate_spec(capsys, tmp_path, models=None)
    assert_clear_error(code, out, err, "spec needs a 'models' entry")
    with pytest.raises(GradconcealError, match="model name must be a non-empty string"):
        load_model("")
    assert_no_report(tmp_path / "out")


@pytest.mark.parametrize("name, message", [
    ("timm:resnet5000", "timm has no model 'resnet5000' (did you mean 'resnet50'?)"),
    ("torchvision:resnet5000", "torchvision has no classification model 'resnet5000' (did you mean 'resnet50'?)"),
    ("fmnist-cn", "unknown model 'fmnist-cn' (did you mean 'fmnist-cnn'?)"),
])
def test_unknown_timm_or_torchvision_model(capsys, tmp_path: Path, name: str, message: str) -> None:
    code, out, err = cli(capsys, "evaluate", "--model", name, "--data", "fashion-mnist", *QUICK, "--out", str(tmp_path))
    assert_clear_error(code, out, err, message)
    assert not tmp_path.joinpath(".gradconceal.lock").exists(), "a bad spec must fail before touching --out"


def test_unknown_library_models_in_the_python_api() -> None:
    with pytest.raises(GradconcealError, match=r"timm has no model 'resnet5000' \(did you mean 'resnet50'\?\)"):
        load_model("timm:resnet5000", pretrained=False)
    with pytest.raises(GradconcealError, match=r"torchvision has no classification model 'resnet5000'"):
        load_model("torchvision:resnet5000", pretrained=False)


@needs_fashion_mnist
@pytest.mark.parametrize("name, message", [
    ("wrong-architecture.safetensors", "do not fit architecture 'small:resnet': 47 missing keys"),
    ("missing-key.safetensors", "do not fit architecture 'small:cnn': 1 missing keys ['classifier.3.bias']"),
    ("extra-key.safetensors", "do not fit architecture 'small:cnn': 1 unexpected keys ['classifier.9.weight']"),
    ("wrong-classes.safetensors", "shape mismatches (file vs model) ['classifier.3.weight (10, 128) vs (12, 128)'"),
])
def test_checkpoint_of_the_wrong_architecture_or_with_missing_or_extra_keys(
        capsys, tmp_path: Path, checkpoints: Path, name: str, message: str) -> None:
    path = checkpoints / name
    code, out, err = cli(capsys, "evaluate", "--model", str(path), "--data", "fashion-mnist", *QUICK,
                         "--out", str(tmp_path))
    assert_clear_error(code, out, err, f"weights {path}", message)
    assert_no_report(tmp_path)
    with pytest.raises(GradconcealError, match="do not fit architecture"):
        load_model(str(path))


def test_weights_for_another_architecture_in_the_python_api(checkpoints: Path) -> None:
    with pytest.raises(GradconcealError, match=r"good.safetensors do not fit architecture 'small:resnet'"):
        load_model("small:resnet", weights=str(checkpoints / "good.safetensors"))
    with pytest.raises(GradconcealError, match=r"state.pt do not fit architecture 'small:resnet'"):
        load_model("small:resnet", weights=str(checkpoints / "state.pt"))


@pytest.mark.parametrize("name, weights_of, message", [
    ("truncated.safetensors", None, r"cannot read checkpoint .*truncated.safetensors: it is truncated: its header "
                                    r"describes \d+ bytes, the file has \d+: copy or download it again"),
    ("empty.safetensors", None, r"cannot read checkpoint .*empty.safetensors: it is empty \(0 bytes\)"),
    ("huge-header.safetensors", None, r"cannot read checkpoint .*huge-header.safetensors"),
    ("truncated.pt", "small:cnn", r"cannot load weights .*truncated.pt with torch.load\(weights_only=True\): "
                                  r"PytorchStreamReader failed reading zip archive: failed finding central directory; "),
    ("empty.pt", "small:cnn", r"cannot load weights .*empty.pt: it is empty \(0 bytes\)"),
])
def test_truncated_or_empty_checkpoint(checkpoints: Path, name: str, weights_of, message: str) -> None:
    path = str(checkpoints / name)
    with pytest.raises(GradconcealError, match=message):
        load_model(weights_of, weights=path) if weights_of else load_model(path)


@pytest.mark.parametrize("name, message", [
    ("bad-json.safetensors", r"bad-json.safetensors: metadata 'input_size' is not valid JSON"),
    ("no-architecture.safetensors", r"no-architecture.safetensors: metadata lacks 'architecture'"),
    ("text-mean.safetensors", r"text-mean.safetensors: metadata 'mean' must be a list of 1 finite number, got 'abc'"),
    ("negative-size.safetensors", r"negative-size.safetensors: metadata 'input_size' must be \[C, H, W\]"),
    ("zero-std.safetensors", r"zero-std.safetensors: metadata 'std' must be > 0"),
    ("hostile-architecture.safetensors", r"hostile-architecture.safetensors: timm has no model '../../../etc/passwd'"),
])
def test_checkpoint_with_edited_metadata(checkpoints: Path, name: str, message: str) -> None:
    with pytest.raises(GradconcealError, match=message):
        load_model(str(checkpoints / name))


@needs_fashion_mnist
def test_truncated_checkpoint_from_the_command_line(capsys, tmp_path: Path, checkpoints: Path) -> None:
    path = checkpoints / "truncated.safetensors"
    code, out, err = cli(capsys, "evaluate", "--model", str(path), "--data", "fashion-mnist", *QUICK,
                         "--out", str(tmp_path))
    assert_clear_error(code, out, err, f"cannot read checkpoint {path}: it is truncated", "copy or download it again")
    assert_no_report(tmp_path)


# == images and labels ==================================================================================
def test_corrupt_or_empty_image_file_is_named_before_anything_is_computed(capsys, tmp_path: Path,
                                                                          rgb_checkpoint: Path) -> None:
    """The first image is fine, the second is empty: the folder's images are decoded once before the run, so the
    empty one is named before any record is computed; no report is written."""
    folder = tmp_path / "val" / "n01440764"
    save_image(folder / "a.png", rgb_array())
    (folder / "b.JPEG").write_bytes(b"")
    out = tmp_path / "out"
    code, stdout, err = evaluate_folder(capsys, rgb_checkpoint, f"imagenet:{tmp_path / 'val'}", out, "--batch-size", "1")
    assert_clear_error(code, stdout, err, f"cannot read image {folder / 'b.JPEG'}: not an image file, or empty")
    assert_no_report(out)
    records = out / "records.jsonl"
    assert not records.exists() or records.read_bytes() == b""


@pytest.mark.parametrize("suffix, cut, message", [
    (".png", 0.6, "(corrupt or truncated?)"),
    (".jpg", 0.5, "(corrupt or truncated?)"),
    (".png", 0.0, "not an image file, or empty"),
    (".png", None, "not an image file, or empty"),
])
def test_corrupt_image_files_are_named(tmp_path: Path, suffix: str, cut, message: str) -> None:
    """A real image cut short, an empty file, and text with an image's name."""
    from gradconceal.data import open_rgb

    path = save_image(tmp_path / f"broken{suffix}", rgb_array(3, (64, 64)))
    content = path.read_bytes()
    path.write_bytes(b"just some text" if cut is None else content[: int(len(content) * cut)])
    with pytest.raises(GradconcealError, match=f"cannot read image {path}") as caught:
        open_rgb(path)
    assert message in str(caught.value)


def test_grey_rgba_palette_and_16_bit_images_are_converted_not_rejected(tmp_path: Path) -> None:
    from gradconceal.data import load_dataset

    folder = tmp_path / "val" / "n01440764"
    level = np.full((30, 40), 128, dtype=np.uint8)
    save_image(folder / "a-grey.png", level, "L")
    rgba = np.dstack([rgb_array(1, (30, 40)), np.full((30, 40), 7, dtype=np.uint8)])
    save_image(folder / "b-rgba.png", rgba, "RGBA")
    Image.fromarray(rgb_array(2, (30, 40))).convert("P").save(folder / "c-palette.png")
    save_image(folder / "d-16bit-white.png", np.full((30, 40), 65535, dtype=np.uint16))
    save_image(folder / "e-16bit-half.png", np.full((30, 40), 32768, dtype=np.uint16))
    save_image(folder / "f-float.tiff", np.full((30, 40), 0.25, dtype=np.float32), "F")
    modes = {p.name: Image.open(p).mode for p in sorted(folder.iterdir())}
    assert modes == {"a-grey.png": "L", "b-rgba.png": "RGBA", "c-palette.png": "P", "d-16bit-white.png": "I;16",
                     "e-16bit-half.png": "I;16", "f-float.tiff": "F"}
    dataset = load_dataset(f"imagenet:{tmp_path / 'val'}")
    images = [dataset[i][0] for i in range(len(dataset))]
    assert all(x.shape == (3, 224, 224) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1 for x in images)
    grey, _, _, white, half, quarter = images
    assert torch.allclose(grey, torch.full_like(grey, 128 / 255))
    assert torch.equal(white, torch.ones_like(white))  # 16-bit values are rescaled, not clipped to 255
    assert torch.allclose(half, torch.full_like(half, 128 / 255))
    assert torch.allclose(quarter, torch.full_like(quarter, 64 / 255))


@needs_fashion_mnist
def test_image_folder_without_classes(capsys, tmp_path: Path, rgb_checkpoint: Path) -> None:
    flat = tmp_path / "flat"
    save_image(flat / "a.png", rgb_array())
    code, out, err = evaluate_folder(capsys, rgb_checkpoint, f"imagenet:{flat}", tmp_path / "out")
    assert_clear_error(code, out, err, f"{flat} has no synset folders", f"'imagenet:{flat}:labels.txt'")
    save_image(tmp_path / "named" / "cats" / "a.png", rgb_array())
    code, out, err = evaluate_folder(capsys, rgb_checkpoint, f"imagenet:{tmp_path / 'named'}", tmp_path / "out")
    assert_clear_error(code, out, err, f"folder {tmp_path / 'named' / 'cats'} is not an ImageNet-1k synset ID")
    assert_no_report(tmp_path / "out")


@pytest.mark.parametrize("labels, message", [
    ("n99999999\n", "line 1 of {labels}: 'n99999999' is not an ImageNet-1k synset ID"),
    ("n0144076\n", "'n0144076' is not an ImageNet-1k synset ID (did you mean"),
    ("1001\n", "line 1 of {labels} holds the number 1001, not a synset ID"),
    ("a.png n01440764\nb.png n01440764\n", "line 2 of {labels} names 'b.png', which is not a file in"),
])
def test_labels_file_with_unknown_synsets_or_out_of_range_labels(capsys, tmp_path: Path, rgb_checkpoint: Path,
                                                                 labels: str, message: str) -> None:
    flat = tmp_path / "flat"
    save_image(flat / "a.png", rgb_array())
    path = tmp_path / "labels.txt"
    path.write_text(labels)
    code, out, err = evaluate_folder(capsys, rgb_checkpoint, f"imagenet:{flat}:{path}", tmp_path / "out")
    assert_clear_error(code, out, err, message.format(labels=path))


def _idx(path: Path, magic: int, array: np.ndarray) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(v).to_bytes(4, "big") for v in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_out_of_range_labels_in_a_data_file(capsys, tmp_path: Path) -> None:
    folder = tmp_path / "fmnist"
    folder.mkdir()
    _idx(folder / "t10k-images-idx3-ubyte", 2051, np.zeros((3, 28, 28)))
    _idx(folder / "t10k-labels-idx1-ubyte", 2049, np.array([0, 12, 3]))
    code, out, err = cli(capsys, "evaluate", "--model", "fmnist-cnn", "--data", f"fashion-mnist:{folder}", *QUICK,
                         "--out", str(tmp_path / "out"))
    assert_clear_error(code, out, err, f"label 12 of item 1 in {folder / 't10k-labels-idx1-ubyte'} is out of range: "
                                       "10 classes (0..9)")
    assert_no_report(tmp_path / "out")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_infinite_pixels_in_an_image_file(capsys, tmp_path: Path, rgb_checkpoint: Path, value: float) -> None:
    folder = tmp_path / "val" / "n01440764"
    pixels = np.full((30, 40), 0.5, dtype=np.float32)
    pixels[3, 4] = value
    save_image(folder / "a.tiff", pixels, "F")
    save_image(folder / "b.png", rgb_array())
    code, out, err = evaluate_folder(capsys, rgb_checkpoint, f"imagenet:{tmp_path / 'val'}", tmp_path / "out")
    assert_clear_error(code, out, err, f"cannot read image {folder / 'a.tiff'}: it has NaN or infinite pixel values")
    assert_no_report(tmp_path / "out")


# == tensors given to the Python API ====================================================================
@pytest.mark.parametrize("make, message", [
    (lambda x: torch.full_like(x, float("nan")), r"images contain NaN or infinite values"),
    (lambda x: x.index_fill(0, torch.tensor([1]), float("inf")), r"images contain NaN or infinite values"),
    (lambda x: x * 255, r"images must be pixels in \[0, 1\], got values in \[[\d.]+, 25\d.*normalisation belongs inside"),
    (lambda x: x - 0.5, r"images must be pixels in \[0, 1\], got values in \[-0.[45]\d*, "),
    (lambda x: (x * 255).to(torch.uint8), r"images must be float32 or float64, got torch.uint8 \(divide uint8 images by 255\)"),
])
def test_nan_inf_or_out_of_range_pixels_passed_to_the_python_api(cnn, make, message: str) -> None:
    from gradconceal.attacks import FGSM, PGD, create_attack

    images, labels = torch.rand(2, 1, 28, 28), torch.tensor([0, 1])
    for attack in (FGSM(cnn), PGD(cnn, steps=1), create_attack("square", cnn, n_queries=1)):
        with pytest.raises(GradconcealError, match=message):
            attack.perturb(make(images), labels)


@pytest.mark.parametrize("images, labels, message", [
    (torch.rand(1, 28, 28), [0], r"images must have shape \(N, C, H, W\), got \(1, 28, 28\) \(add the batch dimension"),
    (torch.rand(2, 3, 28, 28), [0, 1], r"images have shape \(C, H, W\) = \(3, 28, 28\), the model expects \(1, 28, 28\)"),
    (torch.rand(2, 1, 32, 32), [0, 1], r"images have shape \(C, H, W\) = \(1, 32, 32\)"),
    (torch.rand(1, 2, 1, 28, 28), [0], r"images must have shape \(N, C, H, W\), got \(1, 2, 1, 28, 28\)"),
    (torch.rand(0, 1, 28, 28), [], r"images is an empty batch"),
    (torch.rand(2, 1, 28, 28), [0], r"labels must have shape \(2,\), one per image, got \(1,\)"),
    (torch.rand(2, 1, 28, 28), [0, 10], r"labels must be < 10 \(the model's number of classes\), got 10"),
])
def test_wrong_tensor_shapes(cnn, images, labels, message: str) -> None:
    from gradconceal.attacks import PGD

    with pytest.raises(GradconcealError, match=message):
        PGD(cnn, steps=1).perturb(images, torch.tensor(labels, dtype=torch.long))


# == attack settings and spec files =====================================================================
@needs_fashion_mnist
@pytest.mark.parametrize("eps, message", [
    (0, "attacks[0] (PGD-Linf): eps must be > 0 for norm 'linf', got 0"),
    (-0.1, "eps must be > 0 for norm 'linf', got -0.1"),
    ("nan", "eps must be a finite number, got 'nan'"),
    ("8/0", "eps must be a number or a fraction like '8/255', got '8/0'"),
    (5, "eps must be <= 1 for norm 'linf' (pixels are in [0, 1]), got 5"),
    ("eight", "eps must be a number or a fraction like '8/255', got 'eight'"),
])
def test_eps_zero_negative_nan_or_absurd(capsys, tmp_path: Path, eps, message: str) -> None:
    code, out, err = evaluate_spec(capsys, tmp_path, attacks=[{"attack": "pgd", "norm": "linf", "eps": eps}])
    assert_clear_error(code, out, err, message)
    assert_no_report(tmp_path / "out")


@needs_fashion_mnist
def test_eps_beyond_any_distance_and_nan_in_json_and_toml(capsys, tmp_path: Path) -> None:
    code, out, err = evaluate_spec(capsys, tmp_path, attacks=[{"attack": "pgd", "norm": "l2", "eps": 1e6}])
    assert_clear_error(code, out, err, "eps=1e+06 for norm 'l2' exceeds the largest possible distance between two "
                                       "1x28x28 images in [0, 1] (28)")
    spec = tmp_path / "nan.json"  # JSON as Python writes it: NaN is accepted by the parser, refused by the check
    spec.write_text('{"models": ["fmnist-cnn"], "data": "fashion-mnist", "attacks": [{"attack": "fgsm", "eps": NaN}]}')
    code, out, err = cli(capsys, "evaluate", str(spec), "--out", str(tmp_path / "out"))
    assert_clear_error(code, out, err, "attacks[0] (FGSM): eps must be a finite number, got nan")
    toml = tmp_path / "nan.toml"
    toml.write_text('models = ["fmnist-cnn"]\ndata = "fashion-mnist"\n[[attacks]]\nattack = "fgsm"\neps = nan\n')
    code, out, err = cli(capsys, "evaluate", str(toml), "--out", str(tmp_path / "out"))
    assert_clear_error(code, out, err, "eps must be a finite number, got nan")


@needs_fashion_mnist
@pytest.mark.parametrize("attack, message", [
    ({"attack": "pdg"}, "attacks[0] (PDG): unknown attack 'pdg' (did you mean 'pgd'?)"),
    ({"attack": "pgd", "norm": "l3"}, "attacks[0] (PGD-L3): norm must be one of ['linf', 'l2', 'l1'], got 'l3'"),
    ({"attack": "pgd", "norm": "Linf", "eps": "8/255", "view": "bdpa"}, "attacks[0].view must be one of ['plain', 'bpda', 'eot', 'bpda+eot', 'transfer'], got 'bdpa' (did you mean 'bpda'?)"),
])
def test_unknown_attack_or_norm(capsys, tmp_path: Path, attack, message: str) -> None:
    code, out, err = evaluate_spec(capsys, tmp_path, attacks=[attack])
    assert_clear_error(code, out, err, message)


@needs_fashion_mnist
@pytest.mark.parametrize("entries, message", [
    ({"seeed": 1}, "unknown key 'seeed' in spec (did you mean 'seed'?)"),
    ({"data": {"sorce": "fashion-mnist"}}, "unknown key 'sorce' in data (did you mean 'source'?)"),
    ({"models": [{"name": "fmnist-cnn", "lable": "x"}]}, "unknown key 'lable' in models[0] (did you mean 'label'?)"),
    ({"defenses": [{"name": "gcm", "epsilom": 1e-8}]}, "unknown key 'epsilom' in defenses[0] (did you mean 'epsilon'?)"),
    ({"attacks": [{"attack": "pgd", "stpes": 3}]}, "attacks[0] (PGD): attack 'pgd' has no setting 'stpes' (did you mean 'steps'?)"),
    ({"attacks": [{"preset": "paper", "overides": {}}]}, "unknown key 'overides' in attacks[0] (did you mean 'overrides'?)"),
])
def test_spec_file_with_a_typo_key_suggests_the_right_one(capsys, tmp_path: Path, entries, message: str) -> None:
    code, out, err = evaluate_spec(capsys, tmp_path, **entries)
    assert_clear_error(code, out, err, message)


def test_spec_of_a_newer_format_version(capsys, tmp_path: Path) -> None:
    code, out, err = evaluate_spec(capsys, tmp_path, format_version=2)
    assert_clear_error(code, out, err, "spec format_version 2 is newer than this gradconceal understands (1); upgrade")
    code, out, err = evaluate_spec(capsys, tmp_path, format_version="1")
    assert_clear_error(code, out, err, "format_version must be a positive integer, got '1'")


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe\x00models", "cannot read spec file {path}: 'utf-8' codec can't decode"),
    (b"[1, 2]", "spec file {path} must hold a table/object at the top, got list"),
    (b"{\"models\": [", "spec file {path} is not valid JSON"),
])
def test_unreadable_spec_files_are_named(capsys, tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "spec.json"
    path.write_bytes(content)
    code, out, err = cli(capsys, "evaluate", str(path), "--out", str(tmp_path / "out"))
    assert_clear_error(code, out, err, message.format(path=path))
    code, out, err = cli(capsys, "evaluate", str(tmp_path), "--out", str(tmp_path / "out"))
    assert_clear_error(code, out, err, f"spec file {tmp_path} is a folder")


# == output folder, device, batch size ==================================================================
@needs_fashion_mnist
def test_output_folder_that_is_a_file_or_under_a_file(capsys, tmp_path: Path) -> None:
    blocker = tmp_path / "report"
    blocker.write_text("a file where the folder should go")
    args = ["evaluate", "--model", "fmnist-cnn", "--data", "fashion-mnist", *QUICK]
    code, out, err = cli(capsys, *args, "--out", str(blocker))
    assert_clear_error(code, out, err, f"output folder {blocker} is a file, not a folder")
    code, out, err = cli(capsys, *args, "--out", str(blocker / "inside"))
    assert_clear_error(code, out, err, f"output folder {blocker / 'inside'} is not writable", "Not a directory")
    assert blocker.read_text() == "a file where the folder should go"


@needs_fashion_mnist
def test_output_folder_without_write_permission(capsys, tmp_path: Path, monkeypatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: refuse the folder the way the kernel would for anyone else
        import builtins

        real_open = builtins.open

        def guarded(file, *args, **kwargs):
            if str(file).startswith(str(locked)):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", guarded)
    else:
        locked.chmod(0o500)
    try:
        code, out, err = cli(capsys, "evaluate", "--model", "fmnist-cnn", "--data", "fashion-mnist", *QUICK,
                             "--out", str(locked))
    finally:
        locked.chmod(0o700)
    assert_clear_error(code, out, err, f"output folder {locked} is not writable", "Permission denied")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_device_cuda_where_there_is_none(capsys, tmp_path: Path) -> None:
    code, out, err = cli(capsys, "evaluate", "--model", "fmnist-cnn", "--data", "fashion-mnist", "--n", "2",
                         "--device", "cuda", "--out", str(tmp_path / "out"))
    assert_clear_error(code, out, err, "device 'cuda' asked for, but no CUDA device is available (use 'cpu' or 'auto')")
    code, out, err = cli(capsys, "evaluate", "--model", "fmnist-cnn", "--data", "fashion-mnist", "--device", "cuda:7",
                         "--out", str(tmp_path / "out"))
    assert_clear_error(code, out, err, "device 'cuda:7' asked for")
    code, out, err = cli(capsys, "train", "small:cnn", "--device", "cuda", "--out", str(tmp_path / "train"))
    assert_clear_error(code, out, err, "device 'cuda' was asked for but torch sees no CUDA device")
    assert not (tmp_path / "out").exists() and not (tmp_path / "train").exists()


def test_batch_size_zero(capsys, tmp_path: Path) -> None:
    code, out, err = cli(capsys, "evaluate", "--model", "fmnist-cnn", "--data", "fashion-mnist", "--batch-size", "0",
                         "--out", str(tmp_path / "out"))
    assert_clear_error(code, out, err, "batch_size must be an integer >= 1, got 0")
    code, out, err = cli(capsys, "train", "small:cnn", "--batch-size", "0", "--out", str(tmp_path / "train"))
    assert_clear_error(code, out, err, "batch_size must be an integer >= 1, got 0")
    from gradconceal.masking import audit

    with pytest.raises(GradconcealError, match="batch_size must be a positive integer or None, got 0"):
        audit("fmnist-cnn", quick=True, batch_size=0)


@needs_fashion_mnist
def test_batch_size_larger_than_the_data_runs_and_gives_the_same_numbers(tmp_path: Path) -> None:
    from gradconceal.evaluation.api import evaluate

    spec = {"models": ["fmnist-cnn"], "defenses": ["none"], "data": {"source": "fashion-mnist", "n": 3},
            "attacks": [{"label": "FGSM", "attack": "fgsm", "eps": "8/255"}], "device": "cpu", "audit": False,
            "gallery": 0}
    huge = evaluate({**spec, "batch_size": 10_000}, tmp_path / "huge", quiet=True, plots=False)
    single = evaluate({**spec, "batch_size": 1}, tmp_path / "single", quiet=True, plots=False)
    assert (tmp_path / "huge" / "report.md").is_file()
    assert huge.to_dict()["rows"] == single.to_dict()["rows"]


# == a spec reads and writes only the paths it names ====================================================
def _files(root: Path) -> List[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@needs_fashion_mnist
@pytest.mark.filterwarnings("ignore:constrained_layout not applied")  # plot titles made of very long labels
def test_labels_cannot_make_the_tool_write_outside_the_output_folder(tmp_path: Path) -> None:
    from gradconceal.evaluation.api import evaluate

    work = tmp_path / "a" / "b" / "c"
    out = work / "out"
    hostile = ["..", "../../../../escaped", str(tmp_path / "absolute"), ".hidden"]
    spec = {"models": [{"name": "fmnist-cnn", "label": hostile[0]}, {"name": "fmnist-cnn", "label": hostile[1]}],
            "defenses": [{"name": "none", "label": hostile[2]}, {"name": "gcm", "label": hostile[3]}],
            "data": {"source": "fashion-mnist", "n": 2},
            "attacks": [{"label": "../../../../../../x", "attack": "fgsm", "eps": "8/255"}],
            "device": "cpu", "audit": False, "keep_adversarial": True, "gallery": 2, "title": "../../title"}
    work.mkdir(parents=True)
    before = set(_files(tmp_path))
    results = evaluate(spec, out, quiet=True)
    written = set(_files(tmp_path)) - before
    assert written and all(out in path.parents for path in written), sorted(written)
    pngs = [p for p in written if p.parent.parent.parent.parent.name == "adversarial"]
    assert pngs and all(not part.startswith(".") for p in pngs for part in p.relative_to(out).parts)
    assert {r.model for r in results.rows} == set(hostile[:2])  # the labels themselves are kept for the tables


@needs_fashion_mnist
def test_model_names_that_are_paths_are_resolved_and_read_only_as_checkpoints(capsys, tmp_path: Path,
                                                                            checkpoints: Path) -> None:
    spec = write_spec(tmp_path, models=["../../no/such/model.safetensors"])
    code, out, err = cli(capsys, "evaluate", str(spec), "--out", str(tmp_path / "out"))
    resolved = (tmp_path / "../../no/such/model.safetensors").resolve()
    assert_clear_error(code, out, err, f"model checkpoint not found: {resolved}")
    text_file = checkpoints / "notes.txt"
    code, out, err = cli(capsys, "evaluate", "--model", str(text_file), "--data", "fashion-mnist", *QUICK,
                         "--out", str(tmp_path / "out"))
    assert_clear_error(code, out, err, f"{text_file} is a plain state dict without architecture")
    assert text_file.read_text() == "not a model"


# == --debug ============================================================================================
def test_debug_shows_the_traceback_and_still_exits_1(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, seeed=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    debug = subprocess.run([sys.executable, "-m", "gradconceal", "--debug", "evaluate", str(spec)], capture_output=True,
                           text=True, env=env)
    assert debug.returncode == 1  # without --debug: one line (tests/test_cli.py runs the installed command so)
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().endswith("GradconcealError: unknown key 'seeed' in spec (did you mean 'seed'?)")


# == still to be fixed in the attack, audit and training code (docs/errors.md, "open") ===================
def _expect(fn, message: str) -> None:
    with pytest.raises(GradconcealError, match=message):
        fn()


def test_audit_refuses_nan_pixels(cnn) -> None:
    from gradconceal.masking import audit

    images = torch.full((4, 1, 28, 28), float("nan"))
    _expect(lambda: audit(cnn, (images, torch.arange(4)), quick=True), "NaN")


def test_audit_refuses_out_of_range_labels(cnn) -> None:
    from gradconceal.masking import audit

    _expect(lambda: audit(cnn, (torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 99])), quick=True),
            r"labels.*99|99.*labels")


@pytest.mark.parametrize("settings, message", [
    ({"lr": float("nan")}, "lr must be"),
    ({"lr": float("inf")}, "lr must be"),
    ({"weight_decay": float("nan")}, "weight_decay must be"),
    ({"pgd": True, "pgd_eps": float("nan")}, "pgd_eps must be"),
    ({"pgd": True, "pgd_eps": 50.0}, "pgd_eps must be"),
    ({"fgsm": True, "fgsm_eps_max": float("inf")}, "fgsm_eps"),
])
def test_training_settings_refuse_nan_inf_and_absurd_values(settings, message: str) -> None:
    from gradconceal.training import make_config

    _expect(lambda: make_config("default", **settings), message)


def test_training_refuses_data_of_the_wrong_image_size(tmp_path: Path) -> None:
    from gradconceal.training import train

    _expect(lambda: train("small:cnn", data="photos", epochs=1, batch_size=4, out_dir=tmp_path, progress=False),
            r"photos.*\(3, 224, 224\)|\(1, 28, 28\)")


@pytest.mark.slow
@needs_fashion_mnist
def test_a_run_folder_cannot_make_training_read_or_delete_another_folder(tmp_path: Path) -> None:
    from gradconceal.training import train

    tiny = dict(train_limit=64, test_limit=32, batch_size=32, progress=False)
    other = tmp_path / "other-run"
    train("small:cnn", epochs=2, stop_after=1, out_dir=other, **tiny)
    kept = sorted(p.name for p in other.iterdir())
    pointer = json.loads((other / "last.json").read_text())
    hostile = tmp_path / "hostile-run"
    hostile.mkdir()
    (hostile / "last.json").write_text(json.dumps({**pointer, "model": f"../other-run/{pointer['model']}",
                                                   "state": f"../other-run/{pointer['state']}"}))
    try:
        with pytest.raises(GradconcealError, match="last.json"):
            train("small:cnn", epochs=2, resume=True, out_dir=hostile, **tiny)
    finally:
        assert sorted(p.name for p in other.iterdir()) == kept, "files of another run were deleted"
