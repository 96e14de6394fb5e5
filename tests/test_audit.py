"""The gradient-masking audit: it must catch GCM and other masking, and spare honest models (no false positives).

Honesty tests of the audit itself: GCM on pretrained lite0 and on the shipped Fashion-MNIST nets, GCM with
other w/epsilon (flagged when w*epsilon > 1, spared when w*epsilon < 1), random resize-and-pad (randomised),
bit-depth reduction (masking); none of the vanilla or adversarially trained nets may be flagged.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from gradconceal import GradientConcealment
from gradconceal.defenses.quantization import BitDepthReduction
from gradconceal.errors import GradconcealError
from gradconceal.masking import CONFIRMED, NO_MASKING, SUSPECTED, VERDICTS, AuditReport, audit
from gradconceal.masking.forward import check_randomized_output
from gradconceal.masking.gradients import check_finite_difference, check_gradient_norm
from gradconceal.masking.result import significant
from gradconceal.masking.target import parse_defense

SMALL_NETS = ("fmnist-cnn", "fmnist-resnet")
CONCEALMENT_CHECKS = ("gradient_norm", "finite_difference", "gradient_stability", "shattering_layer")


def _shipped() -> list:
    from gradconceal.models.zoo import shipped_checkpoints

    return [name for name in shipped_checkpoints() if name.startswith("fmnist-")]


def _load(name: str) -> nn.Module:
    from gradconceal.models.zoo import load_model

    if name != "lite0" and name not in _shipped():
        pytest.skip(f"checkpoint {name!r} is not shipped in gradconceal/weights")
    return load_model(name)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a busy two-core CPU two threads oversubscribe and run several times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def fmnist():
    """64 Fashion-MNIST test images and labels as tensors."""
    from gradconceal.data import load_dataset

    try:
        data = load_dataset("fashion-mnist", limit=64)
    except GradconcealError as error:
        pytest.skip(f"Fashion-MNIST not available: {error}")
    return torch.stack([data[i][0] for i in range(len(data))]), torch.tensor(data.targets)


@pytest.fixture(scope="module")
def lite0():
    return _load("lite0")


@pytest.fixture(scope="module")
def lite0_quick(lite0):
    """Quick audits of vanilla and GCM lite0 on the photos (computed once for several tests)."""
    return {"none": audit(lite0, "photos", quick=True), "gcm": audit(lite0, "photos", defense="gcm", quick=True)}


def _flagged(report) -> set:
    return {c.name for c in report.checks if c.flagged}


# --- lite0, quick -------------------------------------------------------------------------------------------


def test_quick_audit_confirms_gcm_on_lite0_and_names_the_layer(lite0_quick):
    report = lite0_quick["gcm"]
    assert report.verdict == CONFIRMED  # the one-step BPDA probe beats the plain gradient
    assert set(CONCEALMENT_CHECKS) | {"forward_equivalence", "bpda_probe"} <= _flagged(report)
    assert report.layer == "GradientConcealment (defenses.0)"
    assert "BPDA" in report.remedy and "bpda=True" in report.remedy
    assert report.check("gradient_norm").measured["ratio"] > 1e9
    assert report.check("gradient_stability").measured["cosine"] < 0.2
    assert report.check("gradient_stability").measured["undefended_cosine"] > 0.5
    equivalence = report.check("forward_equivalence").measured
    assert equivalence["input_gap"] < 1e-6 and equivalence["logit_gap"] < 1e-3


def test_quick_audit_spares_vanilla_lite0(lite0_quick):
    report = lite0_quick["none"]
    assert report.verdict == NO_MASKING, report.table()
    assert not _flagged(report)
    assert report.check("finite_difference").measured["factor"] < 2  # autograd agrees with the function
    assert report.cause == "" and report.layer is None


def test_audit_leaves_model_mode_and_parameters_alone(lite0_quick, lite0):
    assert not lite0.training
    assert all(p.requires_grad for p in lite0.parameters())
    assert all(p.grad is None for p in lite0.parameters())


def test_audit_leaves_the_global_rng_alone(fmnist):
    model = _load("fmnist-cnn")  # building a net draws its initial weights from the global RNG
    state = torch.random.get_rng_state()
    audit(model, fmnist, defense="challenge", quick=True)
    assert torch.equal(state, torch.random.get_rng_state())


# --- small Fashion-MNIST nets, quick ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(set(SMALL_NETS) | set(_shipped())))
def test_quick_audit_flags_gcm_on_small_nets_and_spares_them_undefended(name, fmnist):
    model = _load(name)
    vanilla = audit(model, fmnist, quick=True)
    concealed = audit(model, fmnist, defense="gcm", quick=True)
    assert vanilla.verdict == NO_MASKING, vanilla.table()
    assert concealed.verdict != NO_MASKING, concealed.table()
    assert set(CONCEALMENT_CHECKS) <= _flagged(concealed)
    assert concealed.layer == "GradientConcealment (defenses.0)"


@pytest.mark.parametrize("w, epsilon", [(1e20, 1e-8), (1e12, 1e-10), (1e6, 1e-5), (1e20, 3e-20)])
def test_gcm_with_amplitude_above_one_is_flagged(w, epsilon, fmnist):
    assert w * epsilon > 1
    report = audit(_load("fmnist-cnn"), fmnist, defense=f"gcm:w={w},epsilon={epsilon}", quick=True)
    assert report.verdict != NO_MASKING, report.table()
    assert "gradient_stability" in _flagged(report)
    assert report.layer == "GradientConcealment (defenses.0)"


@pytest.mark.parametrize("w, epsilon", [(1e20, 1e-21), (1e20, 9e-21), (1e6, 5e-7), (1e3, 1e-4)])
def test_gcm_with_amplitude_below_one_is_not_flagged(w, epsilon, fmnist):
    # 1 + w*epsilon*cos(w*x) keeps its sign: the gradient points the right way, nothing is masked.
    assert w * epsilon < 1
    report = audit(_load("fmnist-cnn"), fmnist, defense=GradientConcealment(w=w, epsilon=epsilon), quick=True)
    assert report.verdict == NO_MASKING, report.table()


def test_resize_and_pad_is_flagged_as_randomised(fmnist):
    report = audit(_load("fmnist-cnn"), fmnist, defense="resize-pad", quick=True)
    assert "randomized_output" in _flagged(report)
    assert report.verdict == SUSPECTED
    assert "EOT" in report.remedy and "RandomResizePad" in report.cause
    assert report.check("randomized_output").measured["logit_gap"] > 0.01


def test_bit_depth_reduction_is_flagged_as_masking(fmnist):
    report = audit(_load("fmnist-cnn"), fmnist, defense="bit-depth", quick=True)
    assert report.verdict == CONFIRMED  # BPDA through the quantiser fools images the zero gradient cannot
    assert {"gradient_norm", "shattering_layer", "bpda_probe"} <= _flagged(report)
    assert report.layer == "BitDepthReduction (defenses.0)"
    assert report.check("gradient_norm").measured["per_grey_level"] == 0


def test_gcm_inside_a_sequential_is_located(fmnist):
    model = nn.Sequential(GradientConcealment(), _load("fmnist-cnn")).eval()
    model.input_size = (1, 28, 28)
    report = audit(model, fmnist, quick=True)
    assert report.layer == "GradientConcealment (0)"
    assert report.verdict != NO_MASKING


# --- checks on synthetic inputs -----------------------------------------------------------------------------


class _WrongBackward(torch.autograd.Function):
    """Identity forward whose backward claims a gradient 1000 times too large."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * 1000.0


