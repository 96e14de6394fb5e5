"""ImageNet folders decoded once, up front, in DataLoader workers: same images in the same order, same errors."""

from __future__ import annotations

import random
from pathlib import Path
from typing import List

import pytest
import torch
from torchvision import transforms

from gradconceal.data import FileImageDataset, imagenet_synsets, load_dataset, open_rgb
from gradconceal.data.imagenet import load_imagenet
from gradconceal.data.photos import photo_path, photo_records
from gradconceal.errors import GradconcealError

PHOTOS = ("chelsea", "coffee", "rocket")  # three synsets, three JPEGs each


def _write_folder(root: Path, *, per_class: int = 3, size: int = 96, seed: int = 0) -> Path:
    """A small ImageNet-layout folder (one folder per synset) of JPEGs cut from the shipped photos."""
    rng = random.Random(seed)
    records = {record["name"]: record for record in photo_records()}
    for name in PHOTOS:
        record = records[name]
        photo = open_rgb(photo_path(record))
        folder = root / imagenet_synsets()[int(record["labels"][0])]
        folder.mkdir(parents=True)
        for number in range(per_class):
            side = rng.randint(size // 2, min(photo.size))
            left, top = rng.randint(0, photo.width - side), rng.randint(0, photo.height - side)
            crop = photo.crop((left, top, left + side, top + side)).resize((size, size + 8 * number))
            crop.save(folder / f"{name}_{number}.JPEG", quality=90)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_folder(tmp_path_factory.mktemp("imagenet"))


def _decoded(dataset: FileImageDataset) -> List[torch.Tensor]:
    return [dataset.decode(index) for index in range(len(dataset))]


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_preload_gives_the_same_images_in_the_same_order(folder: Path, workers: int) -> None:
    expected = _decoded(load_imagenet(folder))
    dataset = load_imagenet(folder).preload(workers=workers, batch_size=2)  # several batches, the last one short
    assert dataset.preloaded == len(dataset) == 9
    for index, image in enumerate(expected):
        served, label = dataset[index]
        assert served.dtype == image.dtype == torch.float32 and served.shape == (3, 224, 224)
        assert torch.equal(served, image), index
        assert label == dataset.targets[index]
    assert torch.equal(dataset.batch([4, 0, 8]), torch.stack([expected[4], expected[0], expected[8]]))
    assert not dataset.batch([0]).is_pinned()


def test_load_dataset_workers_preloads_the_kept_images(folder: Path) -> None:
    plain = load_dataset(f"imagenet:{folder}", limit=5)
    preloaded = load_dataset(f"imagenet:{folder}", limit=5, workers=2)
    assert isinstance(plain, FileImageDataset) and isinstance(preloaded, FileImageDataset)
    assert plain.preloaded == 0 and preloaded.preloaded == 5
    assert plain.targets == preloaded.targets
    for index in range(5):
        assert torch.equal(plain[index][0], preloaded[index][0])
    assert torch.equal(plain.batch(range(5)), preloaded.batch(range(5)))
    photos = load_dataset("photos", limit=2, workers=2)  # held in memory already: nothing to decode
    assert len(photos) == 2


def test_preload_some_indices_and_the_rest_on_access(folder: Path) -> None:
    dataset = load_imagenet(folder).preload([5, 1, 5], workers=2)
    assert dataset.preloaded == 2
    assert torch.equal(dataset[1][0], dataset.decode(1)) and torch.equal(dataset[5][0], dataset.decode(5))
    assert torch.equal(dataset[0][0], dataset.decode(0))  # not preloaded: read from its file
    assert torch.equal(dataset.batch([0, 5]), torch.stack([dataset.decode(0), dataset.decode(5)]))
    dataset.take(3)
    assert dataset.preloaded == 1 and len(dataset) == 3
    dataset.preload([])
    assert dataset.preloaded == 0


def test_served_images_are_copies(folder: Path) -> None:
    dataset = load_imagenet(folder).preload()
    dataset[0][0].zero_()
    dataset.batch([0]).zero_()
    assert torch.equal(dataset[0][0], dataset.decode(0))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_jpeg_is_named(tmp_path: Path, workers: int) -> None:
    root = _write_folder(tmp_path / "data")
    broken = sorted(root.glob("*/coffee_1.JPEG"))[0]
    broken.write_bytes(broken.read_bytes()[:200])
    dataset = load_imagenet(root)
    with pytest.raises(GradconcealError, match=r"cannot read image .*coffee_1\.JPEG") as caught:
        dataset.preload(workers=workers, batch_size=4)
    assert "Traceback" not in str(caught.value) and "worker" not in str(caught.value)
    assert dataset.preloaded == 0
    with pytest.raises(GradconcealError, match=r"coffee_1\.JPEG"):
        load_dataset(f"imagenet:{root}", workers=workers)


def test_images_of_several_sizes_are_refused(folder: Path) -> None:
    dataset = load_imagenet(folder, transform=transforms.ToTensor())  # no resize: 96 x 96, 96 x 104, 96 x 112
    with pytest.raises(GradconcealError, match=r"transform gives 3 x \d+ x 96 for .*\.JPEG but 3 x 96 x 96 for "):
        dataset.preload(workers=2, batch_size=2)
    with pytest.raises(GradconcealError, match="preload needs one image size"):
        dataset.preload(workers=0, batch_size=9)


def test_bad_settings_are_refused(folder: Path) -> None:
    dataset = load_imagenet(folder)
    with pytest.raises(GradconcealError, match="workers must be an integer >= 0, got -1"):
        dataset.preload(workers=-1)
    with pytest.raises(GradconcealError, match="workers must be an integer"):
        load_dataset(f"imagenet:{folder}", workers=1.5)  # type: ignore[arg-type]
    with pytest.raises(GradconcealError, match="batch_size must be an integer >= 1, got 0"):
        dataset.preload(batch_size=0)
    with pytest.raises(GradconcealError, match="preload index 9 is out of range: .* has 9 images"):
        dataset.preload([0, 9])
    with pytest.raises(GradconcealError, match="pin_memory=True applies to images decoded up front"):
        load_dataset(f"imagenet:{folder}", pin_memory=True)
    if not torch.cuda.is_available():
        with pytest.raises(GradconcealError, match="pin_memory=True needs CUDA"):
            dataset.preload(pin_memory=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pinned_cache_serves_pinned_batches(folder: Path) -> None:
    dataset = load_imagenet(folder).preload(workers=2, pin_memory=True)
    batch = dataset.batch([2, 0])
    assert batch.is_pinned()
    on_gpu = batch.to("cuda", non_blocking=True)
    torch.cuda.synchronize()
    assert torch.equal(on_gpu.cpu(), torch.stack([dataset.decode(2), dataset.decode(0)]))
