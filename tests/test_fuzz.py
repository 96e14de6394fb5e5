"""Fuzzing: whatever a spec, a data source string, an image file, a labels file or a checkpoint holds, reading
it either works or raises ``GradconcealError`` (one clear line), never another exception."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from gradconceal.errors import GradconcealError

# Few, fixed examples by default (the suite stays fast and repeatable); GRADCONCEAL_FUZZ_EXAMPLES=2000 explores
# with fresh random examples each run.
_EXAMPLES = int(os.environ.get("GRADCONCEAL_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_EXAMPLES or 60, deadline=None, derandomize=not _EXAMPLES,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# -- values a spec can hold (JSON and TOML scalars, lists, tables) ---------------------------------------
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["8/255", "0/0", "1/0", "nan", "-inf", "linf", "l2", "pgd", "fgsm", "square", "paper", "gcm",
                     "bpda", "eot", "fmnist-cnn", "timm:", "small:", "../x", "/", "", " ", "1e999", "fashion-mnist"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)

VALID_SPEC: Dict[str, Any] = {
    "format_version": 1,
    "models": ["fmnist-cnn"],
    "defenses": ["none", "gcm"],
    "data": {"source": "fashion-mnist", "n": 4},
    "attacks": ["paper", {"label": "PGD", "attack": "pgd", "norm": "linf", "eps": "8/255", "steps": 2}],
    "batch_size": 4,
    "device": "cpu",
    "seed": 0,
}
SPEC_PATHS = [("format_version",), ("models",), ("models", 0), ("defenses",), ("defenses", 1), ("data",),
              ("data", "source"), ("data", "n"), ("data", "split"), ("attacks",), ("attacks", 0), ("attacks", 1),
              ("attacks", 1, "eps"), ("attacks", 1, "norm"), ("attacks", 1, "steps"), ("attacks", 1, "attack"),
              ("attacks", 1, "view"), ("attacks", 1, "alpha"), ("batch_size",), ("device",), ("dtype",), ("seed",),
              ("sweep",), ("cascade",), ("gallery",), ("title",)]


def _mutated(path, value, extra_key, extra_value) -> Dict[str, Any]:
    spec = json.loads(json.dumps(VALID_SPEC))
    target = spec
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    if extra_key is not None:
        spec[extra_key] = extra_value
    return spec


def parse_and_plan(spec: Any) -> None:
    """Everything ``evaluate`` checks before it loads a model: the spec itself and the attacks it names."""
    from gradconceal.evaluation.plan import plan_attacks
    from gradconceal.evaluation.spec import load_spec

    parsed = load_spec(spec)
    plan_attacks(parsed, (1, 28, 28))


@FUZZ
@given(spec=st.dictionaries(st.sampled_from(["format_version", "models", "defenses", "data", "attacks", "seed",
                                             "batch_size", "device", "dtype", "sweep", "title", "x"]), values,
                            max_size=8))
def test_spec_of_random_values_parses_or_says_what_is_wrong(spec) -> None:
    try:
        parse_and_plan(spec)
    except GradconcealError as error:
        assert str(error) and "\n" not in str(error)


@FUZZ
@given(path=st.sampled_from(SPEC_PATHS), value=values,
       extra_key=st.one_of(st.none(), st.text(max_size=10)), extra_value=values)
def test_a_valid_spec_with_one_value_changed_parses_or_says_what_is_wrong(path, value, extra_key, extra_value) -> None:
    assume(extra_key not in VALID_SPEC)
    try:
        parse_and_plan(_mutated(path, value, extra_key, extra_value))
    except GradconcealError as error:
        assert str(error) and "\n" not in str(error)


@FUZZ
@given(content=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)),
       suffix=st.sampled_from([".toml", ".json", ".txt", ""]))
def test_spec_files_of_random_bytes(tmp_path_factory, content: bytes, suffix: str) -> None:
    from gradconceal.evaluation.spec import load_spec

    path = tmp_path_factory.mktemp("spec") / f"spec{suffix}"
    path.write_bytes(content)
    try:
        load_spec(path)
    except GradconcealError as error:
        assert str(path) in str(error) or "spec" in str(error)


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list('abcdefghijklmnopqrstuvwxyz=[]{}"\'\n ,.:0123456789-_/#')),
                    max_size=120))
def test_toml_like_text_never_crashes_the_parser(tmp_path_factory, text: str) -> None:
    from gradconceal.evaluation.spec import load_spec

    path = tmp_path_factory.mktemp("spec") / "spec.toml"
    path.write_text('models = ["fmnist-cnn"]\n' + text)
    try:
        load_spec(path)
    except GradconcealError:
        pass


# -- data sources ---------------------------------------------------------------------------------------
@FUZZ
@given(prefix=st.sampled_from(["", "photos", "digits", "imagenet", "fashion-mnist", "mnist", "imagenet:", "photos:",
                               "fashion-mnist:", "imagenet:/nonexistent", "imagenet:.:", "fashion-mnist:/"]),
       rest=st.text(max_size=15), split=st.sampled_from(["test", "train", "val", ""]),
       limit=st.one_of(st.none(), st.integers(-3, 5), st.booleans(), st.floats(0, 3)))
def test_data_source_strings(prefix: str, rest: str, split: str, limit) -> None:
    from gradconceal.data import load_dataset

    assume(prefix + rest not in ("fashion-mnist", "fashion-mnist:", "fashion-mnist:/"))  # the real set: slow to read
    try:
        load_dataset(prefix + rest, split=split, limit=limit)
    except GradconcealError:
        pass


# -- image files ----------------------------------------------------------------------------------------
MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr"]
FORMATS = {".png": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I"), ".tiff": tuple(MODES), ".bmp": ("1", "L", "P", "RGB"),
           ".jpg": ("L", "RGB", "CMYK"), ".gif": ("L", "P"), ".webp": ("RGB", "RGBA")}


def _image(mode: str, width: int, height: int, seed: int, special: str) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "F":
        array = rng.normal(0, 2, (height, width)).astype(np.float32)
        if special != "none":
            array.flat[int(rng.integers(array.size))] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[special]
        return Image.fromarray(array, mode="F")
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-(2**31), 2**31 - 1, (height, width), dtype=np.int32))
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return rgb.convert(mode)


def check_rgb(path: Path) -> None:
    """``open_rgb`` gives an 8-bit RGB image of the file's size, or a GradconcealError naming the file."""
    from gradconceal.data import open_rgb

    try:
        image = open_rgb(path)
    except GradconcealError as error:
        assert str(path) in str(error)
        return
    assert image.mode == "RGB" and min(image.size) >= 1