def test_finite_difference_check_catches_a_lying_backward():
    weight = torch.randn(1, 3 * 8 * 8, generator=torch.Generator().manual_seed(0))
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))

    def loss(z):
        return (z.flatten(1) @ weight.T).squeeze(1)

    honest = weight.expand(4, -1).reshape(4, 3, 8, 8)
    generator = torch.Generator().manual_seed(2)
    ok = check_finite_difference(lambda z: loss(z), x, honest, generator)
    assert ok.status == "pass" and ok.measured["factor"] == pytest.approx(1.0, rel=1e-2)
    z = x.clone().requires_grad_(True)
    (lying,) = torch.autograd.grad(loss(_WrongBackward.apply(z)).sum(), z)
    bad = check_finite_difference(lambda z: loss(z), x, lying, generator)
    assert bad.status == "flag" and bad.measured["factor"] == pytest.approx(1000.0, rel=1e-2)


def test_gradient_norm_check_bounds():
    x = torch.ones(2, 1, 4, 4)
    assert check_gradient_norm(x).status == "pass"  # 16/255 per grey level
    assert check_gradient_norm(x * 0).status == "flag"
    assert check_gradient_norm(x * 1e6).status == "flag"
    assert check_gradient_norm(x * 20, reference=x).status == "flag"  # 20x the undefended gradient
    assert check_gradient_norm(x * 5, reference=x).status == "pass"
    assert check_gradient_norm(x * float("inf")).status == "flag"


