"""Data sources: shapes, ranges, labels and class order, and errors that name the bad file."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradconceal import GradconcealError
from gradconceal.data import imagenet_class_names, imagenet_synsets, load_dataset
from gradconceal.data.fashion_mnist import DEBIAN_DIR

TENCH, TABBY, WINDSOR_TIE = "n01440764", "n02123045", "n04591157"


def write_image(path: Path, mode: str = "RGB", size=(40, 30), value=128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(np.full(size[::-1], value, dtype=np.uint16)).save(path)
    else:
        Image.new(mode, size, value if mode == "L" else (value,) * len(mode)).save(path)
    return path


def write_idx(path: Path, array: np.ndarray, magic: int, compress: bool) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


# ------------------------------------------------------------------------------------------ photos
@pytest.fixture(scope="module")
def photos():
    return load_dataset("photos")


def test_photos_are_224_pixels_in_unit_range_with_accepted_label_sets(photos):
    assert len(photos) == 9 and photos.image_size == (3, 224, 224)
    assert photos.name == "photos" and len(photos.class_names) == 1000
    for index in range(len(photos)):
        image, label = photos[index]
        assert image.shape == (3, 224, 224) and image.dtype == torch.float32
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.std()) > 0.05
        assert label == photos.targets[index] and label in photos.label_sets[index]
    assert photos.label_sets[photos.photo_names.index("chelsea")] == {281, 282, 285}
    camera = photos[photos.photo_names.index("camera")][0]
    assert torch.equal(camera[0], camera[1]) and torch.equal(camera[1], camera[2])  # grey photo -> 3 equal channels


def test_photo_label_file_names_match_imagenet_and_give_reasons():
    records = json.loads((Path(__file__).parents[1] / "src/gradconceal/data/photos.json").read_text())["photos"]
    names = imagenet_class_names()
    for record in records:
        assert [names[i] for i in record["labels"]] == record["label_names"], record["name"]
        assert len(record["reason"]) > 30


def test_limit_takes_the_first_images(photos):
    first = load_dataset("photos", limit=2)
    assert len(first) == 2 and first.photo_names == photos.photo_names[:2]
    assert torch.equal(first[1][0], photos[1][0])
    with pytest.raises(GradconcealError, match=r"limit must be an integer >= 1 or None, got 0"):
        load_dataset("photos", limit=0)


# ------------------------------------------------------------------------------------------ digits, fashion-mnist
def test_digits_are_8x8_in_unit_range_with_ten_classes():
    test, train = load_dataset("digits"), load_dataset("digits", split="train")
    assert (len(train), len(test)) == (1437, 360)
    assert test.image_size == (1, 8, 8) and test.class_names == [str(d) for d in range(10)]
    values = torch.stack([test[i][0] for i in range(len(test))])
    assert float(values.min()) == 0.0 and float(values.max()) == 1.0
    assert set(test.targets) == set(range(10))


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="Debian package dataset-fashion-mnist is not installed")
def test_fashion_mnist_test_split_has_10000_balanced_images():
    data = load_dataset("fashion-mnist")
    assert len(data) == 10000 and data.image_size == (1, 28, 28)
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    assert np.bincount(data.targets).tolist() == [1000] * 10
    image, label = data[0]
    assert image.dtype == torch.float32 and 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert label == 9  # the first test image is an ankle boot
    assert len(load_dataset("fashion-mnist", split="train", limit=7)) == 7


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_reads_idx_files_from_a_folder(tmp_path, compress):
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    suffix = ".gz" if compress else ""
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, 2051, compress)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", np.array([4, 0, 9]), 2049, compress)
    data = load_dataset(f"fashion-mnist:{tmp_path}")
    assert data.targets == [4, 0, 9]
    assert torch.allclose(data[2][0][0], torch.tensor(images[2], dtype=torch.float32) / 255)


def test_fashion_mnist_errors_name_the_file(tmp_path):
    with pytest.raises(GradconcealError, match=r"Fashion-MNIST test files .* not found in .*download=True"):
        load_dataset(f"fashion-mnist:{tmp_path}")
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28)), 2051, False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([3, 12]), 2049, False)
    with pytest.raises(GradconcealError, match=r"label 12 of item 1 in .*t10k-labels-idx1-ubyte is out of range"):
        load_dataset(f"fashion-mnist:{tmp_path}")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([3, 1]), 2051, False)  # wrong magic
    with pytest.raises(GradconcealError, match=r"t10k-labels-idx1-ubyte is not an IDX file of the expected kind"):
        load_dataset(f"fashion-mnist:{tmp_path}")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes((2049).to_bytes(4, "big") + (5).to_bytes(4, "big") + b"\x01")
    with pytest.raises(GradconcealError, match=r"t10k-labels-idx1-ubyte is truncated"):
        load_dataset(f"fashion-mnist:{tmp_path}")


# ------------------------------------------------------------------------------------------ imagenet folders
@pytest.fixture()
def synset_tree(tmp_path):
    root = tmp_path / "val"
    write_image(root / WINDSOR_TIE / "a.png", "RGBA")
    write_image(root / TENCH / "a.jpg")
    write_image(root / TENCH / "b.JPEG", "L")
    write_image(root / TABBY / "a.png", "I;16", value=32896)  # 16-bit mid grey
    write_image(root / TABBY / "b.png", "P")
    (root / TABBY / "notes.txt").write_text("not an image")
    return root


def test_synset_folders_follow_the_imagenet_class_order(synset_tree):
    data = load_dataset(f"imagenet:{synset_tree}")
    synsets = imagenet_synsets()
    assert list(synsets) == sorted(synsets) and synsets[281] == TABBY and synsets[906] == WINDSOR_TIE
    # round-robin over classes: each class's first image, then each class's second
    assert data.targets == [0, 281, 906, 0, 281]
    assert [f.name for f in data.files] == ["a.jpg", "a.png", "a.png", "b.JPEG", "b.png"]
    assert data.image_size == (3, 224, 224) and data.class_names[906] == "Windsor tie"
    grey16 = data[1][0]
    assert grey16.shape == (3, 224, 224)
    assert float(grey16.min()) == pytest.approx(128 / 255) and float(grey16.max()) == pytest.approx(128 / 255)
    assert load_dataset(f"imagenet:{synset_tree}", limit=3).targets == [0, 281, 906]


def test_a_transform_replaces_the_default_preprocessing(synset_tree):
    from torchvision import transforms

    data = load_dataset(f"imagenet:{synset_tree}", transform=transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()]))
    assert data.image_size == (3, 32, 32)


def test_unknown_synset_folder_is_named(synset_tree):
    write_image(synset_tree / "n0144076" / "x.png")
    with pytest.raises(GradconcealError, match=r"folder .*n0144076 is not an ImageNet-1k synset ID \(did you mean 'n01440764'\?\)"):
        load_dataset(f"imagenet:{synset_tree}")


@pytest.mark.parametrize("content", [b"", b"\xff\xd8\xff\xe0 not really a jpeg"], ids=["empty", "corrupt"])
def test_unreadable_images_are_named(synset_tree, content):
    bad = synset_tree / TENCH / "0.jpg"
    bad.write_bytes(content)
    data = load_dataset(f"imagenet:{synset_tree}")
    assert data.files[0] == bad
    with pytest.raises(GradconcealError, match=r"cannot read image .*0\.jpg"):
        data[0]


def test_truncated_jpeg_is_named(synset_tree):
    good = synset_tree / TENCH / "a.jpg"
    write_image(good, size=(256, 256))
    good.write_bytes(good.read_bytes()[:400])
    data = load_dataset(f"imagenet:{synset_tree}")
    with pytest.raises(GradconcealError, match=r"cannot read image .*a\.jpg: .*truncated"):
        data[0]


def test_flat_folder_with_one_synset_per_line(tmp_path):
    for name in ("img_2.png", "img_1.png", "img_3.png"):
        write_image(tmp_path / "flat" / name)
    labels = tmp_path / "labels.txt"
    labels.write_text(f"{TENCH}\n{TABBY}\n{WINDSOR_TIE}\n")
    data = load_dataset(f"imagenet:{tmp_path / 'flat'}:{labels}")
    assert [f.name for f in data.files] == ["img_1.png", "img_2.png", "img_3.png"]  # sorted names
    assert data.targets == [0, 281, 906]
    labels.write_text(f"{TENCH}\n{TABBY}\n")
    with pytest.raises(GradconcealError, match=r"labels.txt has 2 lines but .* holds 3 image files"):
        load_dataset(f"imagenet:{tmp_path / 'flat'}:{labels}")


def test_flat_folder_with_filename_synset_pairs(tmp_path):
    for name in ("ILSVRC2012_val_00000002.JPEG", "ILSVRC2012_val_00000001.JPEG"):
        write_image(tmp_path / "flat" / name)
    labels = tmp_path / "LOC_val_solution.csv"
    labels.write_text(
        "ImageId,PredictionString\n"
        f"ILSVRC2012_val_00000002,{TABBY} 1 2 3 4\n"
        f"ILSVRC2012_val_00000001,{WINDSOR_TIE} 5 6 7 8 {WINDSOR_TIE} 1 1 2 2\n"
    )
    data = load_dataset(f"imagenet:{tmp_path / 'flat'}:{labels}")
    assert [f.name for f in data.files] == ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG"]
    assert data.targets == [906, 281]


def test_labels_files_with_devkit_ids_or_unknown_synsets_are_named(tmp_path):
    write_image(tmp_path / "flat" / "a.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("65\n")
    with pytest.raises(GradconcealError, match=r"line 1 of .*labels.txt holds the number 65, not a synset ID.*devkit"):
        load_dataset(f"imagenet:{tmp_path / 'flat'}:{labels}")
    labels.write_text("a.png 65\n")
    with pytest.raises(GradconcealError, match=r"line 1 of .*labels.txt holds the number 65"):
        load_dataset(f"imagenet:{tmp_path / 'flat'}:{labels}")
    labels.write_text("a.png n99999999\n")
    with pytest.raises(GradconcealError, match=r"line 1 of .*labels.txt: 'n99999999' is not an ImageNet-1k synset ID"):
        load_dataset(f"imagenet:{tmp_path / 'flat'}:{labels}")
    labels.write_text(f"b.png {TENCH}\n")
    with pytest.raises(GradconcealError, match=r"line 1 of .*labels.txt names 'b.png', which is not a file in"):
        load_dataset(f"imagenet:{tmp_path / 'flat'}:{labels}")


def test_spec_errors_are_clear(tmp_path):
    with pytest.raises(GradconcealError, match=r"unknown data source 'photo' \(did you mean 'photos'\?\)"):
        load_dataset("photo")
    with pytest.raises(GradconcealError, match=r"ImageNet folder not found: .*nowhere"):
        load_dataset(f"imagenet:{tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GradconcealError, match=r"has no synset folders .*labels.txt"):
        load_dataset(f"imagenet:{tmp_path / 'empty'}")
    with pytest.raises(GradconcealError, match=r"split must be 'train' or 'test' for digits, got 'val'"):
        load_dataset("digits", split="val")
    with pytest.raises(GradconcealError, match=r"split must be 'test' for 'photos'"):
        load_dataset("photos", split="train")
