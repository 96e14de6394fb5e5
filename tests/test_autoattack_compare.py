"""``benchmarks/autoattack_compare.py`` on 4 images with both sides' step and query counts cut down (the real
settings are measured by the benchmark itself, docs/attacks.md): the chunk files' schema, resumption (a second
run computes nothing, a larger ``--n`` only the new chunk), the refusal of a changed configuration, the second
AutoAttack seed on the images only AutoAttack breaks, and the summary table."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, List

import pytest
import torch

from gradconceal.errors import GradconcealError

pytest.importorskip("pyautoattack")

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "autoattack_compare.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("autoattack_compare_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


SHORT = {"steps": 2, "n_queries": 10, "binary_search_steps": 1, "n_target_classes": 2}


@pytest.fixture()
def compare(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The script with every attack of both sides shortened to a few steps/queries, counting the chunks run."""
    module = _load()
    real_plans, real_autoattack, real_chunk = module.preset_plans, module.make_autoattack, module.run_chunk

    def short_plans(image_size: Any) -> List[Any]:
        return [dataclasses.replace(plan, settings={k: SHORT.get(k, v) for k, v in plan.settings.items()})
                for plan in real_plans(image_size)]

    def short_autoattack(view: Any, **kwargs: Any) -> Any:
        autoattack = real_autoattack(view, **kwargs)
        for attack in (autoattack.apgd, autoattack.apgd_targeted, autoattack.fab):
            attack.n_iter = 2
        autoattack.apgd_targeted.n_target_classes = autoattack.fab.n_target_classes = 2
        autoattack.square.n_queries = 10
        return autoattack

    chunks_run: List[int] = []

    def counted_chunk(settings: Any, chunk: int, *args: Any) -> Any:
        chunks_run.append(chunk)
        return real_chunk(settings, chunk, *args)

    monkeypatch.setattr(module, "preset_plans", short_plans)
    monkeypatch.setattr(module, "make_autoattack", short_autoattack)
    monkeypatch.setattr(module, "run_chunk", counted_chunk)
    module.chunks_run = chunks_run
    torch.set_num_threads(1)
    return module


def _argv(out: Path, *extra: str) -> List[str]:
    return ["--model", "fmnist-cnn", "--defense", "gcm", "--norm", "linf", "--chunk", "2", "--out", str(out), *extra]


