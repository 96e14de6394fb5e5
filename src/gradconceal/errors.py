"""The one error type users see: a clear message about their input, never a traceback."""

from __future__ import annotations

import difflib
from typing import Iterable


class GradconcealError(ValueError):
    """A problem with the user's input (argument, file, spec); the CLI prints it as one line."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest valid choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
