"""The benchmark code's own logic: medians, paired ratios, targets, the table, and one tiny CLI run.

Benchmarks themselves are not tests (they run with ``python benchmarks/run.py`` from a checkout and live
outside the package, in ``benchmarks/gcbench``); these check that the numbers they print are computed right.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCHMARKS_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCHMARKS_DIR) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS_DIR))

from gcbench import gcm  # noqa: E402
from gcbench.results import Row, format_value, ratio_table, targets_summary  # noqa: E402
from gcbench.scaling import linear_fit  # noqa: E402
from gcbench.suite import bench_command, check_names  # noqa: E402
from gcbench.timing import interleaved, median, paired_ratio, ratio  # noqa: E402
from gradconceal.errors import GradconcealError  # noqa: E402


def _load_run_script() -> ModuleType:
    """``benchmarks/run.py``, the one command that runs the benchmarks, imported as a module."""
    spec = importlib.util.spec_from_file_location("gcbench_run_script", BENCHMARKS_DIR / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


main = _load_run_script().main


def test_median_odd_even_and_empty():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert math.isnan(median([]))


def test_ratio_guards_zero_and_nan():
    assert ratio(3.0, 2.0) == 1.5
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(float("nan"), 1.0))


def test_paired_ratio_is_the_median_of_per_round_ratios():
    # Round 2 is slow for both sides (load spike): per-round ratios stay 1.1, a ratio of medians would not.
    ours = [1.1, 11.0, 1.1, 2.2]
    bare = [1.0, 10.0, 1.0, 2.0]
    assert paired_ratio(ours, bare) == pytest.approx(1.1)
    with pytest.raises(ValueError, match="as many numerators"):
        paired_ratio([1.0], [1.0, 2.0])


def test_interleaved_times_each_contender_and_rotates_the_order():
    calls = []
    contenders = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    times = interleaved(contenders, repeats=3, warmup=1, clock="cpu")
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for values in times.values() for t in values)
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # after the warm-up round
    with pytest.raises(ValueError, match="repeats"):
        interleaved(contenders, repeats=0)


def test_row_target_met_and_table():
    good = Row("attacks", "fmnist b64 PGD", "ours / bare loop", 1.04, "x", ("<=", 1.1))
    bad = Row("attacks", "fmnist b64 PGD", "ours / torchattacks", 1.06, "x", ("<=", 1.0))
    plain = Row("runner", "small", "images/s", 22.0, "img/s")
    text = Row("gcm", "lite0", "bit-identical", "yes", target=("==", "yes"))
    assert good.met is True and bad.met is False and plain.met is None and text.met is True
    assert Row("x", "y", "z", float("nan"), "x", ("<=", 1.0)).met is None
    met, checked, missed = targets_summary([good, bad, plain, text])
    assert (met, checked, missed) == (2, 3, [bad])
    table = ratio_table([good, bad, plain])
    lines = table.splitlines()
    assert lines[0].startswith("| bench") and set(lines[1]) <= {"|", "-"}
    assert "| 1.040x " in lines[2] and "| <= 1.1x " in lines[2] and "| yes " in lines[2]
    assert "| NO " in lines[3]
    assert "22 img/s" in lines[4]
    assert json.loads(json.dumps(bad.to_dict()))["met"] is False


def test_format_value():
    assert format_value(0.987, "x") == "0.987x" and format_value(1.0004, "x") == "1.000x"
    assert format_value(12.5, "x") == "12.5x"
    assert format_value(1234.4, "rec/s") == "1,234 rec/s"
    assert format_value(12, "MiB") == "12 MiB"
    assert format_value(float("nan"), "x") == "n/a"


def test_linear_fit_recovers_a_line():
    intercept, slope = linear_fit([100.0, 1000.0, 10000.0], [2.0 + 0.003 * n for n in (100, 1000, 10000)])
    assert intercept == pytest.approx(2.0) and slope == pytest.approx(0.003)


def test_unknown_benchmark_name_is_a_clear_error():
    with pytest.raises(GradconcealError, match="unknown benchmark 'gcn'.*did you mean 'gcm'"):
        check_names(["gcn"])
    assert check_names(["runner", "gcm"]) == ["gcm", "runner"]  # suite order


def test_bench_command_reproduces_the_flags():
    command = bench_command(quick=True, only=["gcm"], out="out dir", repeats=2, threads=1, device="cpu")
    assert command == "python benchmarks/run.py --quick --only gcm --repeats 2 --out 'out dir'"


def test_gcm_layer_is_bit_identical_to_the_formula():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert gcm.bit_identical(x)
    assert torch.equal(gcm.masked_concealment(x, 1e20, 1e-8), gcm.naive_concealment(x, 1e20, 1e-8))


def test_quick_gcm_run_writes_a_table(tmp_path, monkeypatch, capsys):
    # The small CNN only, at a small batch, to keep this under a few seconds; lite0 is the benchmark's job.
    monkeypatch.setattr(gcm, "cases", lambda ctx: [("fmnist-cnn", "fashion-mnist", 16)])
    code = main(["--quick", "--only", "gcm", "--repeats", "1", "--out", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "forward: defended / undefended" in printed and "reproduce: python benchmarks/run.py --quick --only gcm" in printed
    saved = json.loads((tmp_path / "bench.json").read_text())
    measures = {row["measure"]: row for row in saved["rows"]}
    assert measures["layer output bit-identical to sin(w*x)*eps + x"]["value"] == "yes"
    ratio_row = measures["forward+backward: defended / undefended"]
    assert ratio_row["value"] > 0 and ratio_row["unit"] == "x"
    assert saved["machine"]["torch_threads"] == 1 and saved["quick"] is True
    assert (tmp_path / "table.md").read_text().startswith("| bench")


def test_bench_rejects_bad_flags(capsys):
    assert main(["--only", "nope"]) == 1
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
    assert main(["--threads", "0", "--only", "gpu"]) == 1


def test_ours_given_the_clean_logits_skips_one_forward_and_returns_the_same_images() -> None:
    from gcbench.attacks import AttackCase, contenders, count_passes

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    images = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        labels = model(images).argmax(1)
    sides = contenders(model, images, labels, AttackCase("PGD", "pgd", "linf", 8 / 255, 3))
    sides["ours, clean logits given"]()  # the first call computes the clean logits once, as the runner does
    ours, given = count_passes(model, sides["ours"]), count_passes(model, sides["ours, clean logits given"])
    assert given == (ours[0] - 1, ours[1])  # one forward fewer, the same backward passes
    assert ours[1] == 3
