"""What the audit looks at: the defended model, its undefended counterpart, and its input-side stages.

A model is split into stages whose composition is its forward pass (the defence layers of a
``DefendedModel``, its normalisation and base model; the children of an ``nn.Sequential``), so that the
gradient can be compared before and after each stage to find the one that shatters it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from gradconceal.attacks.randomness import random_layers as attack_random_layers
from gradconceal.defenses.build import build_defense, parse_defense_string
from gradconceal.defenses.concealment import DefendedModel
from gradconceal.defenses.randomization import RandomResizePad
from gradconceal.errors import GradconcealError
from gradconceal.models.pixel import PixelModel

DefenseArg = Union[None, str, nn.Module, Sequence[nn.Module]]


@dataclass(frozen=True)
class Stage:
    """One step of the forward pass: ``name`` (where it sits) and the module that computes it."""

    name: str
    module: nn.Module

    @property
    def label(self) -> str:
        """``ClassName (path)``, as the report names a layer."""
        return f"{type(self.module).__name__} ({self.name})"


class Undefended(nn.Module):
    """The model behind a ``DefendedModel`` without its input defences: ``base(normalize(x))``."""

    def __init__(self, defended: DefendedModel) -> None:
        super().__init__()
        self.defended = defended

    def forward(self, x: Tensor) -> Tensor:
        return self.defended.base(self.defended.normalize(x))


@dataclass
class AuditTarget:
    """The audited model, its undefended counterpart (None when there is no defence) and its stages."""

    model: nn.Module
    reference: Optional[nn.Module]
    stages: List[Stage]
    defense_count: int
    name: str
    defense: str

    @property
    def defense_layers(self) -> List[Stage]:
        """The input-side defence stages (empty for an undefended model)."""
        return self.stages[: self.defense_count]


def parse_defense(
    spec: DefenseArg, input_size: Optional[Sequence[int]] = None, seed: Optional[int] = None
) -> Tuple[List[nn.Module], str]:
    """Build defence layers from a name (``gcm``, ``gcm:w=1e12,epsilon=1e-10``, ``resize-pad``, ``challenge``,
    ``bit-depth:bits=3``, ``none``; ``gradconceal.defenses.build``), a layer or a list of layers; returns
    (layers, a name for the report).

    ``seed`` seeds the random layers built from a name, so that an audit can be repeated exactly.
    """
    if spec is None:
        return [], "none"
    if isinstance(spec, nn.Module):
        return [spec], type(spec).__name__
    if not isinstance(spec, str):
        layers = list(spec)
        if not all(isinstance(layer, nn.Module) for layer in layers):
            raise GradconcealError(f"defense must be a name, an nn.Module or a list of them, got {spec!r}")
        return layers, "+".join(type(layer).__name__ for layer in layers) or "none"
    name, settings = parse_defense_string(spec)
    layers = build_defense(name, settings, input_size, seed=seed)
    return layers, "none" if name == "none" else spec.strip()


def resolve_target(model: nn.Module, defense: DefenseArg = None, name: str = "", seed: Optional[int] = None) -> AuditTarget:
    """Put ``defense`` in front of ``model`` (if given) and split the result into stages for the audit."""
    if not isinstance(model, nn.Module):
        raise GradconcealError(f"model must be an nn.Module or a zoo name, got {type(model).__name__}")
    layers, defense_name = parse_defense(defense, getattr(model, "input_size", None), seed)
    name = name or getattr(model, "model_name", "") or type(model).__name__
    if layers:
        training = model.training
        model = DefendedModel(model, layers)
        # A new wrapper starts in training mode; give it (and only its new layers) the model's mode.
        model.training = training
        for layer in model.defenses:
            layer.train(training)
        model.normalize.train(training)
    elif isinstance(model, DefendedModel) and len(model.defenses) > 0 and defense is None:
        defense_name = "+".join(type(layer).__name__ for layer in model.defenses)
    if isinstance(model, DefendedModel):
        stages = [Stage(f"defenses.{i}", layer) for i, layer in enumerate(model.defenses)]
        count = len(stages)
        stages += [Stage("normalize", model.normalize), Stage("base", model.base)]
        reference = Undefended(model) if count else None
        return AuditTarget(model, reference, stages, count, name, defense_name)
    if isinstance(model, PixelModel):
        stages = [Stage("normalize", model.normalize), Stage("net", model.net)]
    elif isinstance(model, nn.Sequential) and len(model) > 1:
        stages = [Stage(str(i), child) for i, child in enumerate(model)]
    else:
        stages = [Stage("model", model)]
    return AuditTarget(model, None, stages, 0, name, defense_name)


def random_layers(model: nn.Module) -> List[str]:
    """Names of the modules that draw randomness on each forward (``gradconceal.attacks.randomness``)."""
    found = {id(m) for m in attack_random_layers(model)}
    return [path or type(module).__name__ for path, module in model.named_modules() if id(module) in found]


@contextlib.contextmanager
def frozen_randomness(model: nn.Module, generator: torch.Generator) -> Iterator[None]:
    """Fix one draw of every random resize-and-pad layer, so that the gradient checks see one function."""
    with contextlib.ExitStack() as stack:
        for module in model.modules():
            if isinstance(module, RandomResizePad):
                stack.enter_context(module.fixed(module.sample_draw(generator)))
        yield


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU when it has none)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def describe(model: nn.Module) -> Dict[str, Any]:
    """Name, input size and class count of a model, for the report."""
    return {
        "name": getattr(model, "model_name", "") or type(model).__name__,
        "input_size": list(getattr(model, "input_size", []) or []),
        "num_classes": getattr(model, "num_classes", None),
    }
