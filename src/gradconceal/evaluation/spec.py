"""The evaluation spec: what to evaluate (models, defences, data, attacks, seed), parsed and validated up front.

A spec is a TOML or JSON file (or a dict) with a ``format_version``. Every mistake is found before any model
loads and reported as one ``GradconcealError`` naming the key and the value, with the nearest valid key
suggested for typos. ``EvalSpec.to_dict()`` is the canonical form embedded in ``results.json``.

Example (TOML)::

    format_version = 1
    models = ["fmnist-cnn"]
    defenses = ["none", "gcm"]
    attacks = ["paper", "adaptive"]
    seed = 0
    [data]
    source = "fashion-mnist"
    n = 200
"""

from __future__ import annotations

import copy
import fnmatch
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from gradconceal import _validate
from gradconceal.attacks.plan import VIEWS, jsonable
from gradconceal.data import sources as data_sources
from gradconceal.defenses.build import (
    CONCEALING_DEFENSES,
    DEFENSE_NAMES,
    RANDOM_DEFENSES,
    build_defense,
    parse_defense_string,
)
from gradconceal.errors import GradconcealError
from gradconceal.files import require_file
from gradconceal.evaluation.records import CLEAN_LABEL
from gradconceal.models import names as model_names
from gradconceal.models.zoo import check_model

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

FORMAT_VERSION = 1

DEFAULT_DEFENSE_LABELS = {"none": "vanilla", "gcm": "gcm", "resize-pad": "resize-pad", "challenge": "challenge",
                          "bit-depth": "bit-depth"}
DTYPES = ("float32", "float64", "bfloat16", "float16")

_TOP_KEYS = (
    "format_version", "title", "models", "defenses", "data", "attacks", "sweep", "batch_size", "device",
    "dtype", "seed", "cascade", "keep_adversarial", "gallery", "audit", "draws", "compile",
)
_MODEL_KEYS = ("name", "label", "weights", "pretrained")
_DEFENSE_KEYS = ("name", "label", "w", "epsilon", "min_size", "bits")
_DATA_KEYS = ("source", "n", "split", "workers")
_PRESET_ENTRY_KEYS = ("preset", "overrides", "reason", "keep", "n")
_ATTACK_ENTRY_KEYS = ("label", "attack", "view", "keep", "reason", "n")
DEFAULT_DRAWS = 20  # draws of a random defence each adversarial image is judged on
# ``compile``: false (eager), true (torch.compile's "default" mode) or one of its modes
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_SWEEP_KEYS = ("attack", "views", "linf", "l2", "l1", "settings")

PathLike = Union[str, Path]


# -- seeds ----------------------------------------------------------------------------------------------
_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    """One step of the SplitMix64 mixer: nearby inputs give unrelated 64-bit outputs."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index`` under spec seed ``seed`` (63-bit): the same whatever batch or process."""
    return _splitmix64(_splitmix64(int(seed) & _MASK64) ^ (int(index) & _MASK64)) >> 1


def sample_seeds(seed: int, indices: Iterable[int]) -> List[int]:
    """``sample_seed`` for each index, in order."""
    return [sample_seed(seed, i) for i in indices]


def label_matches(label: str, pattern: str) -> bool:
    """Whether an attack label is ``pattern`` itself or matches it as a shell-style pattern ('AA*'); the exact
    test comes first, so a label holding '[' is still found by its own name."""
    return label == pattern or fnmatch.fnmatchcase(label, pattern)


# -- entries --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelEntry:
    """A model to evaluate: a zoo name or checkpoint path, optional weights, and the label shown in tables."""

    name: str
    label: str
    weights: Optional[str] = None
    pretrained: bool = True

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name, "label": self.label, "pretrained": self.pretrained}
        if self.weights is not None:
            out["weights"] = self.weights
        return out


