"""One dialect of settings checks: the spec, TrainConfig and the attacks refuse the same inputs with the same words."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict

import pytest
from torch import nn

from gradconceal import _validate as check
from gradconceal.attacks import PGD
from gradconceal.errors import GradconcealError
from gradconceal.evaluation.spec import load_spec
from gradconceal.training.config import TrainConfig, make_config


def spec_with(**changes: Any) -> Dict[str, Any]:
    spec: Dict[str, Any] = {"models": ["small:cnn"], "data": "digits", "attacks": ["paper"]}
    spec.update(changes)
    return spec


def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


def test_train_config_refuses_a_bool_for_an_integer() -> None:
    with pytest.raises(GradconcealError, match=r"^epochs must be an integer, got True$"):
        TrainConfig(epochs=True)


def test_spec_refuses_a_bool_for_an_integer() -> None:
    with pytest.raises(GradconcealError, match=r"^batch_size must be an integer, got True$"):
        load_spec(spec_with(batch_size=True))


# Each place names its own setting; the words after the name are the same everywhere.
INTEGER_SETTINGS: Dict[str, Callable[[Any], object]] = {
    "spec": lambda v: load_spec(spec_with(batch_size=v)),
    "train": lambda v: TrainConfig(batch_size=v),
    "attack": lambda v: PGD(tiny_model(), steps=v),
}
INTEGER_NAMES = {"spec": "batch_size", "train": "batch_size", "attack": "steps"}


@pytest.mark.parametrize("where", sorted(INTEGER_SETTINGS))
@pytest.mark.parametrize(
    "value, words",
    [
        (True, "must be an integer, got True"),
        (False, "must be an integer, got False"),
        (2.5, "must be an integer, got 2.5"),
        (4.0, "must be an integer, got 4.0"),
        ("3", "must be an integer, got '3'"),
        (None, "must be an integer, got None"),
        (math.nan, "must be an integer, got nan"),
        (math.inf, "must be an integer, got inf"),
        (0, "must be an integer >= 1, got 0"),
        (-3, "must be an integer >= 1, got -3"),
    ],
)
def test_integers_are_refused_alike(where: str, value: Any, words: str) -> None:
    with pytest.raises(GradconcealError) as caught:
        INTEGER_SETTINGS[where](value)
    assert str(caught.value) == f"{INTEGER_NAMES[where]} {words}"


# A positive number: TrainConfig's lr and the attack's alpha; the spec's numbers (a defence's w) have no range.
NUMBER_SETTINGS: Dict[str, Callable[[Any], object]] = {
    "spec": lambda v: load_spec(spec_with(defenses=[{"name": "gcm", "w": v}])),
    "train": lambda v: TrainConfig(lr=v),
    "attack": lambda v: PGD(tiny_model(), alpha=v),
}
NUMBER_NAMES = {"spec": "defenses[0].w", "train": "lr", "attack": "alpha"}


@pytest.mark.parametrize("where", sorted(NUMBER_SETTINGS))
@pytest.mark.parametrize(
    "value, words, ranged",
    [
        (True, "must be a number", False),
        (math.nan, "must be a finite number, got nan", False),
        (math.inf, "must be a finite number, got inf", False),
        (-math.inf, "must be a finite number, got -inf", False),
        (-1.0, "must be > 0, got -1.0", True),
        (0, "must be > 0, got 0", True),
    ],
)
def test_numbers_are_refused_alike(where: str, value: Any, words: str, ranged: bool) -> None:
    if ranged and where == "spec":
        pytest.skip("the spec's numbers of this kind have no range")
    with pytest.raises(GradconcealError) as caught:
        NUMBER_SETTINGS[where](value)
    assert str(caught.value).startswith(f"{NUMBER_NAMES[where]} {words}")


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: load_spec(spec_with(dtype="flaot32")), r"^dtype must be one of \[.*\], got 'flaot32' \(did you mean 'float32'\?\)$"),
        (lambda: TrainConfig(optimizer="adamx"), r"^optimizer must be one of \[.*\], got 'adamx' \(did you mean 'adamax'\?\)$"),
        (lambda: PGD(tiny_model(), loss="cee"), r"^loss must be one of \['ce', 'margin', 'dlr'\], got 'cee' \(did you mean 'ce'\?\)$"),
        (lambda: load_spec(spec_with(cascade=1)), r"^cascade must be True or False, got 1$"),
        (lambda: TrainConfig(fgsm=1), r"^fgsm must be True or False, got 1$"),
        (lambda: PGD(tiny_model(), random_start=1), r"^random_start must be True or False, got 1$"),
        (lambda: load_spec(spec_with(seeed=1)), r"^unknown key 'seeed' in spec \(did you mean 'seed'\?\)$"),
        (lambda: make_config(seeed=1), r"^unknown training setting 'seeed' \(did you mean 'seed'\?\)$"),
        (lambda: load_spec(spec_with(seed=-1)), r"^seed must be an integer >= 0, got -1$"),
        (lambda: TrainConfig(seed=-1), r"^seed must be an integer >= 0, got -1$"),
        (lambda: PGD(tiny_model(), seed=-1), r"^seed must be an integer >= 0, got -1$"),
    ],
)
def test_choices_bools_keys_and_seeds_read_alike(build: Callable[[], object], message: str) -> None:
    with pytest.raises(GradconcealError, match=message):
        build()


def test_choices_are_read_in_any_case_and_stored_lower_case() -> None:
    assert TrainConfig(optimizer=" AdamW ").optimizer == "adamw"
    assert load_spec(spec_with(dtype="Float64")).dtype == "float64"


@pytest.mark.parametrize("field", [f for f in dataclasses.fields(TrainConfig)], ids=lambda f: f.name)
def test_every_train_setting_is_type_checked(field: dataclasses.Field) -> None:
    """No setting of TrainConfig takes a value of the wrong type: a bool where a number or a name belongs, a number
    where a bool belongs."""
    wrong = 1 if isinstance(getattr(TrainConfig(), field.name), bool) else True
    with pytest.raises(GradconcealError, match=rf"^{field.name} "):
        TrainConfig(**{field.name: wrong})


def test_train_config_keeps_its_documented_messages() -> None:
    with pytest.raises(GradconcealError, match=r"^train_limit must be an integer >= 1 or None, got 0$"):
        TrainConfig(train_limit=0)
    with pytest.raises(GradconcealError, match=r"^label_smoothing must be in \[0, 1\], got 1.5$"):
        TrainConfig(label_smoothing=1.5)
    with pytest.raises(GradconcealError, match=r"^step_milestones are fractions of training in \(0, 1\), got \[0.5, 1.5\]$"):
        TrainConfig(step_milestones=(0.5, 1.5))
    assert TrainConfig(step_milestones=[0.25]).step_milestones == (0.25,)  # a list (from JSON) is kept as a tuple


def test_the_helpers_themselves() -> None:
    assert check.integer(3, "n", minimum=1) == 3 and isinstance(check.integer(3, "n"), int)
    assert check.number("8/255", "eps", fractions=True) == pytest.approx(8 / 255)
    with pytest.raises(GradconcealError, match=r"^eps must be a number, got '8/255'$"):
        check.number("8/255", "eps")  # only the attacks' budgets read fractions
    with pytest.raises(GradconcealError, match=r"^eps must be a number or a fraction like '8/255', got '8/0'$"):
        check.number("8/0", "eps", fractions=True)
    with pytest.raises(GradconcealError, match=r"^p must be in \(0, 1\], got 0$"):
        check.number(0, "p", minimum=0, maximum=1, above=True)
    with pytest.raises(GradconcealError, match=r"^n must be an integer or None, got 'x'$"):
        check.optional_integer("x", "n", minimum=1)
    assert check.optional_integer(None, "n", minimum=1) is None
    with pytest.raises(GradconcealError, match=r"^title must be a non-empty string, got ' '$"):
        check.text(" ", "title")
    assert check.text(" a ", "title") == "a"
    assert check.resolve_path("~no-such-user-here/val", None) == "~no-such-user-here/val"  # no home: kept as written
