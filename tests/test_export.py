"""A concealed model survives deployment: torch.export and ONNX (onnxruntime) keep GCM's sin and the predictions.

ONNX tests need the optional extra ``gradconceal[export]`` (onnx, onnxscript, onnxruntime) and skip without it.
Tolerance: the ONNX logits equal eager PyTorch's to 1e-4 absolute (measured: under 1e-5 for both models; the
smallest top-1 margin is about 0.12), and the predicted class is equal on every image.
"""

import math
import sys

import pytest
import torch
from torch import nn

from gradconceal import GradconcealError, GradientConcealment, conceal
from gradconceal.defenses import export
from gradconceal.defenses.export import check_sin_runtime, export_onnx, onnxruntime_sin, sin_probe_arguments

LOGIT_ATOL = 1e-4


def _load_model(name):
    from gradconceal.models.zoo import load_model

    try:
        return load_model(name).eval()
    except (ImportError, GradconcealError) as error:
        pytest.skip(f"{name} not available: {error}")


def _load_images(source, **options):
    from gradconceal.data import load_dataset

    try:
        data = load_dataset(source, **options)
    except GradconcealError as error:
        pytest.skip(f"{source} not available: {error}")
    return torch.stack([data[i][0] for i in range(len(data))])


@pytest.fixture(scope="module")
def fmnist_case():
    """``conceal(fmnist-cnn)`` and the first 64 Fashion-MNIST test images."""
    return conceal(_load_model("fmnist-cnn")), _load_images("fashion-mnist", limit=64)


@pytest.fixture(scope="module")
def lite0_case():
    """``conceal(lite0)`` and the 9 photos."""
    return conceal(_load_model("lite0")), _load_images("photos")


CASES = [
    pytest.param("fmnist_case", id="fmnist-cnn"),
    pytest.param("lite0_case", id="lite0", marks=pytest.mark.slow),
]


def _needs_onnx():
    for module in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install 'gradconceal[export]')")


def _run_onnx(path, images):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"pixels": images.numpy()})[0])


