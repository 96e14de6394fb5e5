"""One forward pass that checks a model before it is attacked, audited or evaluated.

``probe_model(model, images, labels)`` runs the model once under ``no_grad`` and refuses, with one line that
names the model and the fix, what would otherwise end in a raw traceback or in a wrong number: parameters
of another dtype than the images (a ``.half()`` model on float32 pixels), an output that is not one
(N, classes) tensor of floating-point logits (a tuple from auxiliary heads, a dict, a 1-D or 3-D tensor),
NaN or infinite logits on clean images (NaN weights), and fewer classes than the labels need. Attacks call
it on every batch; the audit and the evaluation call it before any work.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from gradconceal.attacks import checks
from gradconceal.errors import GradconcealError

__all__ = ["LogitsOnly", "check_logits", "check_model_dtype", "check_num_classes", "check_output", "model_label",
           "probe_model"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)
_FORWARDED = ("input_size", "class_names", "num_classes", "mean", "std", "model_name")


def model_label(model: nn.Module) -> str:
    """The name errors use for ``model``: its ``model_name`` when it has one, else its class name."""
    name = getattr(model, "model_name", "")
    return name if isinstance(name, str) and name else type(model).__name__


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def check_model_dtype(model: nn.Module, images: Tensor, model_name: Optional[str] = None) -> None:
    """Raise when no floating-point parameter of ``model`` has the images' dtype (the forward would fail)."""
    dtypes = {p.dtype for p in model.parameters() if p.dtype.is_floating_point}
    if not dtypes or images.dtype in dtypes:
        return
    name = model_name or model_label(model)
    found = ", ".join(sorted(_dtype_name(d) for d in dtypes))
    if any(d in _LOW_PRECISION for d in dtypes):
        hint = (f"keep the model {_dtype_name(images.dtype)} and run in half precision with dtype = 'float16' "
                "(or 'bfloat16') in the spec, or under torch.autocast, instead of converting the model with .half()")
    else:
        hint = f"convert one to the other (model.to({images.dtype}) or images.to({sorted(dtypes, key=str)[0]}))"
    raise GradconcealError(f"model {name!r} has {found} parameters but the images are {_dtype_name(images.dtype)}; {hint}")


def check_output(output: object, count: int, model_name: str) -> Tensor:
    """``output`` if it is an (``count``, classes) floating-point tensor, else a one-line error with the fix."""
    if isinstance(output, Mapping):
        keys = [str(k) for k in output.keys()]
        key = "logits" if "logits" in keys else (keys[0] if keys else "logits")
        raise GradconcealError(
            f"model {model_name!r} returns a {type(output).__name__} with keys {keys[:6]}, not a logits tensor; "
            f"return the logits only, e.g. wrap it: LogitsOnly(model, {key!r}) (forward: model(x)[{key!r}])"
        )
    if isinstance(output, (tuple, list)):
        raise GradconcealError(
            f"model {model_name!r} returns a {type(output).__name__} of {len(output)} outputs (auxiliary heads?), "
            "not a logits tensor; return the logits only, e.g. wrap it: LogitsOnly(model, 0) (forward: model(x)[0])"
        )
    if not isinstance(output, Tensor):
        raise GradconcealError(
            f"model {model_name!r} returns {type(output).__name__}, not a tensor of logits of shape (N, classes)"
        )
    if not output.dtype.is_floating_point:
        raise GradconcealError(
            f"model {model_name!r} returns {_dtype_name(output.dtype)} values, not floating-point logits "
            "(class indices after argmax?); return the logits"
        )
    shape = tuple(output.shape)
    if output.ndim == 1 and shape[0] == count:
        raise GradconcealError(
            f"model {model_name!r} returns shape {shape}, one score per image; attacks need logits of shape "
            "(N, classes) (for a binary score z return torch.stack([-z / 2, z / 2], dim=1))"
        )
    if output.ndim != 2 or shape[0] != count:
        raise GradconcealError(
            f"model {model_name!r} returns shape {shape} for {count} images; attacks need logits of shape "
            f"(N, classes) = ({count}, classes) (flatten or pool the other dimensions inside the model)"
        )
    if shape[1] == 0:
        raise GradconcealError(f"model {model_name!r} returns logits for 0 classes (shape {shape})")
    return output


