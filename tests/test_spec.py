"""Evaluation specs: parsing, canonical round-trip, and every mistake caught before any model loads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gradconceal.errors import GradconcealError
from gradconceal.evaluation.plan import plan_attacks
from gradconceal.evaluation.spec import FORMAT_VERSION, load_spec, sample_seed, sample_seeds

FMNIST = (1, 28, 28)


def base_spec(**changes):
    spec = {"models": ["fmnist-cnn"], "data": {"source": "fashion-mnist", "n": 10}, "attacks": ["paper"]}
    spec.update(changes)
    return spec


TOML_SPEC = """
format_version = 1
title = "two defences"
models = ["fmnist-cnn", {name = "small:cnn", label = "random-cnn"}]
defenses = ["none", "gcm", {name = "gcm", w = 1e3, epsilon = 1e-2, label = "weak-gcm"}, "challenge"]
batch_size = 8
seed = 3

[data]
source = "fashion-mnist"
n = 20

[[attacks]]
preset = "paper"

[[attacks]]
label = "PGD-Linf-16"
attack = "pgd"
norm = "linf"
eps = "16/255"
steps = 5
view = "bpda"

[sweep]
linf = ["2/255", "8/255"]
views = ["plain"]
"""


def test_toml_spec_parses_and_round_trips_through_json(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text(TOML_SPEC)
    spec = load_spec(path)
    assert [m.label for m in spec.models] == ["fmnist-cnn", "random-cnn"]
    assert [d.label for d in spec.defenses] == ["vanilla", "gcm", "weak-gcm", "challenge"]
    assert spec.defenses[2].w == 1e3 and spec.defenses[2].epsilon == 1e-2
    assert (spec.batch_size, spec.seed, spec.data.n) == (8, 3, 20)
    assert spec.attacks[1].settings == {"norm": "linf", "eps": "16/255", "steps": 5}
    again = load_spec(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert again.to_dict()["format_version"] == FORMAT_VERSION


def test_json_spec_file_and_results_file_give_the_same_spec(tmp_path: Path) -> None:
    spec = load_spec(base_spec(seed=5))
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_dict()))
    (tmp_path / "results.json").write_text(json.dumps({"kind": "gradconceal-results", "spec": spec.to_dict()}))
    assert load_spec(tmp_path / "spec.json") == spec
    assert load_spec(tmp_path / "results.json") == spec


def test_relative_paths_are_taken_from_the_spec_file(tmp_path: Path) -> None:
    (tmp_path / "val").mkdir()
    (tmp_path / "spec.toml").write_text('models = ["lite0"]\nattacks = ["paper"]\ndata = "imagenet:val"\n')
    spec = load_spec(tmp_path / "spec.toml")
    assert spec.data.source == f"imagenet:{(tmp_path / 'val').resolve()}"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"defences": ["none"]}, r"unknown key 'defences' in spec \(did you mean 'defenses'\?\)"),
        ({"data": {"source": "fashion-mnist", "nn": 3}}, r"unknown key 'nn' in data \(did you mean 'n'\?\)"),
        ({"models": [{"name": "fmnist-cnn", "wieghts": "x"}]}, r"models\[0\].*did you mean 'weights'"),
        ({"models": [{"name": "fmnist-cnn", "weights": "/no/such/w.safetensors"}]},
         r"models\[0\]\.weights: file not found: /no/such/w\.safetensors"),
        ({"defenses": [{"name": "gcm", "epsilom": 1.0}]}, r"defenses\[0\].*did you mean 'epsilon'"),
        ({"format_version": FORMAT_VERSION + 1}, r"format_version 2 is newer than this gradconceal understands"),
        ({"models": ["lite00"]}, r"unknown model 'lite00' \(did you mean 'lite0'\?\)"),
        ({"models": ["timm:resnet5"]}, r"timm has no model 'resnet5' \(did you mean 'resnet50'\?\)"),
        ({"models": ["small:cnnn"]}, r"unknown small architecture 'small:cnnn'"),
        ({"models": ["/no/such/model.safetensors"]}, r"model checkpoint not found: /no/such/model.safetensors"),
        ({"data": "imagenet:/no/such/folder"}, r"folder not found: /no/such/folder"),
        ({"data": "fashion-mnist:/no/such/folder"}, r"folder not found: /no/such/folder"),
        ({"data": "mnist"}, r"unknown data source 'mnist'"),
        ({"attacks": ["papr"]}, r"attacks\[0\].preset must be one of \[.*\], got 'papr' \(did you mean 'paper'\?\)"),
        ({"defenses": ["gcn"]}, r"did you mean 'gcm'"),
        ({"defenses": ["gcm", "gcm"]}, r"two defenses share the label 'gcm'"),
        ({"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
        ({"seed": "1"}, r"seed must be an integer"),
        ({"device": "gpu"}, r"unknown device 'gpu'"),
        ({"device": "cpu", "dtype": "float16"}, r"float16' needs a CUDA device"),
        ({"attacks": [{"attack": "pgd", "label": "clean"}]}, r"'clean' is reserved"),
        ({"attacks": [{"label": "x"}]}, r"attacks\[0\] needs 'preset'"),
    ],
)
def test_static_mistakes_are_one_clear_error(changes, message) -> None:
    with pytest.raises(GradconcealError, match=message):
        load_spec(base_spec(**changes))


def test_weights_that_are_a_named_pipe_are_named_not_read(tmp_path: Path) -> None:
    pipe = tmp_path / "w.safetensors"
    os.mkfifo(pipe)
    with pytest.raises(GradconcealError, match=r"models\[0\]\.weights: file .*w\.safetensors is a named pipe"):
        load_spec(base_spec(models=[{"name": "fmnist-cnn", "weights": str(pipe)}]))


def test_missing_required_entries_are_named() -> None:
    with pytest.raises(GradconcealError, match="spec needs a 'data' entry"):
        load_spec({"models": ["fmnist-cnn"], "attacks": ["paper"]})


def test_unreadable_spec_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(GradconcealError, match="spec file not found"):
        load_spec(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("models = [\n")
    with pytest.raises(GradconcealError, match=r"bad.toml is not valid TOML"):
        load_spec(bad)


@pytest.mark.parametrize(
    "attack, message",
    [
        ({"attack": "pgd", "norm": "linf", "eps": -0.5}, r"attacks\[0\].*eps must be > 0"),
        ({"attack": "pgd", "norm": "l2", "eps": 100.0}, r"exceeds the largest possible distance"),
        ({"attack": "pgd", "norm": "linf", "eps": "8/255", "step": 3}, r"attacks\[0\].*no setting 'step' \(did you mean 'steps'\?\)"),
        ({"attack": "pdg"}, r"attacks\[0\].*pdg"),
        ({"attack": "pgd", "norm": "l3"}, r"norm must be one of"),
        ({"attack": "pgd", "eot_samples": 4}, r"eot_samples needs view 'eot'"),
    ],
)
def test_attack_settings_are_checked_before_any_model_loads(attack, message) -> None:
    spec = load_spec(base_spec(attacks=[attack]))
    with pytest.raises(GradconcealError, match=message):
        plan_attacks(spec, FMNIST)


def test_presets_expand_with_unique_labels_and_overrides_apply() -> None:
    spec = load_spec(base_spec(attacks=["paper", "adaptive"]))
    plans = plan_attacks(spec, FMNIST)
    labels = [p.label for p in plans]
    assert len(labels) == len(set(labels))
    assert {p.group for p in plans if p.origin == "paper"} == {"white-box"}
    assert any(p.group == "adaptive" for p in plans if p.origin == "adaptive")
    first = plans[-1].label
    changed = load_spec(base_spec(attacks=["paper", {"preset": "adaptive", "overrides": {first: {"seed": 7}},
                                                     "reason": "testing"}]))
    plan = [p for p in plan_attacks(changed, FMNIST) if p.label == first][0]
    assert plan.settings["seed"] == 7 and plan.reason == "testing"


def test_bad_overrides_and_duplicate_presets_are_refused() -> None:
    spec = load_spec(base_spec(attacks=[{"preset": "paper", "overrides": {"NOPE": {"steps": 1}}}]))
    with pytest.raises(GradconcealError, match="preset 'paper' has no attack 'NOPE'"):
        plan_attacks(spec, FMNIST)
    with pytest.raises(GradconcealError, match="appear more than once"):
        plan_attacks(load_spec(base_spec(attacks=["paper", "paper"])), FMNIST)


def test_sweep_expands_to_one_attack_per_norm_view_and_eps() -> None:
    spec = load_spec(base_spec(sweep={"linf": ["2/255", "4/255"], "l2": [0.5], "views": ["plain", "bpda"]}))
    sweep = [p for p in plan_attacks(spec, FMNIST) if p.group == "sweep"]
    assert len(sweep) == (2 + 1) * 2
    assert sorted({(p.norm, p.view) for p in sweep}) == [("l2", "bpda"), ("l2", "plain"), ("linf", "bpda"), ("linf", "plain")]
    assert {round(p.eps * 255) for p in sweep if p.norm == "linf"} == {2, 4}


def test_sample_seeds_are_stable_distinct_and_63_bit() -> None:
    seeds = sample_seeds(0, range(1000))
    assert seeds == sample_seeds(0, range(1000))
    assert len(set(seeds)) == 1000
    assert all(0 <= s < 2**63 for s in seeds)
    assert seeds[5] == sample_seed(0, 5)
    assert sample_seed(1, 5) != sample_seed(0, 5)
    assert sample_seeds(0, [7, 3]) == [sample_seed(0, 7), sample_seed(0, 3)]
