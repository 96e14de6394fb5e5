"""The GPU check (benchmarks/gpu_check.sh): its refusal without a GPU, its CPU smoke run and its ratio arithmetic.

The check itself needs a CUDA device; here its CPU-safe parts run at the ``--cpu-smoke`` size (16 px,
batch 1, one PGD step, one round, ``torch.compile`` with the eager backend) on ResNet-50, the model the
anchors are for, with CUDA hidden, so the table's rows, columns and anchor ratios and the plain "not run"
message are checked on any machine.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from attacks_support import BENCHMARKS_DIR, load_gpu_check



gpu_check = load_gpu_check()
VARIANTS = ("fp32", "bf16", "bf16 + compile")
SIDES = ("ours", "torchattacks", "bare")


def test_without_a_gpu_it_refuses_unless_asked_for_the_cpu_smoke() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(BENCHMARKS_DIR / "gpu_check.sh")], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no GPU found" in done.stderr and "--cpu-smoke" in done.stderr
    assert "|" not in done.stdout, "nothing is measured without a GPU and without --cpu-smoke"


def test_ratios_and_anchors_from_paired_times() -> None:
    # bare 1 s, ours 1.1 s, torchattacks 1.05 s in fp32; bf16 takes half, compile a quarter, in both rounds.
    base = {"ours": 1.1, "torchattacks": 1.05, "bare": 1.0}
    scale = {"fp32": 1.0, "bf16": 0.5, "bf16 + compile": 0.25}
    times = {f"{v} | {s}": [base[s] * scale[v]] * 2 for v in VARIANTS for s in SIDES}
    del times["bf16 | torchattacks"]
    rows = {(r.variant, r.side): r for r in gpu_check.rows_from_times(
        "timm:resnet50", 256, times, {"fp32 | ours": 900.0}, {"bf16 | torchattacks": "RuntimeError: boom"})}
    assert len(rows) == 9
    ours = rows[("bf16 + compile", "ours")]
    assert ours.images_per_s == pytest.approx(256 / 0.275)
    assert ours.time_vs_bare == pytest.approx(1.1) and ours.speedup_vs_fp32 == pytest.approx(4.0)
    assert rows[("fp32", "ours")].peak_mib == 900.0 and ours.peak_mib is None
    failed = rows[("bf16", "torchattacks")]
    assert math.isnan(failed.images_per_s) and failed.note == "RuntimeError: boom"
    # The H100 anchors: 281 / 414 / 833 img/s for the bare loop, 283 for torchattacks in fp32.
    assert rows[("fp32", "bare")].anchor_images_per_s == 281
    assert rows[("bf16", "bare")].anchor_speedup_vs_fp32 == pytest.approx(414 / 281)
    assert rows[("bf16 + compile", "bare")].anchor_speedup_vs_fp32 == pytest.approx(833 / 281)
    assert rows[("fp32", "torchattacks")].anchor_time_vs_bare == pytest.approx(281 / 283)
    assert ours.anchor_images_per_s is None
    table = gpu_check.throughput_table(list(rows.values()))
    assert "| timm:resnet50 | bf16 + compile | bare | 1024.0 | - | 1.000x | 4.00x | 833 | 1.000x | 2.96x |" in table


def test_cpu_smoke_prints_the_table_and_names_the_steps_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    threads = torch.get_num_threads()
    out = tmp_path / "check.json"
    try:
        code = gpu_check.main(["--cpu-smoke", "--models", "timm:resnet50", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert code == 0, printed
    found = json.loads(out.read_text())

    rows = found["rows"]
    assert [(r["model"], r["variant"], r["side"]) for r in rows] == [
        ("timm:resnet50", v, s) for v in VARIANTS for s in SIDES]
    for r in rows:
        assert math.isfinite(r["images_per_s"]) and r["images_per_s"] > 0, r
        assert math.isfinite(r["time_vs_bare"]) and math.isfinite(r["speedup_vs_fp32"]), r
        assert r["peak_mib"] is None, "no CUDA memory on the CPU"
        if r["side"] == "bare":
            assert r["time_vs_bare"] == 1.0
        if r["variant"] == "fp32":
            assert r["speedup_vs_fp32"] == 1.0
    anchored = {(r["variant"], r["side"]): r["anchor_images_per_s"] for r in rows if r["anchor_images_per_s"]}
    assert anchored == {("fp32", "bare"): 281, ("bf16", "bare"): 414, ("bf16 + compile", "bare"): 833,
                        ("fp32", "torchattacks"): 283}
    assert {k: found["settings"][k] for k in ("device", "batch", "size", "repeats", "steps", "compile_backend")} == {
        "device": "cpu", "batch": 1, "size": 16, "repeats": 1, "steps": 1, "compile_backend": "eager"}

    header = "| " + " | ".join(gpu_check.TABLE_COLUMNS) + " |"
    assert header in printed
    assert sum(line.startswith("| timm:resnet50 |") for line in printed.splitlines()) == 9

    status = {s["name"]: s["status"] for s in found["steps"]}
    assert status == {gpu_check.STEP_TESTS: "not run", gpu_check.STEP_THROUGHPUT: "passed",
                      gpu_check.STEP_DISTRIBUTED: "not run"}
    message = found["not_run_message"]
    assert message.startswith("no GPU found")
    assert "pytest -m gpu" in message and "2-process NCCL" in message and message in printed
    assert "step 2" not in message


def test_sides_and_variants_trim_step_2_and_the_bare_loop_is_always_timed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    threads = torch.get_num_threads()
    out = tmp_path / "check.json"
    try:
        code = gpu_check.main(["--cpu-smoke", "--models", "timm:resnet50", "--variants", "fp32", "--sides",
                               "torchattacks-scored", "ours-clean-given", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0, capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [(r["variant"], r["side"]) for r in rows] == [
        ("fp32", "ours, clean logits given"), ("fp32", "torchattacks + scoring"), ("fp32", "bare")]
    assert all(math.isfinite(r["images_per_s"]) and r["images_per_s"] > 0 for r in rows)
    with pytest.raises(SystemExit):
        gpu_check.main(["--cpu-smoke", "--sides", "fastest"])


def _python(code: str) -> List[str]:
    return [sys.executable, "-c", code]


def test_step_1_runs_beside_step_2_and_reports_pytests_summary_once() -> None:
    tests = gpu_check.BackgroundTests(_python("import time; time.sleep(0.5); print('noise'); print('3 passed in 0.5s')"))
    first = tests.finish()
    assert (first.name, first.status, first.detail) == (gpu_check.STEP_TESTS, "passed", "3 passed in 0.5s")
    assert first.seconds >= 0.5
    assert tests.finish() is first, "step 2 calls finish() before each model: it must not wait or re-run"


@pytest.mark.parametrize("code, expected", [
    ("import sys; print('1 failed, 2 passed'); sys.exit(1)", "1 failed, 2 passed"),
    ("import sys; print('no tests ran'); sys.exit(5)", "no gpu-marked tests collected: no tests ran"),
])
def test_step_1_fails_when_pytest_fails_or_collects_nothing(code: str, expected: str) -> None:
    step = gpu_check.BackgroundTests(_python(code)).finish()
    assert step.status == "failed" and expected in step.detail


def test_step_1_that_outlives_its_limit_is_killed_and_failed() -> None:
    step = gpu_check.BackgroundTests(_python("import time; print('started', flush=True); time.sleep(60)"),
                                     timeout=1.0).finish()
    assert step.status == "failed" and step.detail.startswith("still running after 1 s") and "started" in step.detail
    assert step.seconds < 30


def test_step_2_times_nothing_before_step_1_has_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    events: List[str] = []
    import gcbench.timing

    def timed(*args: object, **kwargs: object) -> Dict[str, List[float]]:
        events.append("timed")
        return {}

    monkeypatch.setattr(gcbench.timing, "interleaved", timed)
    settings = gpu_check.Settings(device="cpu", batch=1, size=16, repeats=1, compile_backend="eager", steps=1,
                                  models=["timm:resnet50", "timm:resnet50"], variants=["fp32"], sides=["bare"])
    threads = torch.get_num_threads()
    try:
        gpu_check.run_throughput(settings, lambda: events.append("tests finished"))
    finally:
        torch.set_num_threads(threads)
    assert events == ["tests finished", "timed", "tests finished", "timed"]