def test_randomised_output_check_sees_dropout_in_training_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10), nn.Dropout(0.5))
    x = torch.rand(4, 1, 4, 4)
    assert check_randomized_output(model.train(), x, ["2"]).status == "flag"
    assert check_randomized_output(model.eval(), x, []).status == "pass"


def _outcome(correct: int, robust: int, total: int = 20):
    from gradconceal.masking.attack_checks import Outcome

    clean = torch.arange(total) < correct
    return Outcome(clean, clean & (torch.arange(total) >= robust), torch.zeros(total, 1, 2, 2))


def test_eps_sweep_rule():
    from gradconceal.masking.attack_checks import _eps_sweep

    honest = {2 / 255: _outcome(20, 15), 8 / 255: _outcome(20, 8), 32 / 255: _outcome(20, 1), 1.0: _outcome(20, 0)}
    assert _eps_sweep(honest, 0.0).status == "pass"
    rising = {**honest, 32 / 255: _outcome(20, 12)}  # 4 more survive a larger budget
    assert _eps_sweep(rising, 0.0).status == "flag"
    stuck = {**honest, 1.0: _outcome(20, 3)}  # 3 of 20 survive an unbounded attack
    result = _eps_sweep(stuck, 0.0)
    assert result.status == "flag" and "unbounded" in result.meaning
    assert _eps_sweep({**honest, 1.0: _outcome(20, 2)}, 0.0).status == "pass"  # 10 % may survive


def test_significance_rule():
    assert not significant(1, 5) and significant(2, 5)
    assert not significant(9, 100) and significant(10, 100)
    assert not significant(3, 0)


def test_bit_depth_reduction_layer():
    layer = BitDepthReduction(bits=2)
    x = torch.tensor([0.0, 0.1, 0.2, 0.5, 0.9, 1.2]).view(1, 1, 2, 3).requires_grad_(True)
    out = layer(x)
    assert out.flatten().tolist() == pytest.approx([0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0])
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.count_nonzero(grad) == 0  # the masking the audit must find
    for bad in (0, 17, 2.5, True):
        with pytest.raises(GradconcealError, match="bits"):
            BitDepthReduction(bad)