@dataclass(frozen=True)
class DefenseEntry:
    """A defence in front of every model: a ``gradconceal.defenses.build`` name with its settings and a label."""

    kind: str
    label: str
    w: float = 1e20
    epsilon: float = 1e-8
    min_size: Optional[int] = None  # resize-pad's smallest side; None: 218/224 of the input side
    bits: int = 4  # bit-depth's levels per channel, as 2**bits

    @property
    def random(self) -> bool:
        """Whether the defence draws randomness on each forward (the EOT views apply only then)."""
        return self.kind in RANDOM_DEFENSES

    @property
    def conceals(self) -> bool:
        """Whether the defence has a gradient-concealment layer (the BPDA views act on it)."""
        return self.kind in CONCEALING_DEFENSES

    def settings(self) -> Dict[str, Any]:
        """The builder's settings of this defence (``build_defense``)."""
        out: Dict[str, Any] = {}
        if self.conceals:
            out.update(w=self.w, epsilon=self.epsilon)
        if self.random and self.min_size is not None:
            out["min_size"] = self.min_size
        if self.kind == "bit-depth":
            out["bits"] = self.bits
        return out

    def layers(self, image_size: Sequence[int]) -> List[Any]:
        """The defence's input layers for images of ``image_size`` (C, H, W), from the one builder."""
        return build_defense(self.kind, self.settings(), image_size, label=self.label)

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.kind, "label": self.label, **self.settings()}


@dataclass(frozen=True)
class DataEntry:
    """Where the images come from (a ``gradconceal.data`` source string), how many, which split."""

    source: str
    n: Optional[int] = None
    split: str = "test"
    # DataLoader worker processes that decode an image folder once before the attacks (None: decode in this
    # process when the images fit in PRELOAD_LIMIT_BYTES, else on every access); never changes a number
    workers: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"source": self.source, "split": self.split}
        if self.n is not None:
            out["n"] = self.n
        if self.workers is not None:
            out["workers"] = self.workers
        return out


@dataclass(frozen=True)
class AttackEntry:
    """One ``attacks`` item: a preset (with optional per-label overrides) or one explicit attack."""

    preset: Optional[str] = None
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    label: Optional[str] = None
    attack: Optional[str] = None
    view: str = "plain"
    settings: Mapping[str, Any] = field(default_factory=dict)
    keep: bool = False
    reason: Optional[str] = None
    # images attacked (the data's first n): one count for the entry, or, for a preset, counts by attack label
    # (a label or a shell-style pattern such as 'AA *'; attacks no key matches run on every image)
    n: Union[None, int, Mapping[str, int]] = None

    def images_for(self, label: str) -> Optional[int]:
        """The image count of the attack ``label`` of this entry (None: every image)."""
        if self.n is None or isinstance(self.n, int):
            return self.n
        for pattern, count in self.n.items():
            if label_matches(label, pattern):
                return count
        return None

    def to_dict(self) -> Dict[str, Any]:
        if self.preset is not None:
            out: Dict[str, Any] = {"preset": self.preset}
            if self.overrides:
                out["overrides"] = copy.deepcopy(dict(self.overrides))
        else:
            out = {"label": self.label, "attack": self.attack, "view": self.view, **copy.deepcopy(dict(self.settings))}
        if self.n is not None:
            out["n"] = self.n if isinstance(self.n, int) else dict(self.n)
        if self.keep:
            out["keep"] = True
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class SweepEntry:
    """Robust accuracy vs eps: one attack run at each listed eps of each norm, under each view."""

    attack: str = "pgd"
    views: Tuple[str, ...] = ("plain", "bpda")
    eps: Mapping[str, Tuple[Any, ...]] = field(default_factory=dict)  # norm -> eps values as given
    settings: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"attack": self.attack, "views": list(self.views)}
        out.update({norm: list(values) for norm, values in self.eps.items()})
        if self.settings:
            out["settings"] = copy.deepcopy(dict(self.settings))
        return out


