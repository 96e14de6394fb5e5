"""The command line: one clear line and exit 1 for a bad spec, 2 for bad usage, 0 with a report otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradconceal.cli import main


def run_cli(capsys, *argv: str):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "spec_text, message",
    [
        ('models = ["fmnist-cnn"]\nattacks = ["paper"]\ndata = "fashion-mnist"\ndefences = ["gcm"]\n',
         "unknown key 'defences' in spec (did you mean 'defenses'?)"),
        ('format_version = 9\nmodels = ["fmnist-cnn"]\nattacks = ["paper"]\ndata = "fashion-mnist"\n',
         "spec format_version 9 is newer than this gradconceal understands"),
        ('models = ["fmnist-cn"]\nattacks = ["paper"]\ndata = "fashion-mnist"\n',
         "unknown model 'fmnist-cn' (did you mean 'fmnist-cnn'?)"),
        ('models = ["fmnist-cnn"]\nattacks = ["paper"]\ndata = "imagenet:/no/such/dir"\n',
         "folder not found: /no/such/dir"),
        ('models = ["fmnist-cnn"]\ndata = "fashion-mnist"\n[[attacks]]\nattack = "pgd"\neps = -0.5\n',
         "eps must be > 0"),
        ('models = ["fmnist-cnn"\n', "is not valid TOML"),
    ],
)
def test_bad_specs_exit_1_with_one_line(tmp_path: Path, capsys, spec_text: str, message: str) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text)
    code, out, err = run_cli(capsys, "evaluate", str(spec), "--out", str(tmp_path / "out"))
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert "Traceback" not in err + out
    assert not (tmp_path / "out" / "report.md").exists()


def test_missing_spec_file_and_missing_flags_are_clear(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path / "nope.toml"))
    assert code == 1 and "spec file not found" in err
    code, _, err = run_cli(capsys, "evaluate", "--data", "fashion-mnist")
    assert code == 1 and "give a spec file, or at least --model" in err


def test_usage_errors_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--no-such-flag"])
    assert stop.value.code == 2
    with pytest.raises(SystemExit) as stop:
        main(["demo", "--n", "two"])
    assert stop.value.code == 2


@pytest.mark.parametrize("command", ["evaluate", "demo", "models"])
def test_every_command_has_help_with_examples(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    assert "examples:" in out and f"gradconceal {command}" in out
    if command != "models":
        assert "--out DIR" in out


def test_models_lists_the_zoo(capsys) -> None:
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    for name in ("lite0", "fmnist-cnn", "small:cnn"):
        assert name in out
    code, out, _ = run_cli(capsys, "models", "fmnist-*", "--json")
    names = [row["name"] for row in json.loads(out)]
    assert code == 0 and "fmnist-cnn" in names and all(name.startswith("fmnist-") for name in names)


def test_check_validates_and_prints_the_full_spec(capsys) -> None:
    code, out, _ = run_cli(capsys, "evaluate", "--model", "fmnist-cnn", "--data", "fashion-mnist", "--n", "4",
                           "--attacks", "paper", "--check")
    assert code == 0 and "spec is valid: 1 model(s), 2 defence(s), 5 attack(s), 4 image(s)" in out
    spec = json.loads(out[: out.rindex("}") + 1])["spec"]
    assert spec["defenses"][1]["name"] == "gcm" and spec["data"]["n"] == 4


def test_evaluate_from_flags_writes_the_report_and_prints_the_table(tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "report"
    code, out, err = run_cli(capsys, "--quiet", "evaluate", "--model", "fmnist-cnn", "--defense", "none", "--data",
                             "fashion-mnist", "--n", "4", "--attacks", "paper", "--no-audit", "--device", "cpu",
                             "--out", str(out_dir))
    assert code == 0, err
    assert "clean accuracy %" in out and "PGD-Linf" in out and f"report: {out_dir / 'report.md'}" in out
    for name in ("report.md", "results.json", "results.csv", "records.jsonl", "ar_per_attack.png"):
        assert (out_dir / name).is_file(), name
    code, out, err = run_cli(capsys, "--quiet", "evaluate", str(out_dir / "results.json"), "--out", str(tmp_path / "again"))
    assert code == 0 and "reproduced: every number equals" in out


def test_installed_command_prints_one_line_without_traceback(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"models": ["fmnist-cnn"], "data": "fashion-mnist", "attacks": ["paper"], "sed": 1}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "gradconceal", "evaluate", str(spec)], capture_output=True, text=True,
                          env=env)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: unknown key 'sed' in spec (did you mean 'seed'?)"


@pytest.mark.slow
def test_demo_prints_predictions_facts_and_both_tables(tmp_path: Path, capsys) -> None:
    code, out, err = run_cli(capsys, "--quiet", "demo", "--n", "2", "--device", "cpu", "--out", str(tmp_path))
    assert code == 0, err
    assert "chelsea" in out and "same top-1 with and without GCM" in out
    assert "gradient sign agreement" in out and "gradient norm ratio" in out
    assert "the paper's protocol" in out and "BPDA PGD-Linf" in out and "Square-Linf" in out
    assert "demo run time" in out
    report = (tmp_path / "report.md").read_text()
    assert "## Gradient facts" in report and "gradconceal demo reduces" not in report
    assert "The quick demo halves the PGD steps" in report
    spec = json.loads((tmp_path / "results.json").read_text())["spec"]
    assert spec["models"][0]["name"] == "lite0" and [d["name"] for d in spec["defenses"]] == ["none", "gcm"]
