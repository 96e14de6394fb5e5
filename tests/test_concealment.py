"""The GCM layer's numerics and the defended model's invariances, as users rely on them."""

import pytest
import torch
import torchvision
from torch import nn

from gradconceal import DefendedModel, GradconcealError, GradientConcealment, conceal


def paper_formula(x, w=1e20, epsilon=1e-8):
    return torch.sin(x * w) * epsilon + x


@pytest.fixture(scope="module")
def pixels():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=g)
    x[0, 0, 0, :6] = torch.tensor([0.0, 1.0, 0.25, 0.5, 1e-9, 0.7])
    return x


def test_layer_has_no_parameters_and_empty_state_dict():
    layer = GradientConcealment()
    assert list(layer.parameters()) == []
    assert layer.state_dict() == {}
    assert (layer.w, layer.epsilon) == (1e20, 1e-8)


def test_float32_output_is_bit_identical_to_the_paper_formula(pixels):
    assert torch.equal(GradientConcealment()(pixels), paper_formula(pixels))
    layer = GradientConcealment(w=3.0, epsilon=0.1)
    assert torch.equal(layer(pixels), paper_formula(pixels, 3.0, 0.1))


def test_float32_forward_barely_moves_pixels(pixels):
    change = (GradientConcealment()(pixels) - pixels).abs()
    assert change.max() < 3e-8  # epsilon, plus the rounding of x to float32 (an ulp of 0.25 is 3e-8)
    # Above 0.25 the addend is below half a float32 ulp: GCM is an exact identity there.
    assert torch.equal(GradientConcealment()(pixels)[pixels > 0.25], pixels[pixels > 0.25])


def test_gradient_is_the_true_one_huge_and_sign_scrambled(pixels):
    x = pixels.clone().requires_grad_(True)
    weights = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(1))
    (GradientConcealment()(x) * weights).sum().backward()
    ours = x.grad.clone()
    y = pixels.clone().requires_grad_(True)
    (paper_formula(y) * weights).sum().backward()
    assert torch.equal(ours, y.grad)  # same as autograd of the paper's formula, bit for bit
    assert (ours / weights).abs().median() > 1e11  # about eps*w = 1e12
    agreement = (torch.sign(ours) == torch.sign(weights)).float().mean().item()
    assert 0.4 < agreement < 0.6  # the sign of the incoming gradient survives about half the time


def test_gradient_keeps_its_true_sign_at_black_pixels():
    # cos(w * 0) = 1: at a pixel exactly 0 the factor is 1 + w * epsilon > 0, so the concealed gradient has
    # the true sign there (docs/audit.md; why FGSM through GCM still works on Fashion-MNIST's black background).
    x = torch.zeros(2, 1, 8, 8)
    x[:, :, :, 4:] = torch.rand(2, 1, 8, 4, generator=torch.Generator().manual_seed(3)) * 0.9 + 0.05
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    x.requires_grad_(True)
    (GradientConcealment()(x) * weights).sum().backward()
    black = x.detach() == 0
    assert torch.equal(torch.sign(x.grad[black]), torch.sign(weights[black]))
    assert torch.allclose(x.grad[black], weights[black] * (1 + 1e20 * 1e-8), rtol=1e-5)
    agreement = (torch.sign(x.grad[~black]) == torch.sign(weights[~black])).float().mean().item()
    assert agreement < 0.8, "elsewhere the sign is scrambled"


def test_small_amplitude_keeps_gradient_sign(pixels):
    x = pixels.clone().requires_grad_(True)
    GradientConcealment(w=10.0, epsilon=0.05)(x).sum().backward()  # w*epsilon = 0.5 < 1
    assert bool((x.grad > 0).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_computes_in_float32_and_keeps_dtype(pixels, dtype):
    x = pixels.to(dtype)
    naive = paper_formula(x)
    assert naive.isnan().any() or dtype == torch.bfloat16  # 1e20 overflows float16: the naive layer gives NaN
    y = GradientConcealment()(x)
    assert y.dtype == dtype
    assert torch.isfinite(y).all()
    assert torch.equal(y, paper_formula(x.float()).to(dtype))


def test_float16_gradient_is_documented_infinity(pixels):
    x = pixels.half().requires_grad_(True)
    GradientConcealment()(x).sum().backward()
    assert x.grad.dtype == torch.float16
    assert torch.isinf(x.grad).all()  # ~1e12 does not fit in float16 (max 65504)


def test_bfloat16_gradient_is_finite(pixels):
    x = pixels.bfloat16().requires_grad_(True)
    GradientConcealment()(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() > 1e10


def test_autocast_region_computes_in_float32(pixels):
    layer = GradientConcealment()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(pixels)
    assert y.dtype == torch.float32
    assert torch.equal(y, paper_formula(pixels))


def test_float64_matches_formula(pixels):
    x = pixels.double()
    assert torch.equal(GradientConcealment()(x), paper_formula(x))


def test_exports_with_torch_export(pixels):
    program = torch.export.export(GradientConcealment(), (pixels,))
    assert torch.equal(program.module()(pixels), paper_formula(pixels))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda(pixels):
    x = pixels.cuda()
    assert torch.equal(GradientConcealment()(x), paper_formula(x))
    assert torch.isfinite(GradientConcealment()(x.half())).all()


def test_rejects_bad_arguments():
    with pytest.raises(GradconcealError, match="floating-point"):
        GradientConcealment()(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    with pytest.raises(GradconcealError, match="finite w"):
        GradientConcealment(w=float("inf"))
    with pytest.raises(GradconcealError, match="nn.Module"):
        conceal("resnet")
    with pytest.raises(GradconcealError, match="both mean and std"):
        conceal(nn.Identity(), mean=[0.5, 0.5, 0.5])


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def test_conceal_shares_the_model_and_its_state_dict(resnet):
    defended = conceal(resnet)
    assert defended.base is resnet
    assert isinstance(defended.concealment, GradientConcealment)
    assert defended.state_dict().keys() == resnet.state_dict().keys()
    assert defended.state_dict()["conv1.weight"].data_ptr() == resnet.conv1.weight.data_ptr()
    other = torchvision.models.resnet18(num_classes=10).eval()
    defended.load_state_dict(other.state_dict())  # the undefended checkpoint loads into the defended model...
    assert torch.equal(resnet.fc.weight, other.fc.weight)
    other.load_state_dict(conceal(resnet).state_dict())  # ...and back


def test_state_dict_round_trip_when_nested(resnet):
    outer = nn.Sequential(conceal(resnet))
    keys = outer.state_dict().keys()
    assert "0.conv1.weight" in keys
    outer.load_state_dict(outer.state_dict())


def test_conceal_with_normalisation_puts_gcm_on_pixels(resnet, pixels):
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    defended = conceal(resnet, mean=mean, std=std)
    normalised = (paper_formula(pixels) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.equal(defended(pixels), resnet(normalised))
        plain = resnet((pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
        assert torch.equal(defended(pixels).argmax(1), plain.argmax(1))
        assert (defended(pixels) - plain).abs().max() < 1e-4


def test_defended_model_takes_any_input_defences(resnet, pixels):
    defended = DefendedModel(resnet, [nn.Identity()])
    assert defended.concealment is None
    with torch.no_grad():
        assert torch.equal(defended(pixels), resnet(pixels))


def test_defended_model_moves_and_casts_like_any_module(resnet, pixels):
    defended = conceal(resnet).double()  # nn.Module.to/.double/.cuda must keep working with GCM inside
    assert next(defended.parameters()).dtype == torch.float64
    with torch.no_grad():
        assert defended(pixels.double()).dtype == torch.float64
    defended.float()
