"""Deployment of a concealed model: ONNX export that keeps GCM's sin, and a check of a runtime's ``sin``.

GCM computes ``sin(w * x)`` with ``w * x`` up to 1e20. Its forward value only matters if the runtime's
``sin`` stays finite and within [-1, 1] there: a runtime that returns NaN (or an unreduced value) for huge
arguments turns every logit into NaN (or moves the input), and an evaluation would then count every image as
misclassified, or as robust. ``check_sin_runtime`` refuses such a runtime before any number is reported.
onnx, onnxscript and onnxruntime are the optional extra ``gradconceal[export]``, imported only when used.
"""

from __future__ import annotations

import importlib
import inspect
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from gradconceal.errors import GradconcealError

_EXTRA = "pip install 'gradconceal[export]'"
_W = 1e20  # GCM's default w: its sin sees w * x for pixels x in [0, 1]
_MODE_DEPENDENT = (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd)


def _require(module: str, purpose: str) -> Any:
    """Import an optional package of the ``export`` extra, or say which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise GradconcealError(f"{purpose} needs the package {module!r} ({_EXTRA}): {error}") from None


def export_onnx(model: nn.Module, example: Tensor, path: Union[str, Path], *, dynamic_batch: bool = True) -> Path:
    """Write ``model`` (e.g. ``conceal(m)``) to an ONNX file whose input is ``pixels`` and output ``logits``.

    Uses torch's ``torch.export``-based ONNX exporter (torch >= 2.5, with onnxscript). Adaptive max pooling
    whose windows all have one size and stride (7 -> 3 pixels in the zoo's ``fmnist-cnn``) is written as the
    identical fixed max pooling, which ONNX has. Refuses to write a file in which GCM's ``Sin`` is missing.
    """
    _require("onnxscript", "export_onnx")
    onnx = _require("onnx", "export_onnx")
    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        raise GradconcealError(f"export_onnx needs torch >= 2.5 (its torch.export-based exporter), got {torch.__version__}")
    if not isinstance(model, nn.Module):
        raise GradconcealError(f"export_onnx needs a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example, Tensor) or example.ndim < 1:
        raise GradconcealError(f"example must be a batch of images as a tensor, got {type(example).__name__}")
    if dynamic_batch and example.shape[0] < 2:
        raise GradconcealError(
            f"example needs at least 2 images for a variable batch size, got {example.shape[0]}; "
            "pass more images or dynamic_batch=False"
        )
    if any(module.training for module in model.modules() if isinstance(module, _MODE_DEPENDENT)):
        warnings.warn("export_onnx: the model is in training mode; the file will compute training-mode layers", stacklevel=2)
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    program = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes)
    adaptive = torch.ops.aten.adaptive_max_pool2d.default
    if any(node.target is adaptive for node in program.graph.nodes):
        program = program.run_decompositions({adaptive: _adaptive_max_pool2d_as_fixed})
    onnx_program = torch.onnx.export(
        program, (example,), dynamo=True, input_names=["pixels"], output_names=["logits"], verbose=False
    )
    if onnx_program is None:  # only the deprecated TorchScript exporter returns None
        raise GradconcealError(f"torch {torch.__version__}'s ONNX exporter returned no program")
    path = Path(path)
    onnx_program.save(str(path))
    expected = count_concealment_layers(model)
    found = sum(node.op_type == "Sin" for node in onnx.load(str(path)).graph.node)
    if found < expected:
        raise GradconcealError(
            f"the ONNX file {path} has {found} Sin node(s) but the model has {expected} GCM layer(s): "
            "the exporter folded GCM away; do not deploy this file"
        )
    return path


def count_concealment_layers(model: nn.Module) -> int:
    """Number of GCM layers in ``model`` (each must survive export as one ``sin``)."""
    from gradconceal.defenses.concealment import GradientConcealment

    return sum(isinstance(module, GradientConcealment) for module in model.modules())


def _adaptive_windows(size: int, out: int) -> Optional[Tuple[int, int]]:
    """(kernel, stride) of adaptive pooling from ``size`` to ``out`` when all windows are alike, else None."""
    starts = [math.floor(i * size / out) for i in range(out)]
    ends = [math.ceil((i + 1) * size / out) for i in range(out)]
    kernels = {end - start for start, end in zip(starts, ends)}
    strides = {b - a for a, b in zip(starts, starts[1:])} or {1}
    if len(kernels) != 1 or len(strides) != 1:
        return None
    return kernels.pop(), strides.pop()


def _adaptive_max_pool2d_as_fixed(x: Tensor, output_size: Sequence[int]) -> Tuple[Tensor, Tensor]:
    """``adaptive_max_pool2d`` as the fixed ``max_pool2d`` with the very same windows (same values)."""
    height, width = int(x.shape[-2]), int(x.shape[-1])
    rows, cols = _adaptive_windows(height, int(output_size[0])), _adaptive_windows(width, int(output_size[1]))
    if rows is None or cols is None:
        raise GradconcealError(
            f"adaptive max pooling from {height}x{width} to {tuple(output_size)} has windows of different sizes, "
            "which ONNX cannot express; use an input size or pooling whose windows are alike"
        )
    return torch.ops.aten.max_pool2d_with_indices.default(x, [rows[0], cols[0]], [rows[1], cols[1]])


@dataclass(frozen=True)
class SinRuntimeCheck:
    """What ``check_sin_runtime`` saw: how many arguments, the largest |sin|, and where."""

    arguments: int
    max_abs: float
    worst_argument: float


def sin_probe_arguments() -> Tensor:
    """Float32 arguments GCM's ``sin`` sees: ``w * x`` for pixels x on a fine grid of [0, 1], and 1e0..1e20."""
    pixels = torch.linspace(0.0, 1.0, 4097, dtype=torch.float32)
    powers = torch.logspace(0.0, 20.0, 201, dtype=torch.float64).to(torch.float32)
    return torch.cat([pixels * _W, powers, -powers])


def check_sin_runtime(run_sin: Callable[[Tensor], Any], *, runtime: str = "the runtime") -> SinRuntimeCheck:
    """Raise ``GradconcealError`` if ``run_sin`` (float32 tensor in, array out) gives NaN/inf or |sin| > 1.

    Call it before trusting a runtime with a concealed model: GCM's forward is ``x + 1e-8 * sin(w * x)``, so a
    ``sin`` that misbehaves near 1e19..1e20 makes the logits NaN or moves the pixels. Any value in [-1, 1]
    is acceptable: the exact value does not matter to GCM (it is scaled by 1e-8).
    """
    arguments = sin_probe_arguments()
    try:
        values = torch.as_tensor(run_sin(arguments.clone())).to(torch.float64).reshape(-1)
    except GradconcealError:
        raise
    except Exception as error:  # the user's runtime failed: say so in one line
        raise GradconcealError(f"{runtime}'s sin failed on {arguments.numel()} float32 arguments: {error}") from error
    if values.numel() != arguments.numel():
        raise GradconcealError(f"{runtime}'s sin returned {values.numel()} values for {arguments.numel()} arguments")
    bad: List[str] = []
    non_finite = ~torch.isfinite(values)
    if bool(non_finite.any()):
        bad.append(f"NaN or inf at {int(non_finite.sum())} of {values.numel()} arguments")
    outside = torch.isfinite(values) & (values.abs() > 1.0)
    if bool(outside.any()):
        bad.append(f"|sin| > 1 at {int(outside.sum())} of {values.numel()} arguments (largest {values[outside].abs().max().item():.6g})")
    if bad:
        first = int((non_finite | outside).nonzero()[0])
        raise GradconcealError(
            f"{runtime}'s sin is unusable for GCM: {'; '.join(bad)}, e.g. sin({arguments[first].item():.6g}) = "
            f"{values[first].item():.6g}; a concealed model would give NaN logits or moved pixels there "
            "(see docs/usage.md, 'Deployment: exporting a concealed model')"
        )
    worst = int(values.abs().argmax())
    return SinRuntimeCheck(arguments.numel(), float(values[worst].abs()), float(arguments[worst]))


def onnxruntime_sin(providers: Optional[Sequence[str]] = None) -> Callable[[Tensor], Any]:
    """A ``run_sin`` for ``check_sin_runtime``: a one-node ONNX ``Sin`` model run by onnxruntime."""
    onnx = _require("onnx", "onnxruntime_sin")
    ort = _require("onnxruntime", "onnxruntime_sin")
    helper, proto = onnx.helper, onnx.TensorProto
    graph = helper.make_graph(
        [helper.make_node("Sin", ["x"], ["y"])],
        "gcm_sin",
        [helper.make_tensor_value_info("x", proto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", proto.FLOAT, [None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by onnxruntime >= 1.14
    session = ort.InferenceSession(model.SerializeToString(), providers=list(providers or ["CPUExecutionProvider"]))

    def run_sin(arguments: Tensor) -> Any:
        return session.run(None, {"x": arguments.numpy()})[0]

    return run_sin
