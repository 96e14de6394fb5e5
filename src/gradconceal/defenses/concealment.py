"""The Gradient Concealment Module (GCM) of Pei et al. 2022 and `conceal`, which puts it in front of a model.

GCM is ``y = x + epsilon * sin(w * x)``: a forward pass that barely moves the input (in float32 usually not
at all) and an input gradient ``1 + epsilon * w * cos(w * x)`` that is about 1e12 in size with a
pseudo-random sign. It hides gradients; it does not remove adversarial examples (see ``gradconceal.attacks``).
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor, nn

from gradconceal.errors import GradconcealError

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class _Concealment(torch.autograd.Function):
    """GCM with the exact analytic backward ``1 + epsilon * w * cos(w * x)``, saving only ``x``."""

    @staticmethod
    def forward(ctx, x: Tensor, w: float, epsilon: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.w, ctx.epsilon = w, epsilon
        return _concealed_value(x, w, epsilon)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        (x,) = ctx.saved_tensors
        # The same operations, in the same order, as autograd of ``sin(x*w)*epsilon + x``.
        grad = grad_output * ctx.epsilon * torch.cos(x * ctx.w) * ctx.w + grad_output
        return grad, None, None


def _concealed_value(x: Tensor, w: float, epsilon: float) -> Tensor:
    """``sin(x*w)*epsilon + x``, bit for bit, with one temporary instead of four (2-3x faster on CPU)."""
    out = x * w
    out.sin_()
    out.mul_(epsilon)
    return out.add_(x)


class GradientConcealment(nn.Module):
    """The paper's parameter-free layer ``y = x + epsilon * sin(w * x)`` (defaults w=1e20, epsilon=1e-8).

    ``epsilon`` is the layer's amplitude, not an attack budget. Float16/bfloat16 inputs and autocast
    regions are computed in float32 and returned in the input's dtype (a float16 ``w * x`` overflows
    to inf and the naive layer returns NaN). The true input gradient (~1e12) does not fit in float16:
    a float16 gradient through the layer is +-inf wherever the incoming gradient is non-zero (the sign
    still pseudo-random) and 0 where it is zero; bfloat16 and float32 gradients are finite.
    """

    def __init__(self, w: float = 1e20, epsilon: float = 1e-8) -> None:
        super().__init__()
        w, epsilon = float(w), float(epsilon)
        if not math.isfinite(w) or not math.isfinite(epsilon):
            raise GradconcealError(f"GradientConcealment needs finite w and epsilon, got w={w}, epsilon={epsilon}")
        self.w = w
        self.epsilon = epsilon

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_floating_point(x):
            raise GradconcealError(f"GradientConcealment needs floating-point input, got dtype {x.dtype}")
        out_dtype = x.dtype
        work = x.float() if out_dtype in _LOW_PRECISION else x
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(device_type=x.device.type, enabled=False):
                y = self._conceal(work)
        else:
            y = self._conceal(work)
        return y.to(out_dtype) if y.dtype != out_dtype else y

    def _conceal(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling():  # export/compile trace the paper's formula as it is
            return torch.sin(x * self.w) * self.epsilon + x
        if torch.is_grad_enabled() and x.requires_grad:
            return _Concealment.apply(x, self.w, self.epsilon)
        return _concealed_value(x, self.w, self.epsilon)

    @property
    def gradient_scale(self) -> float:
        """Amplitude ``w * epsilon`` of the gradient's oscillating term; above 1 its sign is pseudo-random."""
        return self.w * self.epsilon

    def extra_repr(self) -> str:
        return f"w={self.w:g}, epsilon={self.epsilon:g}"


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` on pixel input; its buffers are not saved in the state_dict."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32)
        std_t = torch.as_tensor(list(std), dtype=torch.float32)
        if mean_t.ndim != 1 or mean_t.shape != std_t.shape:
            raise GradconcealError(f"mean and std need one value per channel, got mean={list(mean)}, std={list(std)}")
        if not bool((std_t > 0).all()):
            raise GradconcealError(f"std must be > 0 for every channel, got {list(std)}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class DefendedModel(nn.Module):
    """``base(normalize(defenses(x)))``: pixel-space input defences in front of an unchanged model.

    The base model is shared, not copied; the state_dict is the base model's own (same keys), so a
    checkpoint of the undefended model loads into the defended one and back.
    """

    def __init__(
        self,
        base: nn.Module,
        defenses: Iterable[nn.Module],
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ) -> None:
        super().__init__()
        if (mean is None) != (std is None):
            raise GradconcealError("pass both mean and std (the base model's input normalisation), or neither")
        self.defenses = nn.Sequential(*defenses)
        self.normalize: nn.Module = Normalize(mean, std) if mean is not None and std is not None else nn.Identity()
        self.base = base
        for name in ("input_size", "class_names", "num_classes", "mean", "std", "model_name"):
            if hasattr(base, name) and not hasattr(self, name):
                setattr(self, name, getattr(base, name))
        self.train(base.training)  # the defended model starts in the base model's mode
        self._register_state_dict_hook(_strip_base_prefix)
        self._register_load_state_dict_pre_hook(_add_base_prefix)

    @property
    def concealment(self) -> Optional[GradientConcealment]:
        """The first GCM layer among the input defences (None if there is none)."""
        for layer in self.defenses:
            if isinstance(layer, GradientConcealment):
                return layer
        return None

    def forward(self, x: Tensor) -> Tensor:
        return self.base(self.normalize(self.defenses(x)))


# Kept as an alias: the defended model that `conceal` returns.
ConcealedModel = DefendedModel


def _strip_base_prefix(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    head = prefix + "base."
    for key in [k for k in state_dict if k.startswith(head)]:
        state_dict[prefix + key[len(head):]] = state_dict.pop(key)


def _add_base_prefix(state_dict: dict, prefix: str, *args: object) -> None:
    own = (prefix + "defenses.", prefix + "normalize.", prefix + "base.")
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(own)]:
        state_dict[prefix + "base." + key[len(prefix):]] = state_dict.pop(key)


def conceal(
    model: nn.Module,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    *,
    w: float = 1e20,
    epsilon: float = 1e-8,
) -> DefendedModel:
    """Put GCM in front of ``model``; pass ``mean``/``std`` if the model expects normalised input.

    GCM always acts on [0, 1] pixels, before normalisation, as in the paper. ``conceal(m).base is m``.
    """
    if not isinstance(model, nn.Module):
        raise GradconcealError(f"conceal needs a torch.nn.Module, got {type(model).__name__}")
    return DefendedModel(model, [GradientConcealment(w=w, epsilon=epsilon)], mean=mean, std=std)
