"""Hostile checkpoint files are refused without running what they smuggle in."""

import os

import pytest
import torch

from gradconceal import GradconcealError, load_model


class _Payload:
    """Unpickling this calls os.system: a checkpoint that runs code when loaded with pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("wrapper", ["bare", "state_dict"])
def test_pickled_code_in_a_pt_checkpoint_never_runs(tmp_path, wrapper):
    marker = tmp_path / "payload-ran"
    hostile = tmp_path / "model.pt"
    payload = _Payload(marker)
    torch.save(payload if wrapper == "bare" else {"state_dict": {"conv1.weight": payload}}, hostile)
    with pytest.raises(GradconcealError, match="refusing to load .*model.pt.*never unpickles"):
        load_model("timm:resnet18", weights=str(hostile), pretrained=False)
    assert not marker.exists()


def test_plain_state_dict_pt_still_loads(tmp_path):
    reference = load_model("small:cnn")
    path = tmp_path / "cnn.pt"
    torch.save(reference.net.state_dict(), path)
    loaded = load_model("small:cnn", weights=str(path))
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), reference(x))
