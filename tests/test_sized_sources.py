"""Data sources at a chosen image size, ``photos@240`` and ``imagenet@260:DIR``: the parser, the images' sizes, the
plain sources unchanged at 224, the errors, the spec files that use them, and EfficientNet-Lite1/Lite2 on the
photos at their own input sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradconceal.data import center_crop_transform, load_dataset, open_rgb
from gradconceal.data.images import resize_for_crop
from gradconceal.data.photos import PHOTO_SIZE, PhotoDataset, photo_path, photo_records
from gradconceal.data.sources import DEFAULT_IMAGE_SIZE, DataSource, parse_data_source, source_at_size
from gradconceal.errors import GradconcealError
from gradconceal.evaluation.spec import check_data_source, load_spec
from gradconceal.models.pretrained import LITES

TENCH, GOLDFISH = "n01440764", "n01443537"
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


@pytest.fixture()
def imagenet(tmp_path: Path) -> Path:
    """Two synset folders, each with one non-square photo-like image (random pixels, fixed seed)."""
    rng = np.random.default_rng(0)
    for synset, (height, width) in ((TENCH, (300, 400)), (GOLDFISH, (350, 270))):
        (tmp_path / "val" / synset).mkdir(parents=True)
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "val" / synset / "a.png")
    return tmp_path / "val"


# -- the parser -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "source, parsed, canonical",
    [
        ("photos@240", DataSource("photos", size=240), "photos@240"),
        ("photos@0260", DataSource("photos", size=260), "photos@260"),
        (" photos@224 ", DataSource("photos", size=224), "photos@224"),
        ("photos", DataSource("photos"), "photos"),
        ("imagenet@260:/data/val", DataSource("imagenet", "/data/val", size=260), "imagenet@260:/data/val"),
        ("imagenet@240:/data/flat:/data/labels.txt", DataSource("imagenet", "/data/flat", "/data/labels.txt", 240),
         "imagenet@240:/data/flat:/data/labels.txt"),
        ("imagenet:/data/val", DataSource("imagenet", "/data/val"), "imagenet:/data/val"),
    ],
)
def test_the_size_follows_the_kind_and_stays_in_the_canonical_string(
    source: str, parsed: DataSource, canonical: str
) -> None:
    assert parse_data_source(source) == parsed
    assert parsed.to_string() == canonical
    assert parse_data_source(canonical) == parsed


def test_a_folder_whose_name_holds_at_or_colon_reads_the_same_with_a_size(tmp_path: Path) -> None:
    folder = tmp_path / "val@260:x"
    folder.mkdir()
    assert parse_data_source(f"imagenet:{folder}") == DataSource("imagenet", str(folder))
    assert parse_data_source(f"imagenet@240:{folder}") == DataSource("imagenet", str(folder), size=240)
    assert check_data_source(f"imagenet@240:{folder}", tmp_path) == f"imagenet@240:{folder}"


def test_relative_paths_of_a_sized_source_are_taken_from_the_spec_folder(tmp_path: Path) -> None:
    (tmp_path / "val").mkdir()
    assert check_data_source("imagenet@240:val", tmp_path) == f"imagenet@240:{tmp_path / 'val'}"


def test_resize_before_the_crop_follows_timms_default_crop_pct() -> None:
    assert [resize_for_crop(size) for size in (224, 240, 260, 300)] == [256, 274, 297, 343]


# -- the images -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [224, 240, 260, 64])
def test_photos_at_a_size_are_that_many_pixels_square(size: int) -> None:
    photos = load_dataset(f"photos@{size}")
    assert photos.image_size == (3, size, size) and len(photos) == 9
    assert photos.images.shape == (9, 3, size, size)
    assert 0.0 <= float(photos.images.min()) and float(photos.images.max()) <= 1.0


def test_photos_at_224_are_the_plain_photos_exactly() -> None:
    plain, sized = load_dataset("photos"), load_dataset("photos@224")
    assert torch.equal(plain.images, sized.images)
    assert plain.targets == sized.targets
    assert plain.label_sets == sized.label_sets and plain.photo_names == sized.photo_names
    assert plain.name == sized.name == "photos"


def test_photos_at_another_size_resize_the_shorter_side_to_it_then_crop() -> None:
    """As the plain photos at 224: no 0.875 margin (the photos are framed on their subject)."""
    photos = load_dataset("photos@240", limit=2)
    assert photos.name == "photos@240" and len(photos) == 2
    transform = center_crop_transform(240, resize=240, interpolation="bicubic")
    expected = torch.stack([transform(open_rgb(photo_path(record))) for record in photo_records()[:2]])
    assert torch.equal(photos.images, expected)
    assert torch.equal(PhotoDataset(limit=2, size=240).images, expected)


@pytest.mark.parametrize("size", [240, 260, 32])
def test_imagenet_at_a_size_resizes_to_size_over_0875_then_crops(imagenet: Path, size: int) -> None:
    data = load_dataset(f"imagenet@{size}:{imagenet}")
    assert data.image_size == (3, size, size) and len(data) == 2
    transform = center_crop_transform(size, resize=resize_for_crop(size), interpolation="bicubic")
    for index, file in enumerate(sorted(imagenet.glob("*/a.png"))):
        image, label = data[index]
        assert image.shape == (3, size, size) and label == index
        assert torch.equal(image, transform(open_rgb(file)))


def test_imagenet_at_224_is_the_plain_folder_exactly(imagenet: Path) -> None:
    plain, sized = load_dataset(f"imagenet:{imagenet}"), load_dataset(f"imagenet@224:{imagenet}")
    assert len(plain) == len(sized) == 2
    for index in range(2):
        assert torch.equal(plain[index][0], sized[index][0]) and plain[index][1] == sized[index][1]


def test_imagenet_flat_folder_with_labels_at_a_size(imagenet: Path, tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "one.png").write_bytes((imagenet / TENCH / "a.png").read_bytes())
    (tmp_path / "labels.txt").write_text(f"{TENCH}\n")
    data = load_dataset(f"imagenet@260:{flat}:{tmp_path / 'labels.txt'}")
    assert data.image_size == (3, 260, 260) and data[0][1] == 0


# -- errors ---------------------------------------------------------------------------------------------
BAD_SIZE = "the image size after '@' must be a whole number of pixels from 8 to 1024, got "


@pytest.mark.parametrize(
    "source, message",
    [
        ("photos@0", BAD_SIZE + "'0'"),
        ("photos@7", BAD_SIZE + "'7'"),
        ("photos@-240", BAD_SIZE + "'-240'"),
        ("photos@240.0", BAD_SIZE + "'240.0'"),
        ("photos@2.4e2", BAD_SIZE + "'2.4e2'"),
        ("photos@big", BAD_SIZE + "'big'"),
        ("photos@ 240", BAD_SIZE + "' 240'"),
        ("photos@1025", BAD_SIZE + "'1025'"),
        ("photos@" + "9" * 5000, BAD_SIZE + repr("9" * 5000)),  # too long for int() to parse: still one message
        ("photos@240@260", BAD_SIZE + "'240@260'"),
        ("imagenet@99999:/data/val", BAD_SIZE + "'99999'"),
        ("photos@", "the image size after '@' is missing; write e.g. 'photos@240'"),
        ("imagenet@:/data/val", "the image size after '@' is missing; write e.g. 'imagenet@240:DIR'"),
        ("fashion-mnist@28", "fashion-mnist images are 28 x 28 pixels and take no size; an image size ('@SIZE') "
                             "applies to photos and imagenet only"),
        ("fashion-mnist@32:/data/fmnist", "fashion-mnist images are 28 x 28 pixels and take no size"),
        ("digits@8", "digits images are 8 x 8 pixels and take no size"),
    ],
)
def test_bad_sizes_and_sizes_on_fixed_size_sources_are_refused_naming_the_source(source: str, message: str) -> None:
    with pytest.raises(GradconcealError) as raised:
        parse_data_source(source)
    assert str(raised.value).startswith(f"data source {source!r}: {message}")
    with pytest.raises(GradconcealError, match="data source"):
        load_dataset(source)


@pytest.mark.parametrize(
    "source, message",
    [
        ("imagenet@260", "data source 'imagenet' needs a folder: imagenet[@SIZE]:DIR[:labels.txt], got 'imagenet@260'"),
        ("photos@240:/data", "data source 'photos' takes no folder, got 'photos@240:/data'"),
        ("photo@240", "unknown data source 'photo@240' (did you mean 'photos'?); use photos[@SIZE], digits, "
                      "fashion-mnist[:DIR] or imagenet[@SIZE]:DIR[:labels.txt]"),
    ],
)
def test_other_malformed_sized_sources(source: str, message: str) -> None:
    with pytest.raises(GradconcealError) as raised:
        parse_data_source(source)
    assert str(raised.value) == message


def test_a_size_at_the_end_of_an_existing_folder_is_pointed_to_the_kind(imagenet: Path, tmp_path: Path) -> None:
    source = f"imagenet:{imagenet}@260"
    expected = (f"data source {source!r}: ImageNet folder not found: {imagenet}@260; an image size goes after the "
                f"kind: 'imagenet@260:{imagenet}'")
    with pytest.raises(GradconcealError) as raised:
        load_dataset(source)
    assert str(raised.value) == expected
    (tmp_path / "labels.txt").write_text(f"{TENCH}\n")
    source = f"imagenet:{imagenet}:{tmp_path}/labels.txt@240"
    with pytest.raises(GradconcealError, match=r"labels file not found: .*labels.txt@240; an image size goes after "
                                               r"the kind: 'imagenet@240:.*/val:.*/labels.txt'$"):
        load_dataset(source)
    with pytest.raises(GradconcealError, match=r"ImageNet folder not found: /nowhere@260$"):  # no hint: no such folder
        load_dataset("imagenet:/nowhere@260")


def test_a_size_and_a_transform_are_not_both_given(imagenet: Path) -> None:
    transform = center_crop_transform(240, resize=272)
    with pytest.raises(GradconcealError, match=r"give the image size in the source .* or a transform, not both"):
        load_dataset(f"imagenet@240:{imagenet}", transform=transform)
    assert load_dataset(f"imagenet:{imagenet}", transform=transform).image_size == (3, 240, 240)


# -- the source to suggest for a model of another size ----------------------------------------------------
@pytest.mark.parametrize(
    "source, input_size, suggested",
    [
        ("photos", (3, 240, 240), "photos@240"),
        ("photos", (3, 260, 260), "photos@260"),
        ("photos@260", (3, 224, 224), "photos"),  # the plain source: the same images
        ("imagenet:/data/val", (3, 240, 240), "imagenet@240:/data/val"),
        ("imagenet@240:/data/flat:/data/labels.txt", (3, 260, 260), "imagenet@260:/data/flat:/data/labels.txt"),
        ("photos", (1, 28, 28), None),  # another channel count: no size helps
        ("photos", (3, 240, 200), None),  # not square
        ("photos", (3, 2000, 2000), None),  # beyond the sizes a source gives
        ("photos", (240, 240), None),
        ("fashion-mnist", (1, 32, 32), None),
        ("digits", (3, 224, 224), None),
    ],
)
def test_the_source_at_a_models_input_size(source: str, input_size: tuple, suggested: str) -> None:
    assert source_at_size(source, input_size) == suggested
    assert source_at_size(parse_data_source(source), input_size) == suggested
    assert PHOTO_SIZE == DEFAULT_IMAGE_SIZE


# -- spec files ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lite1", "lite2"])
def test_the_photos_spec_of_each_lite_gives_the_photos_at_its_input_size(name: str) -> None:
    spec = load_spec(RESULTS / f"{name}-photos.toml")
    reference = load_spec(RESULTS / "lite0-photos.toml")
    size = LITES[name].image_size
    assert spec.data.source == f"photos@{size}" and parse_data_source(spec.data.source).size == size
    assert [model.name for model in spec.models] == [name]
    differs = ("models", "data", "title")  # the same defences, attacks and settings as Lite0's table
    assert {k: v for k, v in spec.to_dict().items() if k not in differs} == {
        k: v for k, v in reference.to_dict().items() if k not in differs
    }
    assert [d.kind for d in spec.defenses] == ["none", "gcm", "challenge"]


# -- EfficientNet-Lite1 and Lite2 on the photos at their input sizes -------------------------------------------
# Measured (single thread, CPU): Lite1 at 240 misses 'rocket' and 'astronaut', Lite2 at 260 also misses
# 'grace_hopper' and 'flower', as the table in gradconceal.models.pretrained says. Asserted exactly: the smallest
# logit margin between the best accepted and the best other class is 0.086 (Lite2, 'grace_hopper'), far above
# float32 rounding across BLAS builds.
MISSED = {"lite1": ["rocket", "astronaut"], "lite2": ["rocket", "astronaut", "grace_hopper", "flower"]}


@pytest.mark.parametrize("name", sorted(MISSED))
def test_lite1_and_lite2_classify_the_photos_at_their_own_sizes(name: str) -> None:
    lite = LITES[name]
    pytest.importorskip(lite.module, reason=f"{lite.package} is not installed")
    from gradconceal.models import load_model
    from gradconceal.models.pretrained import lite_photo_pixels

    photos = load_dataset(f"photos@{lite.image_size}")
    model = load_model(name)
    assert tuple(model.input_size) == photos.image_size
    assert torch.equal(photos.images, lite_photo_pixels(name)[0])  # the pixels the registry's table was measured on
    with torch.no_grad():
        predictions = model(photos.images).argmax(dim=-1).tolist()
    missed = [n for n, p, accepted in zip(photos.photo_names, predictions, photos.label_sets) if p not in accepted]
    assert missed == MISSED[name]
    assert len(photos) - len(missed) == {"lite1": 7, "lite2": 5}[name]