@FUZZ
@given(suffix=st.sampled_from(sorted(FORMATS)), data=st.data(), width=st.integers(1, 40), height=st.integers(1, 40),
       seed=st.integers(0, 2**16), special=st.sampled_from(["none", "nan", "inf", "-inf"]),
       cut=st.one_of(st.none(), st.floats(0, 1)))
def test_image_files_of_every_mode_whole_or_cut_short(tmp_path_factory, suffix, data, width, height, seed, special,
                                                      cut) -> None:
    mode = data.draw(st.sampled_from(FORMATS[suffix]))
    buffer = io.BytesIO()
    try:
        _image(mode, width, height, seed, special).save(buffer, format=Image.registered_extensions()[suffix])
    except (OSError, ValueError, KeyError):
        assume(False)  # this Pillow cannot write that mode in that format
    content = buffer.getvalue()
    if cut is not None:
        content = content[: int(len(content) * cut)]
    path = tmp_path_factory.mktemp("img") / f"image{suffix}"
    path.write_bytes(content)
    check_rgb(path)
    if special != "none" and mode == "F" and cut is None:
        with pytest.raises(GradconcealError, match="NaN or infinite"):
            from gradconceal.data import open_rgb

            open_rgb(path)


@FUZZ
@given(content=st.binary(max_size=300), header=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a",
                                                                  b"BM", b"II*\x00", b"MM\x00*", b"RIFF"]),
       suffix=st.sampled_from([".png", ".jpg", ".tif", ".bmp", ".gif", ".webp", ".JPEG"]))
