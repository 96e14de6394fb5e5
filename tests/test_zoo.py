"""The model zoo: names, random and local weights, strict loading, checkpoints, offline pretrained look-ups."""

import argparse

import pytest
import torch
from safetensors.torch import save_file

from gradconceal import GradconcealError
from gradconceal.models import build_architecture, list_models, load_model, save_checkpoint
from gradconceal.models import zoo

TIMM_NAME = "resnet10t"  # small and quick to build
TV_NAME = "mobilenet_v3_small"
needs_small = pytest.mark.skipif(not zoo.small_architectures(), reason="gradconceal.models.small is not available")


@pytest.fixture(scope="module")
def timm_model():
    return load_model(f"timm:{TIMM_NAME}", pretrained=False)


@pytest.fixture()
def empty_caches(tmp_path, monkeypatch):
    """Point the Hugging Face and torch hub caches at empty folders."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch"))
    return tmp_path


def pixels(n, size=(3, 64, 64)):
    return torch.rand(n, *size, generator=torch.Generator().manual_seed(0))


def test_unknown_names_get_a_suggestion():
    with pytest.raises(GradconcealError, match=r"unknown model 'lite00' \(did you mean 'lite0'\?\)"):
        load_model("lite00")
    with pytest.raises(GradconcealError, match=r"timm has no model 'resnet10tt' \(did you mean 'resnet10t'\?\)"):
        load_model("timm:resnet10tt", pretrained=False)
    with pytest.raises(GradconcealError, match=r"torchvision has no classification model 'resnet19' \(did you mean 'resnet18'\?\)"):
        load_model("torchvision:resnet19", pretrained=False)
    with pytest.raises(GradconcealError, match=r"unknown architecture 'convnet:tiny'"):
        build_architecture("convnet:tiny", 10, 1)


@needs_small
def test_unknown_small_architecture_gets_a_suggestion():
    with pytest.raises(GradconcealError, match=r"unknown small architecture 'small:cnm' \(did you mean 'cnn'\?\)"):
        load_model("small:cnm")


def test_list_models_lists_the_zoo_and_library_prefixes():
    names = list_models()
    assert names[0] == "lite0"
    assert all(name.startswith("small:") for name in list_models("small:*"))
    assert list_models("lite*") == ["lite0", "lite1", "lite2"]
    assert f"timm:{TIMM_NAME}" in list_models("timm:resnet1*")
    assert list_models("torchvision:resnet1*") == ["torchvision:resnet101", "torchvision:resnet152", "torchvision:resnet18"]


def test_timm_random_model_gives_imagenet_logits_on_pixels(timm_model):
    assert not timm_model.training
    assert timm_model.input_size == (3, 224, 224)
    assert timm_model.mean == pytest.approx((0.485, 0.456, 0.406))
    assert timm_model.class_names[281] == "tabby, tabby cat"
    with torch.no_grad():
        assert timm_model(pixels(2)).shape == (2, 1000)


def test_torchvision_random_model_gives_imagenet_logits_on_pixels():
    model = load_model(f"torchvision:{TV_NAME}", pretrained=False)
    assert not model.training
    assert model.input_size == (3, 224, 224) and model.num_classes == 1000
    assert model.std == pytest.approx((0.229, 0.224, 0.225))
    with torch.no_grad():
        assert model(pixels(2)).shape == (2, 1000)


def test_missing_pretrained_weights_say_how_to_pass_them(empty_caches):
    with pytest.raises(GradconcealError, match=rf"pretrained weights for 'timm:{TIMM_NAME}'.*never downloaded.*weights=PATH"):
        load_model(f"timm:{TIMM_NAME}")
    with pytest.raises(GradconcealError, match=rf"'torchvision:{TV_NAME}'.*local torch hub cache.*weights=PATH"):
        load_model(f"torchvision:{TV_NAME}")


def test_pretrained_weights_come_from_the_local_caches(empty_caches, timm_model):
    hub_id = timm_model.net.pretrained_cfg["hf_hub_id"]
    snapshot = empty_caches / "hf" / f"models--{hub_id.replace('/', '--')}" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0123abc")
    save_file(timm_model.net.state_dict(), str(snapshot / "model.safetensors"))
    cached = load_model(f"timm:{TIMM_NAME}")
    with torch.no_grad():
        assert torch.equal(cached(pixels(1)), timm_model(pixels(1)))

    import torchvision.models as tvm

    reference = load_model(f"torchvision:{TV_NAME}", pretrained=False)
    url = tvm.get_model_weights(TV_NAME).DEFAULT.url
    (empty_caches / "torch" / "checkpoints").mkdir(parents=True)
    torch.save(reference.net.state_dict(), empty_caches / "torch" / "checkpoints" / url.rsplit("/", 1)[-1])
    from_cache = load_model(f"torchvision:{TV_NAME}")
    with torch.no_grad():
        assert torch.equal(from_cache(pixels(1)), reference(pixels(1)))


def test_wrapped_module_prefixed_state_dict_loads(tmp_path, timm_model):
    state = {f"module.{key}": value for key, value in timm_model.net.state_dict().items()}
    path = tmp_path / "robust.pt"
    torch.save({"state_dict": state, "epoch": 90, "best_acc": 0.61}, path)
    loaded = load_model(f"timm:{TIMM_NAME}", weights=path)
    with torch.no_grad():
        assert torch.equal(loaded(pixels(2)), timm_model(pixels(2)))
    nested = tmp_path / "nested.pth"
    torch.save({"model": {"state_dict": timm_model.net.state_dict()}}, nested)
    assert torch.equal(load_model(f"timm:{TIMM_NAME}", weights=nested).net.fc.bias, timm_model.net.fc.bias)


def test_weights_with_another_class_count_rebuild_the_timm_head(tmp_path):
    net = build_architecture(f"timm:{TIMM_NAME}", 10, 3)
    path = tmp_path / "ten.safetensors"
    save_file(net.state_dict(), str(path))
    model = load_model(f"timm:{TIMM_NAME}", weights=path)
    assert model.num_classes == 10 and model.class_names[3] == "class 3"
    with torch.no_grad():
        assert model(pixels(1)).shape == (1, 10)


def test_missing_and_unexpected_keys_are_listed_with_the_file(tmp_path, timm_model):
    state = dict(timm_model.net.state_dict())
    del state["fc.weight"]
    state["head.extra"] = torch.zeros(1)
    path = tmp_path / "broken.safetensors"
    save_file(state, str(path))
    with pytest.raises(GradconcealError, match=r"broken.safetensors do not fit.*1 missing keys \['fc.weight'\].*1 unexpected keys \['head.extra'\]"):
        load_model(f"timm:{TIMM_NAME}", weights=path)


def test_unsafe_or_unknown_weight_files_are_refused(tmp_path):
    pickled = tmp_path / "pickled.pt"
    torch.save({"config": argparse.Namespace(lr=0.1)}, pickled)
    with pytest.raises(GradconcealError, match=r"refusing to load .*pickled.pt.*never unpickles"):
        load_model(f"timm:{TIMM_NAME}", weights=pickled)
    with pytest.raises(GradconcealError, match=r"weights file .*model.onnx must end in .safetensors"):
        (tmp_path / "model.onnx").write_bytes(b"onnx")
        load_model(f"timm:{TIMM_NAME}", weights=tmp_path / "model.onnx")
    with pytest.raises(GradconcealError, match=r"weights file not found: .*absent.pt"):
        load_model(f"timm:{TIMM_NAME}", weights=tmp_path / "absent.pt")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(GradconcealError, match=r"cannot read weights .*truncated.safetensors"):
        load_model(f"timm:{TIMM_NAME}", weights=truncated)


def test_plain_state_dict_path_needs_an_architecture(tmp_path, timm_model):
    path = tmp_path / "plain.pth"
    torch.save(timm_model.net.state_dict(), path)
    with pytest.raises(GradconcealError, match=r"plain state dict without architecture.*load_model\('timm:ARCH'"):
        load_model(str(path))


@needs_small
def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    model = load_model("small:cnn")
    assert not model.training and model.input_size == (1, 28, 28) and model.num_classes == 10
    path = save_checkpoint(model, tmp_path / "cnn.safetensors")
    reloaded = load_model(str(path))
    batch = pixels(4, (1, 28, 28))
    with torch.no_grad():
        assert torch.equal(reloaded(batch), model(batch))
    assert (reloaded.mean, reloaded.std, reloaded.class_names) == (model.mean, model.std, model.class_names)
    assert reloaded.architecture == "small:cnn"
    again = load_model("small:cnn", weights=path)
    with torch.no_grad():
        assert torch.equal(again(batch), model(batch))


@needs_small
def test_wrong_architecture_checkpoint_is_refused(tmp_path):
    path = save_checkpoint(load_model("small:cnn"), tmp_path / "cnn.safetensors")
    with pytest.raises(GradconcealError, match=r"cnn.safetensors do not fit architecture 'small:resnet'.*missing keys"):
        load_model("small:resnet", weights=path)
    with pytest.raises(GradconcealError, match=r"is a checkpoint with its own weights"):
        load_model(str(path), weights=path)


@needs_small
def test_shipped_checkpoints_load_by_bare_name(tmp_path, monkeypatch):
    model = load_model("small:cnn")
    save_checkpoint(model, tmp_path / "my-net.safetensors")
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    assert "my-net" in list_models()
    shipped = load_model("my-net")
    batch = pixels(2, (1, 28, 28))
    with torch.no_grad():
        assert torch.equal(shipped(batch), model(batch))
    with pytest.raises(GradconcealError, match=r"unknown model 'my-nett' \(did you mean 'my-net'\?\)"):
        load_model("my-nett")