@dataclass
class EvalSpec:
    """A validated evaluation spec (use ``load_spec`` to make one)."""

    models: List[ModelEntry]
    defenses: List[DefenseEntry]
    data: DataEntry
    attacks: List[AttackEntry]
    sweep: Optional[SweepEntry] = None
    batch_size: int = 32
    device: str = "auto"
    dtype: str = "float32"
    seed: int = 0
    cascade: bool = False
    keep_adversarial: bool = False
    gallery: int = 4
    audit: bool = True
    draws: int = DEFAULT_DRAWS
    # torch.compile mode of the models' base networks, None for eager: a speed setting like batch_size, not part
    # of any job key (the records' decisions are the eager model's; see docs/usage.md)
    compile: Optional[str] = None
    title: str = "gradconceal evaluation"
    format_version: int = FORMAT_VERSION
    base_dir: Path = field(default_factory=Path.cwd, compare=False, repr=False)

    def to_dict(self) -> Dict[str, Any]:
        """The canonical spec (JSON-ready); ``load_spec`` of it gives the same spec back."""
        out: Dict[str, Any] = {
            "format_version": self.format_version,
            "title": self.title,
            "models": [m.to_dict() for m in self.models],
            "defenses": [d.to_dict() for d in self.defenses],
            "data": self.data.to_dict(),
            "attacks": [a.to_dict() for a in self.attacks],
            "batch_size": self.batch_size,
            "device": self.device,
            "dtype": self.dtype,
            "seed": self.seed,
            "cascade": self.cascade,
            "keep_adversarial": self.keep_adversarial,
            "gallery": self.gallery,
            "audit": self.audit,
            "draws": self.draws,
            "compile": self.compile if self.compile is not None else False,
        }
        if self.sweep is not None:
            out["sweep"] = self.sweep.to_dict()
        return jsonable(out)


# -- loading --------------------------------------------------------------------------------------------
def load_spec(source: Union[PathLike, Mapping[str, Any], EvalSpec], *, extra_models: Sequence[str] = ()) -> EvalSpec:
    """Parse and statically validate a spec from a TOML/JSON file, a ``results.json``, a dict or an EvalSpec.

    ``extra_models`` are names the caller provides as in-memory models (accepted without a zoo check).
    Checks that need the data (eps against the image size, preset budgets) run in ``plan_attacks``.
    """
    if isinstance(source, EvalSpec):
        return source
    if isinstance(source, Mapping):
        return parse_spec(source, base_dir=Path.cwd(), extra_models=extra_models)
    path = Path(source)
    raw = read_spec_file(path)
    if is_results_file(raw):
        raw = raw["spec"]
    return parse_spec(raw, base_dir=path.resolve().parent, extra_models=extra_models)


