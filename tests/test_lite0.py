"""EfficientNet-Lite0 from the packaged weights: strict key mapping, correct predictions on real photos, GCM."""

import pytest
import torch

from gradconceal import GradconcealError, conceal
from gradconceal.data import label_sets_hit, load_dataset
from gradconceal.models import load_model, save_checkpoint
from gradconceal.models.pretrained import lite0_weights_path, map_lite0_state_dict

# Measured: 8 of the 9 photos (only 'astronaut' is missed); see gradconceal.models.pretrained.
PHOTOS_RIGHT_FLOOR = 8


@pytest.fixture(scope="module")
def lite0():
    return load_model("lite0")


@pytest.fixture(scope="module")
def photos():
    return load_dataset("photos")


@pytest.fixture(scope="module")
def photo_batch(photos):
    return torch.stack([photos[i][0] for i in range(len(photos))])


@pytest.fixture(scope="module")
def lite0_logits(lite0, photo_batch):
    with torch.no_grad():
        return lite0(photo_batch)


def test_lite0_carries_imagenet_metadata_and_is_in_eval_mode(lite0):
    assert not lite0.training
    assert lite0.input_size == (3, 224, 224)
    assert lite0.num_classes == 1000
    assert lite0.class_names[281] == "tabby, tabby cat"
    assert lite0.mean == (0.5, 0.5, 0.5) and lite0.std == (0.5, 0.5, 0.5)
    assert lite0.model_name == "lite0"
    assert lite0.architecture == "timm:tf_efficientnet_lite0"


def test_lite0_classifies_the_photos_by_their_hand_checked_labels(photos, lite0_logits):
    hits = label_sets_hit(lite0_logits.argmax(dim=1).tolist(), photos.label_sets)
    assert sum(hits) >= PHOTOS_RIGHT_FLOOR, dict(zip(photos.photo_names, hits))
    probabilities = lite0_logits.softmax(dim=1)
    coffee = photos.photo_names.index("coffee")
    assert probabilities[coffee, 967] > 0.5  # espresso, confidently


def test_concealed_lite0_keeps_every_top1(lite0, photo_batch, lite0_logits):
    defended = conceal(lite0)
    with torch.no_grad():
        concealed = defended(photo_batch)
    assert torch.equal(concealed.argmax(dim=1), lite0_logits.argmax(dim=1))
    assert (concealed - lite0_logits).abs().max() < 1e-3


def test_mapping_is_strict_about_extra_and_missing_keys(lite0):
    source = torch.load(str(lite0_weights_path()), map_location="cpu", weights_only=True)
    net = lite0.net
    assert len(map_lite0_state_dict(source, net)) == len(net.state_dict())
    extra = dict(source, **{"_blocks.16._bn0.weight": torch.zeros(3)})
    with pytest.raises(GradconcealError, match=r"1 source keys unmapped \['_blocks.16._bn0.weight'\]"):
        map_lite0_state_dict(extra, net)
    missing = {k: v for k, v in source.items() if k != "_fc.bias"}
    with pytest.raises(GradconcealError, match=r"1 network keys missing \['classifier.bias'\]"):
        map_lite0_state_dict(missing, net)
    wrong = dict(source, **{"_fc.bias": torch.zeros(10)})
    with pytest.raises(GradconcealError, match=r"_fc.bias has shape \(10,\) but classifier.bias"):
        map_lite0_state_dict(wrong, net)


def test_lite0_weights_path_and_checkpoint_round_trip_give_identical_logits(tmp_path, photo_batch, lite0_logits):
    from_file = load_model("lite0", weights=lite0_weights_path())
    path = save_checkpoint(from_file, tmp_path / "lite0.safetensors")
    reloaded = load_model(str(path))
    assert reloaded.mean == (0.5, 0.5, 0.5) and reloaded.class_names[281] == "tabby, tabby cat"
    with torch.no_grad():  # the whole batch: CPU kernels may sum in another order for another batch size
        assert torch.equal(from_file(photo_batch), lite0_logits)
        assert torch.equal(reloaded(photo_batch), lite0_logits)


def test_lite0_without_pretrained_weights_is_random(lite0):
    random_net = load_model("lite0", pretrained=False)
    assert not random_net.training and random_net.input_size == (3, 224, 224)
    trained, fresh = lite0.net.state_dict(), random_net.net.state_dict()
    assert trained.keys() == fresh.keys()
    assert not torch.equal(trained["classifier.weight"], fresh["classifier.weight"])
