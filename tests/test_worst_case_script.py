"""docs/results/worst_case.py: the per-image worst case over a chosen set of attacks and images.

Its numbers back sentences of docs/results/README.md, so they must be the reports' own: with the presets'
attacks (or every attack) chosen it gives the committed results.json's worst-case columns, row for row.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
FOLDER = RESULTS / "fashion-mnist"  # a current folder with explicit (non-preset) attacks and a random defence


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("worst_case_script", RESULTS / "worst_case.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return _script()


@pytest.fixture(scope="module")
def committed() -> dict:
    return {(r["model"], r["defense"]): r for r in json.loads((FOLDER / "results.json").read_text())["rows"]}


@pytest.mark.parametrize("presets, column", [(True, "worst_case_presets"), (False, "worst_case_all")])
def test_same_worst_case_as_the_report(script: ModuleType, committed: dict, presets: bool, column: str) -> None:
    _, _, rows = script.worst_cases(FOLDER, presets=presets)
    assert {key for key, _, _ in rows} == set(committed)
    for key, ar, expected in rows:
        reported = committed[key][column]["ar"]
        assert (ar.k, ar.n) == (reported["k"], reported["n"]), key
        if key[1] == "challenge" and not presets:  # the random defence's expectation over draws
            assert expected is not None
            assert expected.value == pytest.approx(committed[key]["worst_case_all_expected"]["ar"]["value"])
        elif key[1] != "challenge":
            assert expected is None


def test_fewer_attacks_never_lower_the_worst_case(script: ModuleType) -> None:
    _, counted, every = script.worst_cases(FOLDER, presets=True)
    attacks, _, without_aa = script.worst_cases(FOLDER, presets=True, exclude=["AA*"], images=counted)
    assert attacks and not any(plan.label.startswith("AA") for plan in attacks)
    assert any(ar_some.k > ar_all.k for (_, ar_all, _), (_, ar_some, _) in zip(every, without_aa))
    for (key, ar_all, _), (key2, ar_some, _) in zip(every, without_aa):
        assert key == key2 and ar_some.n == ar_all.n and ar_some.k >= ar_all.k
    _, first, rows = script.worst_cases(FOLDER, presets=True, images=10)
    assert first == 10 < counted and all(ar.n <= 10 for _, ar, _ in rows)


def test_bad_choices_say_why(script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from gradconceal.errors import GradconcealError

    with pytest.raises(GradconcealError, match="no attack left"):
        script.worst_cases(FOLDER, exclude=["*"])
    with pytest.raises(GradconcealError, match="--images must be between 1 and"):
        script.worst_cases(FOLDER, images=0)
    with pytest.raises(GradconcealError, match="records.jsonl.gz not found"):
        script.load(RESULTS / "no-such-folder")
    with pytest.raises(SystemExit, match="^worst_case.py: cannot read results file .*no-such-folder"):
        script.main([str(RESULTS / "no-such-folder")])
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "results.json").write_bytes((FOLDER / "results.json").read_bytes())
    (corrupt / "records.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(SystemExit, match="^worst_case.py: cannot read the records of .*records.jsonl.gz"):
        script.main([str(corrupt)])