def read_spec_file(path: Path) -> Dict[str, Any]:
    """Read a TOML (``.toml``) or JSON file into a dict, with the file named in any error.

    A UTF-8 byte-order mark is skipped. A file that cannot be a spec is named by what it is: empty, UTF-16
    or other non-UTF-8 text, binary, an HTML page, JSON in a ``.toml`` file or TOML in a ``.json`` one; a named
    pipe or a device is refused without being read (reading one could block forever).
    """
    import logging

    from gradconceal.files import describe_content, open_regular

    def parses(parse: Any, text: str) -> bool:  # json.loads or tomllib.loads; their errors are ValueErrors
        try:
            parse(text)
        except ValueError:
            return False
        return True

    if path.is_dir():
        raise GradconcealError(f"spec file {path} is a folder; give a .toml or .json spec file (or a results.json)")
    try:
        with open_regular(path, "spec file", "give a .toml or .json spec file") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise GradconcealError(f"spec file not found: {path}") from None
    except OSError as error:
        raise GradconcealError(f"cannot read spec file {path}: {error}") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        logging.getLogger(__name__).info("spec file %s starts with a UTF-8 byte-order mark; read without it", path)
        raw = raw[3:]
    if not raw.strip():
        raise GradconcealError(f"spec file {path} is empty; a spec names models, data and attacks "
                               "(see 'gradconceal evaluate --help')")
    what = describe_content(raw[:4096])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        if what in ("it is UTF-16 text", "it is UTF-32 text"):
            raise GradconcealError(f"cannot read spec file {path}: {error}; {what}: save it as UTF-8") from None
        if what is not None and what.startswith("it is") or b"\x00" in raw[:4096]:
            raise GradconcealError(f"spec file {path} is not a TOML or JSON spec; {what or 'it is a binary file'}") from None
        raise GradconcealError(f"cannot read spec file {path}: {error}; save it as UTF-8") from None
    if "\x00" in text:
        if what in ("it is UTF-16 text", "it is UTF-32 text"):
            raise GradconcealError(f"cannot read spec file {path}: {what}: save it as UTF-8")
        raise GradconcealError(f"spec file {path} is not a TOML or JSON spec; {what or 'it is a binary file'}")
    foreign = what is not None and what.startswith(("it starts like an HTML page", "it is a Git LFS pointer",
                                                    "it holds XML"))
    if path.suffix.lower() == ".json" or (path.suffix.lower() != ".toml" and text.lstrip().startswith("{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            if path.suffix.lower() == ".json" and parses(tomllib.loads, text):
                raise GradconcealError(f"spec file {path} holds TOML; name it .toml") from None
            if foreign:
                raise GradconcealError(f"spec file {path} is not a TOML or JSON spec; {what}") from None
            raise GradconcealError(f"spec file {path} is not valid JSON: {error}") from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            if text.lstrip().startswith(("{", "[")) and parses(json.loads, text):
                raise GradconcealError(f"spec file {path} holds JSON; name it .json") from None
            if foreign:
                raise GradconcealError(f"spec file {path} is not a TOML or JSON spec; {what}") from None
            raise GradconcealError(f"spec file {path} is not valid TOML: {error}") from None
    if not isinstance(data, dict):
        raise GradconcealError(f"spec file {path} must hold a table/object at the top, got {type(data).__name__}")
    return data


def is_results_file(raw: Mapping[str, Any]) -> bool:
    """Whether a parsed file is a ``results.json`` written by ``evaluate`` (it embeds its spec)."""
    return raw.get("kind") == "gradconceal-results" and isinstance(raw.get("spec"), Mapping)


def parse_spec(raw: Mapping[str, Any], *, base_dir: Path, extra_models: Sequence[str] = ()) -> EvalSpec:
    """Validate a spec dict key by key; relative paths are taken from ``base_dir``."""
    if not isinstance(raw, Mapping):
        raise GradconcealError(f"a spec must be a table/object, got {type(raw).__name__}")
    _check_keys(raw, _TOP_KEYS, "spec")
    version = raw.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise GradconcealError(f"format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise GradconcealError(
            f"spec format_version {version} is newer than this gradconceal understands ({FORMAT_VERSION}); "
            "upgrade gradconceal"
        )
    for required in ("models", "data", "attacks"):
        if required not in raw:
            raise GradconcealError(f"spec needs a '{required}' entry")
    models = _parse_models(raw["models"], base_dir, extra_models)
    defenses = _parse_defenses(raw.get("defenses", ["none", "gcm"]))
    data = _parse_data(raw["data"], base_dir)
    attacks = _parse_attacks(raw["attacks"])
    sweep = _parse_sweep(raw["sweep"]) if raw.get("sweep") is not None else None
    spec = EvalSpec(
        models=models,
        defenses=defenses,
        data=data,
        attacks=attacks,
        sweep=sweep,
        batch_size=_int(raw.get("batch_size", 32), "batch_size", minimum=1),
        device=_device(raw.get("device", "auto")),
        dtype=_choice(raw.get("dtype", "float32"), "dtype", DTYPES),
        seed=_int(raw.get("seed", 0), "seed", minimum=0),
        cascade=_bool(raw.get("cascade", False), "cascade"),
        keep_adversarial=_bool(raw.get("keep_adversarial", False), "keep_adversarial"),
        gallery=_int(raw.get("gallery", 4), "gallery", minimum=0),
        audit=_bool(raw.get("audit", True), "audit"),
        draws=_int(raw.get("draws", DEFAULT_DRAWS), "draws", minimum=1),
        compile=_compile_mode(raw.get("compile", False)),
        title=_str(raw.get("title", "gradconceal evaluation"), "title"),
        format_version=FORMAT_VERSION,
        base_dir=base_dir,
    )
    if spec.dtype == "float16" and spec.device == "cpu":
        raise GradconcealError("dtype 'float16' needs a CUDA device (use 'bfloat16' or 'float32' on CPU)")
    return spec


# -- field parsers --------------------------------------------------------------------------------------
def _compile_mode(value: Any) -> Optional[str]:
    """The spec's ``compile``: None for false, "default" for true, else one of ``COMPILE_MODES``."""
    if value is False or value is None:
        return None
    if value is True:
        return "default"
    if not isinstance(value, str):
        raise GradconcealError(f"compile must be true, false or a torch.compile mode {list(COMPILE_MODES)}, "
                               f"got {value!r}")
    return _choice(value, "compile", COMPILE_MODES)


# The checks of ``gradconceal._validate`` under the short names this module's parsers use.
_check_keys = _validate.check_keys  # (table, allowed, where): unknown key 'x' in where (did you mean 'y'?)
_int = _validate.integer  # (value, name, *, minimum=None)
_float = _validate.number  # (value, name): a finite number (no bool, no string)
_bool = _validate.boolean  # (value, name)
_str = _validate.text  # (value, name): a non-empty string, stripped
_choice = _validate.choice  # (value, name, choices): lower-cased; 'must be one of [...], got x (did you mean y?)'


def _device(value: Any) -> str:
    text = _str(value, "device").lower()
    if text in ("auto", "cpu", "cuda", "mps") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise GradconcealError(f"unknown device {value!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")


def _list(value: Any, name: str) -> List[Any]:
    if isinstance(value, (str, Mapping)):
        return [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise GradconcealError(f"{name} must be a non-empty list, got {value!r}")
    return list(value)


def _unique_labels(labels: Sequence[str], what: str) -> None:
    seen = set()
    for label in labels:
        if label in seen:
            raise GradconcealError(f"two {what} share the label {label!r}; give each a distinct 'label'")
        seen.add(label)


def _resolve_path(text: str, base_dir: Path) -> str:
    """``text`` with ``~`` expanded, a relative path taken from ``base_dir`` (the spec file's folder)."""
    return _validate.resolve_path(text, base_dir)


def _parse_models(value: Any, base_dir: Path, extra_models: Sequence[str]) -> List[ModelEntry]:
    entries = []
    for i, item in enumerate(_list(value, "models")):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping):
            raise GradconcealError(f"models[{i}] must be a name or a table, got {item!r}")
        _check_keys(item, _MODEL_KEYS, f"models[{i}]")
        name = _str(item.get("name"), f"models[{i}].name")
        weights = item.get("weights")
        if weights is not None:
            weights = _resolve_path(_str(weights, f"models[{i}].weights"), base_dir)
            require_file(weights, f"models[{i}].weights: file", "give the weights file itself")
        if name not in extra_models:
            name = check_model_name(name, base_dir, weights)
        label = _str(item.get("label", default_model_label(name)), f"models[{i}].label")
        entries.append(ModelEntry(name, label, weights, _bool(item.get("pretrained", True), f"models[{i}].pretrained")))
    _unique_labels([m.label for m in entries], "models")
    return entries


def default_model_label(name: str) -> str:
    """A model's label in tables: the zoo name, or a checkpoint's file stem (``gradconceal.models.names``)."""
    return model_names.default_model_label(name)


def check_model_name(name: str, base_dir: Path, weights: Optional[str] = None) -> str:
    """Check a model name without loading it; returns the name (checkpoint paths made absolute).

    The same check ``load_model`` makes (``gradconceal.models.zoo.check_model``), with relative checkpoint
    paths taken from the spec's folder.
    """
    return check_model(name, base_dir=base_dir, weights=weights).name


def _parse_defenses(value: Any) -> List[DefenseEntry]:
    entries = []
    for i, item in enumerate(_list(value, "defenses")):
        if isinstance(item, str) and ":" in item:  # the audit's form, 'gcm:w=1e12,epsilon=1e-10'
            name, options = parse_defense_string(item)
            item = {"name": name, **{k: int(v) if k in ("min_size", "bits") and v == int(v) else v
                                     for k, v in options.items()}}
        elif isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping):
            raise GradconcealError(f"defenses[{i}] must be a name or a table, got {item!r}")
        _check_keys(item, _DEFENSE_KEYS, f"defenses[{i}]")
        kind = _choice(item.get("name"), f"defenses[{i}].name", DEFENSE_NAMES)
        w = _float(item.get("w", 1e20), f"defenses[{i}].w")
        epsilon = _float(item.get("epsilon", 1e-8), f"defenses[{i}].epsilon")
        if kind not in CONCEALING_DEFENSES and ("w" in item or "epsilon" in item):
            raise GradconcealError(f"defenses[{i}]: w and epsilon belong to 'gcm' or 'challenge', not {kind!r}")
        min_size = item.get("min_size")
        if min_size is not None:
            if kind not in RANDOM_DEFENSES:
                raise GradconcealError(f"defenses[{i}]: min_size belongs to 'resize-pad' or 'challenge', not {kind!r}")
            min_size = _int(min_size, f"defenses[{i}].min_size", minimum=1)
        if kind != "bit-depth" and "bits" in item:
            raise GradconcealError(f"defenses[{i}]: bits belongs to 'bit-depth', not {kind!r}")
        bits = _int(item.get("bits", 4), f"defenses[{i}].bits", minimum=1)
        default_label = DEFAULT_DEFENSE_LABELS[kind]
        if kind in CONCEALING_DEFENSES and (w, epsilon) != (1e20, 1e-8):
            default_label = f"{kind}(w={w:g},epsilon={epsilon:g})"
        if kind == "bit-depth" and bits != 4:
            default_label = f"bit-depth(bits={bits})"
        label = _str(item.get("label", default_label), f"defenses[{i}].label")
        entry = DefenseEntry(kind, label, w, epsilon, min_size, bits)
        if not entry.random:
            entry.layers((1, 1, 1))  # settings the layers refuse (bits > 16, ...) fail here, before any model loads
        entries.append(entry)
    _unique_labels([d.label for d in entries], "defenses")
    return entries


def _parse_data(value: Any, base_dir: Path) -> DataEntry:
    if isinstance(value, str):
        value = {"source": value}
    if not isinstance(value, Mapping):
        raise GradconcealError(f"data must be a source string or a table, got {value!r}")
    _check_keys(value, _DATA_KEYS, "data")
    source = data_sources.check_data_source(_str(value.get("source"), "data.source"), base_dir=base_dir)
    n = value.get("n")
    if n is not None:
        n = _int(n, "data.n", minimum=1)
    split = _choice(value.get("split", "test"), "data.split", data_sources.SPLITS)
    source.check_split(split)
    workers = value.get("workers")
    if workers is not None:
        workers = _int(workers, "data.workers", minimum=0)
    return DataEntry(source.to_string(), n, split, workers)


def check_data_source(source: str, base_dir: Path) -> str:
    """Check a data source string without reading images; paths in it are made absolute (``gradconceal.data.sources``)."""
    return data_sources.check_data_source(source, base_dir=base_dir).to_string()


def _parse_attacks(value: Any) -> List[AttackEntry]:
    if isinstance(value, (list, tuple)) and not value:
        return []  # clean accuracy only (e.g. over a whole test set, beside a smaller attacked subset)
    entries = []
    for i, item in enumerate(_list(value, "attacks")):
        where = f"attacks[{i}]"
        if isinstance(item, str):
            item = {"preset": item}
        if not isinstance(item, Mapping):
            raise GradconcealError(f"{where} must be a preset name or a table, got {item!r}")
        keep = _bool(item.get("keep", False), f"{where}.keep")
        n = _attack_images(item.get("n"), where, "preset" in item)
        reason = _str(item["reason"], f"{where}.reason") if item.get("reason") is not None else None
        if "preset" in item:
            _check_keys(item, _PRESET_ENTRY_KEYS, where)
            preset = _choice(item["preset"], f"{where}.preset", _preset_names())
            overrides = item.get("overrides", {})
            if not isinstance(overrides, Mapping) or not all(isinstance(v, Mapping) for v in overrides.values()):
                raise GradconcealError(f"{where}.overrides must map attack labels to tables of settings, got {overrides!r}")
            entries.append(AttackEntry(preset=preset, overrides=copy.deepcopy(dict(overrides)), keep=keep, reason=reason,
                                       n=n))
            continue
        if "attack" not in item:
            raise GradconcealError(f"{where} needs 'preset' (one of {', '.join(_preset_names())}) or 'attack' (an attack name)")
        attack = _str(item["attack"], f"{where}.attack").lower()
        view = _choice(item.get("view", "plain"), f"{where}.view", VIEWS)
        settings = {k: v for k, v in item.items() if k not in _ATTACK_ENTRY_KEYS}
        label = _str(item.get("label", _default_attack_label(attack, settings, view)), f"{where}.label")
        if label == CLEAN_LABEL:
            raise GradconcealError(f"{where}.label {CLEAN_LABEL!r} is reserved for the clean pass")
        entries.append(AttackEntry(label=label, attack=attack, view=view, settings=settings, keep=keep, reason=reason,
                                   n=n))
    return entries


def _attack_images(value: Any, where: str, is_preset: bool) -> Union[None, int, Dict[str, int]]:
    """An attack entry's ``n``: an integer >= 1, or (a preset's) a table of attack labels or patterns to integers."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        if not is_preset:
            raise GradconcealError(f"{where}.n must be an integer (the images this attack runs on), got {value!r}")
        if not value:
            raise GradconcealError(f"{where}.n must not be an empty table")
        return {_str(k, f"{where}.n key"): _int(v, f"{where}.n[{k!r}]", minimum=1) for k, v in value.items()}
    return _int(value, f"{where}.n", minimum=1)


def _preset_names() -> Sequence[str]:
    """The attack presets of ``gradconceal.attacks.presets`` (paper, adaptive, autoattack-like, ...)."""
    from gradconceal.attacks.presets import list_presets

    return list_presets()


def _default_attack_label(attack: str, settings: Mapping[str, Any], view: str) -> str:
    norm = settings.get("norm")
    label = attack.upper() + (f"-{str(norm).capitalize()}" if norm else "")
    return label if view == "plain" else f"{view.upper()}-{label}"


def _parse_sweep(value: Any) -> SweepEntry:
    if not isinstance(value, Mapping):
        raise GradconcealError(f"sweep must be a table, got {value!r}")
    _check_keys(value, _SWEEP_KEYS, "sweep")
    eps = {}
    for norm in ("linf", "l2", "l1"):
        if norm in value:
            values = _list(value[norm], f"sweep.{norm}")
            eps[norm] = tuple(values)
    if not eps:
        raise GradconcealError("sweep needs eps lists for at least one norm, e.g. linf = ['2/255', '4/255', '8/255']")
    views = tuple(_choice(v, "sweep.views", VIEWS) for v in _list(value.get("views", ["plain", "bpda"]), "sweep.views"))
    settings = value.get("settings", {})
    if not isinstance(settings, Mapping):
        raise GradconcealError(f"sweep.settings must be a table, got {settings!r}")
    for key in ("norm", "eps"):
        if key in settings:
            raise GradconcealError(f"sweep.settings must not set {key!r}: the sweep sets it")
    return SweepEntry(_str(value.get("attack", "pgd"), "sweep.attack").lower(), views, eps, dict(settings))
