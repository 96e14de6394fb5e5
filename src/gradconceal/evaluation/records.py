"""Typed per-sample records, the source of truth of every number in a report.

One record per (job, image): ``CleanRecord`` for the clean pass, ``AttackRecord`` for an attack (attacked, or
skipped because the clean prediction was wrong or, in a cascade, an earlier attack already broke the image).
``to_dict``/``record_from_dict`` are their one serialisation, a JSON object per line in ``records.jsonl``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, TypeVar, Union

from gradconceal.errors import GradconcealError

CLEAN_LABEL = "clean"  # reserved: the records of the clean pass use it as their attack label
STATUSES = ("attacked", "clean-incorrect", "cascade-skipped")

Key = Tuple[str, str, str, int]  # (model, defense, attack, index)


@dataclass(frozen=True)
class CleanRecord:
    """The clean prediction of one image on one (model, defence) row.

    ``accepted`` are the labels counted correct (one, or several for photos), ``primary`` the data's own label,
    ``label`` the label attacks push away from: the prediction when it is accepted, else ``primary``.
    """

    model: str
    defense: str
    index: int
    job: str
    pred: int
    correct: bool
    accepted: List[int]
    primary: int
    label: int
    attack: str = CLEAN_LABEL
    image: Optional[str] = None  # fingerprint of the image and its labels (None in folders made before it existed)

    @property
    def key(self) -> Key:
        return (self.model, self.defense, self.attack, self.index)

    def to_dict(self) -> Dict[str, Any]:
        """The JSON object of this record (``image`` left out when unknown, as in older folders)."""
        out = asdict(self)
        if out["image"] is None:
            del out["image"]
        return out


@dataclass(frozen=True)
class AttackRecord:
    """The outcome of one attack on one image of one row.

    ``correct`` is the defended model's decision on the adversarial image (False for a skipped image);
    ``fooled`` the attack's own success flag, ``norm`` the perturbation size in [0, 1] pixel units,
    ``*_8bit`` the decision after rounding the image to 8-bit pixels (None when not attacked); ``non_finite``
    that the model gave NaN or infinite logits, loss or gradients for this image during the attack or on its
    result (then ``correct`` is False: a broken computation is never robustness).

    On a defence with random layers the adversarial image is judged on ``draws`` fresh draws of them:
    ``correct_draws`` of them classify it correctly, ``correct`` (and ``correct_8bit``) hold only when all of
    them do (the worst case over draws), and ``adv_pred`` is the first wrong draw's prediction. A deterministic
    defence is judged once (``draws`` 1, ``correct_draws`` None).
    """

    model: str
    defense: str
    attack: str
    index: int
    job: str
    label: int
    clean_correct: bool
    status: str
    correct: bool
    adv_pred: Optional[int] = None
    fooled: Optional[bool] = None
    norm: Optional[float] = None
    grad_evals: int = 0
    forward_evals: int = 0
    adv_pred_8bit: Optional[int] = None
    correct_8bit: Optional[bool] = None
    image: Optional[str] = None  # fingerprint of the image and its labels (None in folders made before it existed)
    non_finite: bool = False  # NaN or inf logits, loss or gradient for this image: never counted as robust
    draws: int = 1  # draws of the defence's random layers the adversarial image was judged on
    correct_draws: Optional[int] = None  # how many of them classified it correctly (random defences only)

    @property
    def key(self) -> Key:
        return (self.model, self.defense, self.attack, self.index)

    @property
    def attacked(self) -> bool:
        """Whether the attack ran on this image (not skipped)."""
        return self.status == "attacked"

    @property
    def correct_share(self) -> float:
        """The share of draws that classify the adversarial image correctly (0 or 1 when judged once or skipped)."""
        if self.correct_draws is None or not self.attacked:
            return 1.0 if self.correct else 0.0
        return self.correct_draws / self.draws

    def to_dict(self) -> Dict[str, Any]:
        """The JSON object of this record (``image`` left out when unknown, as in older folders; ``draws`` and
        ``correct_draws`` only for a random defence)."""
        out = asdict(self)
        if out["image"] is None:
            del out["image"]
        if out["correct_draws"] is None and out["draws"] == 1:
            del out["draws"], out["correct_draws"]
        return out


Record = Union[CleanRecord, AttackRecord]


_R = TypeVar("_R", CleanRecord, AttackRecord)


def _build(cls: Type[_R], data: Mapping[str, Any]) -> _R:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise GradconcealError(f"record has unknown keys {unknown}: {dict(data)}")
    try:
        return cls(**dict(data))
    except TypeError as error:
        raise GradconcealError(f"record is incomplete ({error}): {dict(data)}") from None


def record_from_dict(data: Mapping[str, Any]) -> Record:
    """The record a JSON object describes: clean when its attack is ``clean``, else an attack record."""
    if not isinstance(data, Mapping) or "attack" not in data:
        raise GradconcealError(f"not a record: {data!r}")
    if data["attack"] == CLEAN_LABEL:
        return _build(CleanRecord, data)
    return _build(AttackRecord, data)


def record_key(record: Union[Record, Mapping[str, Any]]) -> Key:
    """The identity of a record: which model, defence, attack and sample it describes."""
    if isinstance(record, (CleanRecord, AttackRecord)):
        return record.key
    return (str(record["model"]), str(record["defense"]), str(record["attack"]), int(record["index"]))