def test_chunks_schema_resume_and_summary(compare: Any, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cnn-gcm-linf"
    compare.main(_argv(out, "--n", "4"))
    assert compare.chunks_run == [0, 1]
    config = json.loads((out / "config.json").read_text())
    assert config["eps"] == pytest.approx(8 / 255) and config["rest"] is True
    assert [p["label"] for p in config["ours"]] == ["AA APGD-CE-Linf", "AA APGD-T-Linf", "AA FAB-T-Linf",
                                                    "AA Square-Linf"]
    for chunk in (0, 1):
        record = json.loads((out / f"chunk-000{chunk}.json").read_text())
        assert set(compare.CHUNK_KEYS) == set(record)
        assert (record["chunk"], record["start"], record["stop"]) == (chunk, 2 * chunk, 2 * chunk + 2)
        assert [image["index"] for image in record["images"]] == [2 * chunk, 2 * chunk + 1]
        seconds = record["seconds"]
        assert seconds["autoattack"] > 0 and seconds["ours"] > 0 and seconds["rest"] > 0
        assert set(record["cpu_seconds"]) == set(seconds) and record["cpu_seconds"]["ours"] > 0
        assert seconds["ours"] == pytest.approx(sum(seconds["ours_by_attack"].values()), abs=0.01)
        assert set(seconds["autoattack_by_attack"]) <= set(compare.AUTOATTACK_ORDER)
        assert next(iter(seconds["ours_by_attack"])) == "AA APGD-CE-Linf"
        assert "BPDA C&W-L2" in seconds["rest_by_attack"]
        assert set(record["rest_broken"]) == set(seconds["rest_by_attack"])
        assert record["outside_budget"] == {"autoattack": 0, "ours": 0}
        for image in record["images"]:
            assert set(compare.IMAGE_KEYS) <= set(image)
            if image["clean_correct"]:
                assert isinstance(image["robust_autoattack"], bool) and isinstance(image["robust_ours"], bool)
                assert (image["autoattack_broken_by"] is None) == image["robust_autoattack"]
                assert (image["ours_broken_by"] is None) == image["robust_ours"]
                assert image["ours_broken_by"] in (None, *seconds["ours_by_attack"])
            else:
                assert image["robust_autoattack"] is None and image["robust_ours"] is None
    saved = {p.name: p.read_text() for p in out.glob("chunk-*.json")}

    compare.main(_argv(out, "--n", "4"))  # everything saved: nothing computed, nothing rewritten
    assert compare.chunks_run == [0, 1]
    assert {p.name: p.read_text() for p in out.glob("chunk-*.json")} == saved
    compare.main(_argv(out, "--n", "6"))  # a larger --n computes only the new chunk
    assert compare.chunks_run == [0, 1, 2]

    with pytest.raises(GradconcealError, match="another configuration"):
        compare.main(_argv(out, "--n", "4", "--seed", "5"))
    with pytest.raises(GradconcealError, match="multiple of --chunk"):
        compare.main(_argv(out, "--n", "5"))

    capsys.readouterr()
    compare.main(["--summary", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "| fmnist-cnn | gcm | Linf 8/255 | 6 |" in printed
    assert ("OMP_NUM_THREADS=1 python benchmarks/autoattack_compare.py --model fmnist-cnn --defense gcm --norm linf "
            "--n 6 --chunk 2") in printed


def test_second_seed_on_images_only_autoattack_breaks(compare: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Ours made to break nothing: every image AutoAttack breaks gets the second AutoAttack seed's verdict."""
    monkeypatch.setattr(compare, "run_ours", lambda plans, defended, threat, images, labels, seeds: (
        [None] * len(labels), compare.Stopwatch(), [None] * len(labels), 0))
    out = tmp_path / "cnn-none-l2"
    compare.main(["--model", "fmnist-cnn", "--defense", "none", "--norm", "l2", "--n", "4", "--chunk", "4",
                  "--out", str(out)])
    record = json.loads((out / "chunk-0000.json").read_text())
    assert record["rest_broken"] is None and "rest" not in record["seconds"]  # the rest of the preset: Linf only
    broken = [image for image in record["images"] if image["clean_correct"] and not image["robust_autoattack"]]
    assert broken, "AutoAttack should break some of these 4 images even shortened"
    for image in record["images"]:
        if image in broken:
            assert isinstance(image["check_robust_autoattack"], bool)
            assert (image["check_broken_by"] is None) == image["check_robust_autoattack"]
        else:
            assert image["check_robust_autoattack"] is None


def test_a_changed_rest_of_the_preset_is_timed_again_and_nothing_else(compare: Any, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Saved chunks keep both sides' verdicts when only the rest of the preset changed (it decides no image of
    either side): its time and broken images are measured again, once; a changed ensemble is still refused."""
    out = tmp_path / "cnn-gcm-linf"
    compare.main(_argv(out, "--n", "4"))
    before = {p.name: json.loads(p.read_text()) for p in sorted(out.glob("chunk-*.json"))}
    for record in before.values():  # chunks saved before chunks carried the digest
        del record["rest_digest"]
        (out / f"chunk-{record['chunk']:04d}.json").write_text(json.dumps(record))
    shortened = compare.preset_plans

    def other_rest(image_size: Any) -> List[Any]:
        return [dataclasses.replace(plan, settings={**plan.settings, "restarts": 3})
                if plan.label == "BPDA PGD-L1 (sparse)" else plan for plan in shortened(image_size)]

    monkeypatch.setattr(compare, "preset_plans", other_rest)
    compare.main(_argv(out, "--n", "4"))
    assert compare.chunks_run == [0, 1]  # no chunk attacked again
    config = json.loads((out / "config.json").read_text())
    l1 = next(p for p in config["rest_attacks"] if p["label"] == "BPDA PGD-L1 (sparse)")
    assert l1["settings"]["restarts"] == 3
    for name, old in before.items():
        new = json.loads((out / name).read_text())
        assert new["images"] == old["images"]
        assert new["seconds"]["autoattack"] == old["seconds"]["autoattack"]
        assert new["seconds"]["ours"] == old["seconds"]["ours"]
        assert new["seconds"]["rest"] > 0 and set(new["rest_broken"]) == set(new["seconds"]["rest_by_attack"])
        assert new["rest_digest"] == compare.rest_digest(config["rest_attacks"]) != compare.rest_digest(
            [{**p, "settings": {**p["settings"], "restarts": 2}} if p["label"] == "BPDA PGD-L1 (sparse)" else p
             for p in config["rest_attacks"]])
    saved = {p.name: p.read_text() for p in out.glob("chunk-*.json")}
    compare.main(_argv(out, "--n", "4"))  # measured once: a rerun changes nothing
    assert {p.name: p.read_text() for p in out.glob("chunk-*.json")} == saved

    monkeypatch.setattr(compare, "preset_plans", lambda image_size: [
        dataclasses.replace(plan, settings={**plan.settings, "steps": 3}) if plan.label == "AA APGD-CE-Linf" else plan
        for plan in other_rest(image_size)])
    with pytest.raises(GradconcealError, match=r"another configuration \(differs in \['ours'\]\)"):
        compare.main(_argv(out, "--n", "4"))
