"""The small set of checks every settings object uses: the spec, ``TrainConfig``, the CLI and the attacks.

One dialect for all of them. Each check names the argument and the value it refused and raises
``GradconcealError``::

    epochs must be an integer, got True
    batch_size must be an integer >= 1, got 0
    lr must be a finite number, got nan
    pgd_eps must be in (0, 1] (an Linf budget on [0, 1] pixels), got 0.0
    optimizer must be one of ['adamw', 'adamax', 'sgd'], got 'adamx' (did you mean 'adamax'?)
    unknown key 'seeed' in spec (did you mean 'seed'?)

A bool is never an integer or a number (``True`` is refused where a count or a budget is expected), a
number is finite, and a string is checked for what it says rather than for being truthy.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from gradconceal.errors import GradconcealError, suggest

__all__ = [
    "boolean",
    "check_keys",
    "check_range",
    "choice",
    "integer",
    "number",
    "optional_integer",
    "resolve_path",
    "text",
]

Bound = Union[int, float]


def _show(bound: Bound) -> str:
    """A range bound as people write it: ``0``, ``1``, ``0.5``, ``1e+20``."""
    if isinstance(bound, numbers.Integral):
        return str(int(bound))
    return f"{float(bound):g}"


def _requirement(minimum: Optional[Bound], maximum: Optional[Bound], above: bool, below: bool) -> str:
    """'>= 1', '> 0', '<= 1', 'in (0, 1]', ... for the given bounds."""
    if minimum is not None and maximum is not None:
        return f"in {'(' if above else '['}{_show(minimum)}, {_show(maximum)}{')' if below else ']'}"
    if minimum is not None:
        return f"{'>' if above else '>='} {_show(minimum)}"
    assert maximum is not None  # check_range asks only for a bound the value crossed
    return f"{'<' if below else '<='} {_show(maximum)}"


def check_range(
    value: Bound,
    name: str,
    *,
    minimum: Optional[Bound] = None,
    maximum: Optional[Bound] = None,
    above: bool = False,
    below: bool = False,
    shown: Any = None,
    what: str = "",
    detail: str = "",
) -> None:
    """Raise unless ``minimum <= value <= maximum`` (``above``/``below``: strict bounds).

    The message reads ``{name} must be {what }{range}{detail}, got {shown!r}`` (``shown``: the value as the user
    gave it, ``value`` by default), e.g. ``eps must be > 0 for norm 'l2', got -0.5``.
    """
    too_low = minimum is not None and (value <= minimum if above else value < minimum)
    too_high = maximum is not None and (value >= maximum if below else value > maximum)
    if too_low or too_high:
        given = value if shown is None else shown
        prefix = f"{what} " if what else ""
        raise GradconcealError(
            f"{name} must be {prefix}{_requirement(minimum, maximum, above, below)}{detail}, got {given!r}"
        )


def integer(
    value: Any,
    name: str,
    *,
    minimum: Optional[int] = None,
    maximum: Optional[int] = None,
    detail: str = "",
) -> int:
    """``value`` as an int within the bounds; bools, floats (even ``5.0``) and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise GradconcealError(f"{name} must be an integer{detail}, got {value!r}")
    result = int(value)
    check_range(result, name, minimum=minimum, maximum=maximum, shown=value, what="an integer", detail=detail)
    return result


def optional_integer(value: Any, name: str, *, minimum: Optional[int] = None) -> Optional[int]:
    """``None``, or ``value`` as an int >= ``minimum`` (the message says that None is allowed too)."""
    if value is None:
        return None
    return integer(value, name, minimum=minimum, detail=" or None")


def _parse_fraction(value: str, name: str) -> float:
    """``'8/255'``, ``'0.03'``, ``'1e-3'`` -> a float (not yet checked for being finite)."""
    text_value = value.strip()
    try:
        if "/" in text_value:
            numerator, denominator = text_value.split("/", 1)
            return float(numerator) / float(denominator)
        return float(text_value)
    except (ValueError, ZeroDivisionError):
        raise GradconcealError(f"{name} must be a number or a fraction like '8/255', got {value!r}") from None


def number(
    value: Any,
    name: str,
    *,
    minimum: Optional[Bound] = None,
    maximum: Optional[Bound] = None,
    above: bool = False,
    below: bool = False,
    fractions: bool = False,
    detail: str = "",
) -> float:
    """``value`` as a finite float within the bounds; bools are refused, so are NaN and infinities.

    ``fractions=True`` (the attacks' budgets) also reads strings such as ``'8/255'`` and anything ``float()``
    takes (a one-element tensor); otherwise only real numbers are numbers.
    """
    if isinstance(value, bool):
        kind = "a number or a fraction like '8/255'" if fractions else "a number"
        raise GradconcealError(f"{name} must be {kind}, got {value!r}")
    if isinstance(value, numbers.Real):
        result = float(value)
    elif fractions and isinstance(value, str):
        result = _parse_fraction(value, name)
    elif fractions:
        try:
            result = float(value)
        except (TypeError, ValueError, RuntimeError):
            raise GradconcealError(f"{name} must be a number or a fraction like '8/255', got {value!r}") from None
    else:
        raise GradconcealError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(result):
        raise GradconcealError(f"{name} must be a finite number, got {value!r}")
    check_range(result, name, minimum=minimum, maximum=maximum, above=above, below=below, shown=value, detail=detail)
    return result


def boolean(value: Any, name: str) -> bool:
    """``value`` if it is a bool: no truthy stand-ins such as ``1`` or ``'false'``."""
    if not isinstance(value, bool):
        raise GradconcealError(f"{name} must be True or False, got {value!r}")
    return value


def text(value: Any, name: str) -> str:
    """A non-empty string, with surrounding white space removed."""
    if not isinstance(value, str) or not value.strip():
        raise GradconcealError(f"{name} must be a non-empty string, got {value!r}")
    return value.strip()


def choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """One of ``choices`` (lower-case names), spelled in any case and with spaces around it; 'did you mean'."""
    key = value.strip().lower() if isinstance(value, str) else None
    if key is None or key not in choices:
        near = suggest(key if key is not None else str(value), choices)
        raise GradconcealError(f"{name} must be one of {list(choices)}, got {value!r}{near}")
    return key


def check_keys(keys: Iterable[str], allowed: Sequence[str], where: str = "", *, what: str = "key") -> None:
    """Raise for the first of ``keys`` not in ``allowed``: ``unknown key 'x' in spec (did you mean 'y'?)``."""
    for key in keys:
        if key not in allowed:
            place = f" in {where}" if where else ""
            raise GradconcealError(f"unknown {what} {key!r}{place}{suggest(str(key), allowed)}")


def resolve_path(path: Union[str, Path], base_dir: Optional[Path]) -> str:
    """``~`` expanded and, when ``base_dir`` is given, a relative path taken from it (made absolute).

    An absolute path is not resolved (its symlinks and '..' stay), so that strings derived from it stay the same.
    """
    try:
        expanded = Path(path).expanduser()
    except RuntimeError:  # '~user' of a user without a home folder: a name like any other
        expanded = Path(path)
    if base_dir is None or expanded.is_absolute():
        return str(expanded)
    return str((base_dir / expanded).resolve())