class _RoundedLinear(nn.Module):
    """A linear classifier on inputs rounded to quarter grey levels: its input gradient is exactly zero."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 3)
        self.input_size = (1, 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.round(x * 4).flatten(1) / 4)


@pytest.mark.parametrize("wrap", [False, True], ids=["single-stage", "last-of-two"])
def test_a_zero_gradient_at_the_last_stage_is_located_not_a_crash(wrap: bool):
    torch.manual_seed(0)
    model: nn.Module = _RoundedLinear().eval()
    if wrap:
        model = nn.Sequential(nn.Identity(), model).eval()
        model.input_size = (1, 4, 4)
    x = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    report = audit(model, (x, labels), quick=True)
    last = "_RoundedLinear (1)" if wrap else "_RoundedLinear (model)"
    assert report.layer == last
    assert report.cause == f"{last} zeroes it"
    assert report.verdict == SUSPECTED, report.table()
    shattering = report.check("shattering_layer")
    assert shattering.status == "flag" and shattering.measured["how"] == "zeroes it"
    assert shattering.measured["boundaries"][-1]["norm"] == 0
    assert report.check("gradient_norm").flagged


@pytest.mark.parametrize("clean, noisy, how", [
    (torch.zeros(2, 4), torch.zeros(2, 4), "zeroes it"),
    (torch.full((2, 4), math.inf), torch.full((2, 4), math.inf), "makes it non-finite"),
    (torch.eye(4)[:2], torch.eye(4)[2:], "makes it decorrelate under tiny noise"),
])
def test_locate_names_the_problem_of_the_last_stage(clean, noisy, how):
    from gradconceal.masking.localize import locate
    from gradconceal.masking.probes import StagedPass
    from gradconceal.masking.target import Stage

    found = locate([Stage("model", nn.Identity())], StagedPass(clean, [clean], [clean]),
                   StagedPass(noisy, [noisy], [noisy]), [False])
    assert found.found and found.index == 0 and found.label == "Identity (model)" and found.how == how


# --- errors and output --------------------------------------------------------------------------------------


def test_top_level_import_gives_a_callable_audit(fmnist):
    from gradconceal import audit as top_level

    report = top_level(_load("fmnist-cnn"), fmnist, quick=True, n=8)
    assert report.verdict == NO_MASKING and report.images == 8


def test_defense_spec_errors():
    with pytest.raises(GradconcealError, match="did you mean 'gcm'"):
        parse_defense("gcn")
    with pytest.raises(GradconcealError, match="takes options"):
        parse_defense("gcm:width=3")
    with pytest.raises(GradconcealError, match="w must be a number"):
        parse_defense("gcm:w=big")
    with pytest.raises(GradconcealError, match="input size"):
        parse_defense("resize-pad")
    layers, name = parse_defense("challenge", (3, 224, 224))
    assert [type(layer).__name__ for layer in layers] == ["GradientConcealment", "RandomResizePad"]
    assert layers[1].min_size == 218


def test_audit_input_errors(fmnist):
    model = _load("fmnist-cnn")
    images, labels = fmnist
    with pytest.raises(GradconcealError, match=r"size \(1, 32, 32\)"):
        audit(model, (torch.rand(4, 1, 32, 32), labels[:4]), quick=True)
    with pytest.raises(GradconcealError, match=r"\[0, 1\]"):
        audit(model, (images[:4] * 2, labels[:4]), quick=True)
    with pytest.raises(GradconcealError, match="eps"):
        audit(model, fmnist, eps=0, quick=True)
    with pytest.raises(GradconcealError, match="no default data"):
        audit(nn.Linear(3, 2), quick=True)


def test_cli_writes_audit_json_with_verdict(tmp_path, capsys):
    from gradconceal.cli import main

    if "fmnist-cnn" not in _shipped():
        pytest.skip("fmnist-cnn is not shipped")
    assert main(["audit", "fmnist-cnn", "--defense", "gcm", "--quick", "--n", "32", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "audit.json").read_text())
    assert saved["verdict"] in VERDICTS and saved["verdict"] != NO_MASKING
    assert printed.strip().splitlines()[-1].startswith(f"verdict: {saved['verdict']}")
    assert {c["name"] for c in saved["checks"]} >= set(CONCEALMENT_CHECKS)
    assert all(not isinstance(v, float) or math.isfinite(v) for c in saved["checks"] for v in c["measured"].values())
    again = AuditReport.from_dict(saved)
    assert again.verdict == saved["verdict"] and again.table().splitlines()[1:] == printed.strip().splitlines()[1:-1]
    assert main(["audit", "fmnist-cnn", "--defense", "jpeg", "--quick", "--out", str(tmp_path)]) == 1
    assert "unknown defense 'jpeg'" in capsys.readouterr().err


# --- full audits (attacks) ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_full_audit_lite0_gcm_confirmed_and_vanilla_clean(lite0):
    concealed = audit(lite0, "photos", defense="gcm")
    assert concealed.verdict == CONFIRMED, concealed.table()
    assert {"black_box", "transfer", "adaptive"} <= _flagged(concealed)
    vanilla = audit(lite0, "photos")
    assert vanilla.verdict == NO_MASKING, vanilla.table()


@pytest.mark.slow
def test_full_audit_small_nets(fmnist):
    model = _load("fmnist-cnn")
    data = (fmnist[0][:32], fmnist[1][:32])
    concealed = audit(model, data, defense="gcm")
    assert concealed.verdict == CONFIRMED, concealed.table()
    assert {"transfer", "adaptive"} <= _flagged(concealed)
    quantised = audit(model, data, defense="bit-depth")
    assert quantised.verdict == CONFIRMED and "adaptive" in _flagged(quantised), quantised.table()
    for name in _shipped():
        report = audit(_load(name), data)
        assert report.verdict == NO_MASKING, f"{name}:\n{report.table()}"


def test_the_audit_of_a_random_defence_is_the_same_whatever_draws_came_before(fmnist):
    """An evaluation audits its defended models after attacking them: their unseeded resize-and-pad layers have
    drawn from torch's global RNG by then, and the verdict (which hangs on the BPDA probe's draw) must not
    depend on how many draws that was."""
    from gradconceal.defenses.build import build_defense
    from gradconceal.defenses.concealment import DefendedModel

    base = _load("fmnist-cnn")
    model = DefendedModel(base, build_defense("challenge", {}, base.input_size)).eval()

    def measured() -> list:
        report = audit(model, fmnist, quick=True, seed=3)
        return [report.verdict] + [(c.name, c.status, c.measured) for c in report.checks]

    torch.manual_seed(0)
    first = measured()
    for global_seed, earlier_calls in ((1, 0), (2, 5), (3, 1)):
        torch.manual_seed(global_seed)
        with torch.no_grad():
            for _ in range(earlier_calls):
                model(fmnist[0][:4])
        assert measured() == first
    assert audit(model, fmnist, quick=True, seed=4).check("randomized_output").flagged  # still random
