"""What an audit returns: one structured result per check, and the report that turns them into a verdict."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from gradconceal.folders import read_json_field, require_replaceable, write_atomic
from gradconceal.masking.table import format_markdown, format_table

AUDIT_KIND = "gradconceal-audit/"  # the ``format`` field of an audit.json starts with it
AUDIT_FORMAT = AUDIT_KIND + "1"

NO_MASKING = "no masking detected"
SUSPECTED = "gradient masking suspected"
CONFIRMED = "gradient masking confirmed"
VERDICTS = (NO_MASKING, SUSPECTED, CONFIRMED)

PASS, FLAG, SKIP, INFO = "pass", "flag", "skip", "info"
STATUSES = (PASS, FLAG, SKIP, INFO)

# One attack "beats" another when it wins on at least this many images and this share of those at stake:
# one image can flip by chance (a random draw, a borderline margin); two and a tenth rarely do.
MIN_EXTRA_IMAGES = 2
MIN_EXTRA_SHARE = 0.1

# What a flag of a check says: an attack that should not win did win (confirms), or a warning sign (suspects).
CONFIRMS, SUSPECTS = "confirms", "suspects"


@dataclass
class CheckResult:
    """One audit check: what was measured, the rule it was held to, and what the outcome means."""

    name: str
    title: str
    status: str
    measured: Dict[str, Any]
    summary: str
    threshold: str
    meaning: str
    severity: str = SUSPECTS
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.severity not in (CONFIRMS, SUSPECTS):
            raise ValueError(f"severity must be {CONFIRMS!r} or {SUSPECTS!r}, got {self.severity!r}")

    @property
    def flagged(self) -> bool:
        """True when the check saw a sign of gradient masking."""
        return self.status == FLAG

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "severity": self.severity,
            "measured": _jsonable(self.measured),
            "summary": self.summary,
            "threshold": self.threshold,
            "meaning": self.meaning,
            "seconds": round(self.seconds, 3),
        }


def significant(extra: int, base: int) -> bool:
    """Whether ``extra`` images out of ``base`` at stake are more than chance: >= max(2, 10% of base)."""
    return base > 0 and extra >= max(MIN_EXTRA_IMAGES, math.ceil(MIN_EXTRA_SHARE * base))


def skipped(name: str, title: str, reason: str, threshold: str = "-", severity: str = SUSPECTS) -> CheckResult:
    """A check that could not run on this model (the reason says why), so it neither passes nor flags."""
    return CheckResult(name, title, SKIP, {}, "-", threshold, reason, severity=severity)


def decide_verdict(checks: List[CheckResult]) -> str:
    """Confirmed when an attack that should not win did; suspected on any other flag; else no masking."""
    flagged = [c for c in checks if c.flagged]
    if any(c.severity == CONFIRMS for c in flagged):
        return CONFIRMED
    return SUSPECTED if flagged else NO_MASKING


@dataclass
class AuditReport:
    """All checks of one audit, the verdict they add up to, the cause found and the remedy to use."""

    checks: List[CheckResult]
    verdict: str
    model: str
    defense: str
    data: str
    images: int
    quick: bool
    cause: str = ""
    remedy: str = ""
    layer: Optional[str] = None
    settings: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    @property
    def flagged(self) -> List[CheckResult]:
        """The checks that saw a sign of masking."""
        return [c for c in self.checks if c.flagged]

    def check(self, name: str) -> CheckResult:
        """The result of the check called ``name`` (KeyError if the audit did not run it)."""
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(f"no check named {name!r}; checks: {[c.name for c in self.checks]}")

    def verdict_line(self) -> str:
        """One line: the verdict, then the cause and the remedy when masking was seen."""
        line = f"verdict: {self.verdict}"
        if self.verdict != NO_MASKING:
            if self.cause:
                line += f". Cause: {self.cause}"
            if self.remedy:
                line += f". Remedy: {self.remedy}"
        return line

    def table(self) -> str:
        """The plain-text table: check, measured numbers, threshold, result, meaning."""
        return format_table(self)

    def markdown(self) -> str:
        """The table as Markdown, with the verdict line."""
        return format_markdown(self)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "format": AUDIT_FORMAT,
            "verdict": self.verdict,
            "cause": self.cause,
            "remedy": self.remedy,
            "layer": self.layer,
            "model": self.model,
            "defense": self.defense,
            "data": self.data,
            "images": self.images,
            "quick": self.quick,
            "seconds": round(self.seconds, 2),
            "settings": _jsonable(self.settings),
            "flagged": [c.name for c in self.flagged],
            "checks": [c.to_dict() for c in self.checks],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AuditReport":
        """Rebuild a report from ``to_dict()`` output (an ``audit.json``), e.g. to print its table again."""
        fields = ("name", "title", "status", "measured", "summary", "threshold", "meaning", "severity", "seconds")
        checks = [CheckResult(**{k: c[k] for k in fields if k in c}) for c in data["checks"]]
        return cls(
            checks=checks, verdict=data["verdict"], model=data["model"], defense=data["defense"], data=data["data"],
            images=data["images"], quick=data["quick"], cause=data.get("cause", ""), remedy=data.get("remedy", ""),
            layer=data.get("layer"), settings=dict(data.get("settings", {})), seconds=float(data.get("seconds", 0.0)),
        )

    def save(self, out_dir: Union[str, Path]) -> Path:
        """Write ``out_dir/audit.json`` atomically (``folders.atomic_path``) and return its path.

        An ``audit.json`` already there is replaced only when it is an audit gradconceal wrote (format
        ``gradconceal-audit/...``); the user's own file of that name raises ``GradconcealError``.
        """
        path = audit_path(out_dir)
        write_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def __str__(self) -> str:
        return self.table() + "\n" + self.verdict_line()


def audit_path(out_dir: Union[str, Path]) -> Path:
    """``out_dir/audit.json``, checked to be free or an earlier gradconceal audit (``folders.require_replaceable``):
    call it before a long audit so that a refusal comes first, not after the work."""
    return require_replaceable(Path(out_dir) / "audit.json",
                               lambda path: str(read_json_field(path, "format")).startswith(AUDIT_KIND),
                               "an audit report")


def _jsonable(value: Any) -> Any:
    """Numbers, strings, lists and dicts as JSON has them (non-finite floats become strings)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return str(value)