def _onnx_ops(path):
    import onnx

    return [node.op_type for node in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("case", CASES)
def test_torch_export_keeps_sin_and_predictions(case, request):
    defended, images = request.getfixturevalue(case)
    with torch.no_grad():
        eager = defended(images)
    program = torch.export.export(defended, (images,))
    targets = [node.target for node in program.graph.nodes if node.op == "call_function"]
    assert torch.ops.aten.sin.default in targets  # GCM is traced as the formula, not folded to an identity
    with torch.no_grad():
        exported = program.module()(images)
    assert torch.equal(exported.argmax(1), eager.argmax(1))
    assert torch.equal(exported, eager)  # the same kernels on the same machine: bit for bit


@pytest.mark.parametrize("case", CASES)
def test_onnx_keeps_sin_and_predictions(case, request, tmp_path):
    _needs_onnx()
    defended, images = request.getfixturevalue(case)
    with torch.no_grad():
        eager = defended(images)
    path = export_onnx(defended, images, tmp_path / "defended.onnx")
    assert "Sin" in _onnx_ops(path)
    logits = _run_onnx(path, images)
    assert logits.shape == eager.shape and torch.isfinite(logits).all()
    assert torch.equal(logits.argmax(1), eager.argmax(1))  # every image
    assert (logits - eager).abs().max().item() < LOGIT_ATOL
    few = _run_onnx(path, images[:3])  # the batch size is not baked in
    assert torch.equal(few.argmax(1), eager[:3].argmax(1))
    assert not defended.training  # export leaves the user's model as it was


def test_onnx_gcm_layer_computes_the_formula(tmp_path):
    """With a visible amplitude the ONNX layer must compute x + epsilon * sin(w * x), not pass x through."""
    _needs_onnx()
    pixels = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for w, epsilon, atol in [(3.0, 0.1, 1e-6), (1e20, 1e-8, 1e-7)]:
        layer = GradientConcealment(w=w, epsilon=epsilon)
        path = export_onnx(layer, pixels, tmp_path / f"gcm-{w:g}.onnx")
        assert _onnx_ops(path).count("Sin") == 1
        out = _run_onnx(path, pixels)
        assert (out - (torch.sin(pixels * w) * epsilon + pixels)).abs().max().item() < atol
    assert (out - pixels).abs().max().item() < 3e-8  # the default layer barely moves pixels in ONNX too


def test_export_refuses_a_file_without_gcm_sin(tmp_path, monkeypatch):
    _needs_onnx()
    monkeypatch.setattr(export, "count_concealment_layers", lambda model: 2)  # one Sin in the file, two expected
    with pytest.raises(GradconcealError, match="folded GCM away"):
        export_onnx(GradientConcealment(), torch.rand(2, 1, 4, 4), tmp_path / "gcm.onnx")


def test_export_names_the_extra_when_a_package_is_missing(monkeypatch, tmp_path):
    for module in ("onnx", "onnxscript", "onnxruntime"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError, as when not installed
    with pytest.raises(GradconcealError, match=r"needs the package 'onnxscript' \(pip install 'gradconceal\[export\]'\)"):
        export_onnx(GradientConcealment(), torch.rand(2, 1, 4, 4), tmp_path / "gcm.onnx")
    with pytest.raises(GradconcealError, match=r"needs the package 'onnx' \(pip install 'gradconceal\[export\]'\)"):
        onnxruntime_sin()


def test_export_rejects_bad_arguments(tmp_path):
    _needs_onnx()
    with pytest.raises(GradconcealError, match="at least 2 images"):
        export_onnx(GradientConcealment(), torch.rand(1, 1, 4, 4), tmp_path / "gcm.onnx")
    with pytest.raises(GradconcealError, match="nn.Module"):
        export_onnx("model", torch.rand(2, 1, 4, 4), tmp_path / "gcm.onnx")


def test_adaptive_pool_windows():
    assert export._adaptive_windows(7, 3) == (3, 2)  # fmnist-cnn: windows [0,3) [2,5) [4,7)
    assert export._adaptive_windows(8, 4) == (2, 2)
    assert export._adaptive_windows(5, 1) == (5, 1)
    assert export._adaptive_windows(10, 4) is None  # windows of 3 and 4 pixels


def test_sin_probe_covers_what_gcm_computes():
    arguments = sin_probe_arguments()
    assert arguments.dtype == torch.float32
    assert arguments.max().item() >= 1e20 and ((arguments > 1e18) & (arguments < 1e20)).sum() > 1000


def _nan_above_1e18(arguments):
    return torch.where(arguments.abs() > 1e18, torch.full_like(arguments, math.nan), torch.sin(arguments))


def _two_above_1e18(arguments):
    return torch.where(arguments.abs() > 1e18, torch.full_like(arguments, 2.0), torch.sin(arguments))


def test_sin_check_catches_a_runtime_returning_nan():
    with pytest.raises(GradconcealError, match=r"fake's sin is unusable for GCM: NaN or inf at \d+ of"):
        check_sin_runtime(_nan_above_1e18, runtime="fake")


def test_sin_check_catches_a_runtime_returning_values_outside_unit_range():
    with pytest.raises(GradconcealError, match=r"\|sin\| > 1 at \d+ of \d+ arguments \(largest 2\)"):
        check_sin_runtime(_two_above_1e18)
    with pytest.raises(GradconcealError, match=r"\|sin\| > 1"):
        check_sin_runtime(lambda arguments: arguments)  # no argument reduction at all


def test_sin_check_catches_a_failing_or_short_runtime():
    def broken(arguments):
        raise RuntimeError("kernel not found")

    with pytest.raises(GradconcealError, match="sin failed .*kernel not found"):
        check_sin_runtime(broken)
    with pytest.raises(GradconcealError, match="returned 3 values"):
        check_sin_runtime(lambda arguments: [0.0, 0.0, 0.0])


def test_torch_sin_passes_the_check():
    result = check_sin_runtime(torch.sin, runtime="torch")
    assert result.arguments == sin_probe_arguments().numel()
    assert 0.99 < result.max_abs <= 1.0


def test_onnxruntime_sin_passes_the_check_and_agrees_with_torch():
    _needs_onnx()
    run_sin = onnxruntime_sin()
    result = check_sin_runtime(run_sin, runtime="onnxruntime")
    assert result.max_abs <= 1.0
    arguments = sin_probe_arguments()
    ours = torch.as_tensor(run_sin(arguments))
    assert (ours - torch.sin(arguments)).abs().max().item() < 1e-6  # both reduce huge arguments exactly


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_sin_of_huge_float32_arguments_is_the_true_sine(runtime):
    """float32 sin(1e19) etc. against the float64 sine of the same float32 numbers."""
    arguments = torch.tensor([1e19, 3e19, 5e19, 1e20], dtype=torch.float32)
    if runtime == "onnxruntime":
        _needs_onnx()
        values = torch.as_tensor(onnxruntime_sin()(arguments))
    else:
        values = torch.sin(arguments)
    reference = torch.sin(arguments.double()).float()
    assert (values - reference).abs().max().item() < 1e-6