def test_image_files_of_random_bytes(tmp_path_factory, content: bytes, header: bytes, suffix: str) -> None:
    path = tmp_path_factory.mktemp("img") / f"image{suffix}"
    path.write_bytes(header + content)
    check_rgb(path)


@FUZZ
@given(lines=st.lists(st.one_of(st.sampled_from(["n01440764", "n01443537", "n99999999", "1", "0", "1001", "#", "",
                                                  "a.png n01440764", "b.png n01443537", "a n01440764", "x.png",
                                                  "ImageId,PredictionString", "a.png,n01440764 1 2 3 4"]),
                                st.text(max_size=20)), max_size=6))
def test_labels_files(tmp_path_factory, lines) -> None:
    from gradconceal.data.imagenet import load_imagenet

    folder = tmp_path_factory.mktemp("flat")
    for name in ("a.png", "b.png"):
        Image.new("RGB", (4, 4)).save(folder / name)
    labels = folder.parent / f"{folder.name}-labels.txt"
    labels.write_text("\n".join(lines))
    try:
        dataset = load_imagenet(folder, labels)
    except GradconcealError:
        return
    assert all(0 <= t < 1000 for t in dataset.targets)


@FUZZ
@given(content=st.binary(max_size=64), magic=st.sampled_from([2049, 2051, 0]), dims=st.integers(0, 255))
def test_idx_files(tmp_path_factory, content: bytes, magic: int, dims: int) -> None:
    from gradconceal.data.fashion_mnist import read_idx

    path = tmp_path_factory.mktemp("idx") / "t10k-labels-idx1-ubyte"
    path.write_bytes(magic.to_bytes(4, "big")[:3] + bytes([dims]) + content)
    try:
        read_idx(path, magic)
    except GradconcealError as error:
        assert str(path) in str(error)


# -- checkpoints ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    from gradconceal.models.checkpoint import save_checkpoint
    from gradconceal.models.zoo import load_model

    path = save_checkpoint(load_model("small:cnn"), tmp_path_factory.mktemp("ckpt") / "cnn.safetensors")
    return path.read_bytes()


@FUZZ
@given(cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4))
def test_checkpoints_cut_short_or_with_flipped_bytes(tmp_path_factory, checkpoint_bytes: bytes, cut: float, flips) -> None:
    from gradconceal.models.zoo import load_model

    content = bytearray(checkpoint_bytes[: max(0, int(len(checkpoint_bytes) * cut))] if cut < 1 else checkpoint_bytes)
    for where, value in flips:
        if content:
            content[min(len(content) - 1, int(where * len(content)))] = value
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    path.write_bytes(bytes(content))
    try:
        model = load_model(str(path))
    except GradconcealError as error:
        assert str(path) in str(error)
        return
    with torch.no_grad():  # bytes flipped inside the weights still load: the file format cannot tell
        logits = model(torch.rand(1, *model.input_size))
    assert logits.shape == (1, model.num_classes)


@FUZZ
@given(metadata=st.dictionaries(st.sampled_from(["format", "architecture", "mean", "std", "input_size", "class_names",
                                                 "extra", "model_name"]),
                                st.one_of(st.text(max_size=20), values.map(json.dumps)), max_size=8))
def test_checkpoint_metadata_of_random_values(tmp_path_factory, metadata) -> None:
    from safetensors.torch import save_file

    from gradconceal.models.zoo import load_model
    from gradconceal.models.small import SMALL_ARCHITECTURES

    state = SMALL_ARCHITECTURES["cnn"](in_chans=1, num_classes=10).state_dict()
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    metadata = {**metadata, "format": metadata.get("format", "gradconceal-checkpoint/1")}
    save_file(state, str(path), metadata=metadata)
    try:
        load_model(str(path))
    except GradconcealError as error:
        assert str(path) in str(error) or "architecture" in str(error) or "model" in str(error)