def check_logits(logits: Tensor, model_name: str, num_labels: Optional[int] = None) -> None:
    """Raise when clean ``logits`` hold NaN or inf, or have fewer classes than the data's ``num_labels``.

    A model whose clean output is not finite (NaN weights, an overflow) has no accuracy to report: every
    number computed from it would be an artefact, so it is refused rather than counted wrong.
    """
    finite = torch.isfinite(logits).flatten(1).all(dim=1) if logits.ndim > 1 else torch.isfinite(logits)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten()
        nan = int(torch.isnan(logits).flatten(1).any(dim=1).sum()) if logits.ndim > 1 else int(torch.isnan(logits).sum())
        kinds = "NaN" if nan == bad.numel() else ("infinite" if nan == 0 else "NaN or infinite")
        raise GradconcealError(
            f"model {model_name!r} gives {kinds} logits on {bad.numel()} of {finite.numel()} clean images "
            f"(the first: image {int(bad[0])}); its weights or its forward are broken (one NaN weight makes every "
            "logit NaN): check the checkpoint and the model's layers before evaluating it"
        )
    if num_labels is not None and logits.ndim == 2 and int(logits.shape[1]) < int(num_labels):
        classes = int(logits.shape[1])
        raise GradconcealError(
            f"model {model_name!r} has {classes} classes (outputs) but the data has {int(num_labels)} "
            f"(labels 0..{int(num_labels) - 1}); images labelled {classes} or more could never be classified "
            f"correctly: use a model with {int(num_labels)} outputs or data of its classes"
        )


def check_num_classes(
    classes: Union[Tensor, nn.Module, int], labels: Tensor, model_name: Optional[str] = None, name: str = "labels"
) -> int:
    """The model's class count (from logits, an int, or a module's ``num_classes``); raise if a label is too large.

    The range check itself is ``gradconceal.attacks.checks.check_label_range``; this names the model.
    """
    if isinstance(classes, Tensor):
        count = int(classes.shape[-1])
    elif isinstance(classes, nn.Module):
        declared = getattr(classes, "num_classes", None)
        model_name = model_name or model_label(classes)
        if isinstance(declared, bool) or not isinstance(declared, int) or declared <= 0:
            raise GradconcealError(f"model {model_name!r} does not say how many classes it has (num_classes); "
                                   "pass its logits instead")
        count = declared
    elif isinstance(classes, int) and not isinstance(classes, bool):
        count = classes
    else:
        raise GradconcealError(f"classes must be logits, a model or an int, got {type(classes).__name__}")
    if labels.numel() == 0:
        return count
    try:
        checks.check_label_range(labels, count, name)
    except GradconcealError as error:
        largest = int(labels.max())
        raise GradconcealError(f"model {model_name or 'model'!r}: {error}; use a model with at least {largest + 1} "
                               f"outputs (or {name} of its classes)") from None
    return count


def probe_model(
    model: nn.Module,
    images: Tensor,
    labels: Optional[Tensor] = None,
    *,
    model_name: Optional[str] = None,
    num_labels: Optional[int] = None,
) -> Tensor:
    """Run ``model`` once on ``images`` (no gradient) and return its logits, after checking everything above.

    Checks, in order: the parameters' dtype against the images'; that the forward runs (an exception becomes
    one line naming the model, the original kept as its cause); that the output is an (N, classes)
    floating-point tensor; that every logit is finite; that there are at least ``num_labels`` classes (the
    data's class count, when known) and more classes than the largest of ``labels``. Raises
    ``GradconcealError``; ``images`` are assumed valid (``checks.check_images``).
    """
    name = model_name or model_label(model)
    check_model_dtype(model, images, name)
    try:
        with torch.no_grad():
            output: Any = model(images)
    except (RuntimeError, TypeError, ValueError, IndexError) as error:
        if isinstance(error, (GradconcealError, torch.cuda.OutOfMemoryError)):
            raise
        first = (str(error).strip().splitlines() or [""])[0]
        raise GradconcealError(
            f"model {name!r} fails on images of shape {tuple(images.shape)} ({_dtype_name(images.dtype)}): "
            f"{type(error).__name__}: {first}"
        ) from error
    logits = check_output(output, int(images.shape[0]), name)
    check_logits(logits, name, num_labels)
    if labels is not None:
        check_num_classes(logits, labels, name)
    return logits.detach()


class LogitsOnly(nn.Module):
    """``model`` whose output is reduced to its logits: ``model(x)[key]`` for a model returning a tuple, list
    or dict (auxiliary heads, feature maps); model metadata (``input_size``, ``num_classes``...) is kept."""

    def __init__(self, model: nn.Module, key: Union[int, str] = 0) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise GradconcealError(f"LogitsOnly needs a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.key = key
        for attribute in _FORWARDED:
            if hasattr(model, attribute) and not hasattr(self, attribute):
                setattr(self, attribute, getattr(model, attribute))
        self.training = model.training  # the wrapper's flag only: the model's layers keep their modes

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)[self.key]

    def extra_repr(self) -> str:
        return f"key={self.key!r}"
