"""AutoAttack (pyautoattack, standard version) against the adaptive preset's AutoAttack ensemble, image by image.

Reference: pyautoattack's ``AutoAttack(version="standard")`` (APGD-CE, APGD-T over 9 target classes, FAB-T over 9,
Square 5,000 queries) run on the attacker's view of the defended model (``adaptive_view(model, bpda=True)``: BPDA
through GCM, the model's own forward), at the adaptive preset's budget (Linf 8/255, L2 0.57735 at 1x28x28). Ours:
the preset's ensemble plans of that norm that apply to the model (``plan.applies_to``), built on their views
(``plan.build``) and run as a cascade: each attack sees only the images still robust, with the evaluation's
per-image seeds (``sample_seeds(seed, indices)``). Both are judged the same way: an image is broken when the
defended model's prediction on the adversarial image is wrong (ours: or its logits were not finite, as in the
runner) and the image lies in [0, 1] within the budget (``ThreatModel.contains``).

The work is done in chunks of ``--chunk`` images (of the first ``--n`` test images), each saved atomically as
``chunk-NNNN.json`` in ``--out`` as soon as it is done; a rerun skips the saved chunks (pyautoattack does not
resume), and refuses a folder written with other settings (``config.json``). Per chunk, on its clean-correct
images:

1. AutoAttack: its four attacks in its order, each on the images still robust (what ``run_standard_evaluation``
   does, one attack per call so that each image's breaking attack is known; each call repeats pyautoattack's
   few forward-pass checks), timed per attack (construction and run; judging excluded).
2. Ours: the cascade, timed per attack (``plan.build`` and ``perturb``; judging excluded).
3. Linf folders only: the rest of the adaptive preset (its attacks outside the ensembles, each on every
   clean-correct image, as the runner runs them), timed, so that the whole preset's time can be reported
   (rest + Linf ensemble + L2 ensemble, on the images both norms cover).
4. For the images AutoAttack breaks and ours does not: AutoAttack again with ``--check-seed`` on those images
   only; an image it misses then too is a seed-dependent exception.

    OMP_NUM_THREADS=1 python benchmarks/autoattack_compare.py --model fmnist-cnn --defense gcm --norm linf --n 500
    python benchmarks/autoattack_compare.py --summary benchmarks/results/autoattack     # the Markdown tables
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from gradconceal.attacks.adaptive import adaptive_view
from gradconceal.attacks.plan import ATTACK_SEMANTICS_VERSION, AttackPlan
from gradconceal.attacks.presets import preset
from gradconceal.attacks.threat import ThreatModel
from gradconceal.errors import GradconcealError
from gradconceal.folders import FolderLock, write_atomic

log = logging.getLogger("autoattack_compare")

FORMAT_VERSION = 1
MODELS: Tuple[str, ...] = ("fmnist-cnn", "fmnist-resnet", "fmnist-vit")
DEFENSES: Tuple[str, ...] = ("none", "gcm")
NORMS: Tuple[str, ...] = ("linf", "l2")
IMAGE_SIZE: Tuple[int, int, int] = (1, 28, 28)
DATA = "fashion-mnist"
SCRIPT = "benchmarks/autoattack_compare.py"
RESULTS_DIR = Path(__file__).resolve().parent / "results" / "autoattack"
AUTOATTACK_ORDER: Tuple[str, ...] = ("apgd-ce", "apgd-t", "fab-t", "square")  # its standard attacks, in its order
CHUNK_KEYS: Tuple[str, ...] = ("format", "chunk", "start", "stop", "threads", "images", "seconds", "cpu_seconds",
                               "rest_broken", "rest_digest", "outside_budget")
IMAGE_KEYS: Tuple[str, ...] = ("index", "label", "clean_correct", "robust_autoattack", "autoattack_broken_by",
                               "robust_ours", "ours_broken_by", "check_robust_autoattack", "check_broken_by")


class Stopwatch:
    """Wall-clock and CPU seconds (this process, all its threads) per named step; CPU time is what a shared
    machine's other load changes least."""

    def __init__(self) -> None:
        self.wall: Dict[str, float] = {}
        self.cpu: Dict[str, float] = {}

    @contextlib.contextmanager
    def time(self, name: str) -> Iterator[None]:
        """Add the seconds the ``with`` block takes to step ``name``."""
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu


# -- the two sides --------------------------------------------------------------------------------------------
def preset_plans(image_size: Sequence[int]) -> List[AttackPlan]:
    """The adaptive preset's attacks for ``image_size`` (one place, so a test can shorten them)."""
    return preset("adaptive", image_size=image_size)


def cascade_name(norm: str) -> str:
    """The preset's cascade name of AutoAttack's ensemble at ``norm``: 'AutoAttack-Linf' or 'AutoAttack-L2'."""
    return f"AutoAttack-{norm.capitalize()}"


def ensemble_plans(plans: Sequence[AttackPlan], norm: str, defended: nn.Module) -> List[AttackPlan]:
    """The ensemble members of ``norm`` that apply to ``defended``, in the preset's (AutoAttack's) order."""
    members = [plan for plan in plans if plan.cascade == cascade_name(norm) and plan.applies_to(defended)]
    if not members:
        raise GradconcealError(f"the adaptive preset has no {cascade_name(norm)} cascade that applies to the model")
    return members


def rest_plans(plans: Sequence[AttackPlan], defended: nn.Module) -> List[AttackPlan]:
    """The preset's attacks outside every cascade that apply to ``defended``."""
    return [plan for plan in plans if plan.cascade is None and plan.applies_to(defended)]


def make_autoattack(view: nn.Module, *, norm: str, eps: float, seed: int) -> Any:
    """pyautoattack's ``AutoAttack`` in its standard version on ``view`` (one place, so a test can shorten it)."""
    from pyautoattack import AutoAttack

    return AutoAttack(view, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, seed=seed, version="standard",
                      device="cpu")


@torch.no_grad()
def judge(defended: nn.Module, threat: ThreatModel, images: Tensor, labels: Tensor, adversarial: Tensor,
          non_finite: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Per image: broken (wrong or non-finite prediction inside the budget), inside the budget, norm."""
    logits = defended(adversarial)
    wrong = (logits.argmax(1) != labels) | ~torch.isfinite(logits).all(1)
    if non_finite is not None:
        wrong |= non_finite.to(wrong.device)
    inside = threat.contains(images, adversarial)
    return wrong & inside, inside, threat.norms(adversarial - images)


Cascade = Tuple[List[Optional[str]], Stopwatch, List[Optional[float]], int]
# one attack of a cascade: (its name, the images still robust, their labels, their positions) ->
# (adversarial images, per-image non-finite flags or None)
CascadeStep = Callable[[str, Tensor, Tensor, List[int]], Tuple[Tensor, Optional[Tensor]]]


def run_cascade(names: Sequence[str], step: CascadeStep, defended: nn.Module, threat: ThreatModel, images: Tensor,
                labels: Tensor) -> Cascade:
    """A cascade, each attack on the images still robust: per image the attack that broke it (None: robust),
    seconds per attack, the breaking norm, and how many adversarial images lay outside the budget. Both sides
    are judged by ``judge`` on the defended model."""
    broken_by: List[Optional[str]] = [None] * len(labels)
    norms: List[Optional[float]] = [None] * len(labels)
    seconds = Stopwatch()
    outside = 0
    for name in names:
        robust = [i for i, who in enumerate(broken_by) if who is None]
        if not robust:
            break
        x, y = images[robust], labels[robust]
        with seconds.time(name):
            adversarial, non_finite = step(name, x, y, robust)
        broken, inside, distance = judge(defended, threat, x, y, adversarial.detach(), non_finite)
        outside += int((~inside).sum())
        for j, i in enumerate(robust):
            if broken[j]:
                broken_by[i], norms[i] = name, float(distance[j])
    return broken_by, seconds, norms, outside


def run_autoattack(view: nn.Module, defended: nn.Module, threat: ThreatModel, images: Tensor, labels: Tensor,
                   seed: int) -> Cascade:
    """AutoAttack's cascade, one attack per call on the images still robust (``run_cascade``)."""

    def step(name: str, x: Tensor, y: Tensor, robust: List[int]) -> Tuple[Tensor, Optional[Tensor]]:
        with torch.random.fork_rng():  # pyautoattack reseeds torch's global generator
            autoattack = make_autoattack(view, norm=threat.norm, eps=threat.eps, seed=seed)
            autoattack.attacks_to_run = [name]
            adversarial, _ = autoattack.run_standard_evaluation(x, y, batch_size=len(robust))
        return adversarial, None

    return run_cascade(AUTOATTACK_ORDER, step, defended, threat, images, labels)


def run_ours(plans: Sequence[AttackPlan], defended: nn.Module, threat: ThreatModel, images: Tensor, labels: Tensor,
             seeds: Sequence[int]) -> Cascade:
    """Our cascade: each plan on the images still robust, with their per-image seeds (``run_cascade``)."""
    by_label = {plan.label: plan for plan in plans}

    def step(label: str, x: Tensor, y: Tensor, robust: List[int]) -> Tuple[Tensor, Optional[Tensor]]:
        result = by_label[label].build(defended).perturb(x, y, sample_seeds=[seeds[i] for i in robust])
        return result.adversarial, result.non_finite

    return run_cascade(list(by_label), step, defended, threat, images, labels)


def run_rest(plans: Sequence[AttackPlan], defended: nn.Module, images: Tensor, labels: Tensor,
             seeds: Sequence[int], indices: Sequence[int]) -> Tuple[Stopwatch, Dict[str, List[int]]]:
    """The preset's other attacks, each on every image given: seconds and the broken image indices per attack."""
    seconds = Stopwatch()
    broken_indices: Dict[str, List[int]] = {}
    for plan in plans:
        with seconds.time(plan.label):
            attack = plan.build(defended)
            result = attack.perturb(images, labels, sample_seeds=list(seeds))
        broken, _, _ = judge(defended, attack.threat, images, labels, result.adversarial.detach(), result.non_finite)
        broken_indices[plan.label] = [int(indices[j]) for j in range(len(indices)) if broken[j]]
    return seconds, broken_indices


# -- one chunk ------------------------------------------------------------------------------------------------
def load_models(model_name: str, defense: str) -> Tuple[nn.Module, nn.Module]:
    """The defended model (``DefendedModel``, eval mode) and the attacker's view AutoAttack is given."""
    from gradconceal.defenses import DefendedModel
    from gradconceal.defenses.build import build_defense
    from gradconceal.models.zoo import load_model

    base = load_model(model_name)
    defended = DefendedModel(base, build_defense(defense, {}, IMAGE_SIZE)).eval()
    return defended, adaptive_view(defended, bpda=True)


def rest_digest(rest_attacks: Sequence[Mapping[str, Any]]) -> str:
    """A hash (16 hex digits) of the rest of the preset's plans (``config["rest_attacks"]``) a chunk was timed with."""
    return hashlib.blake2b(json.dumps(list(rest_attacks), sort_keys=True).encode(), digest_size=8).hexdigest()


def chunk_batch(settings: Mapping[str, Any], chunk: int, data: Any,
                defended: nn.Module) -> Tuple[List[int], Tensor, List[bool], List[int], Tensor, Tensor, List[int]]:
    """Chunk ``chunk``'s image indices, labels and clean verdicts, and its clean-correct images (positions in the
    chunk, images, labels, per-image seeds): what both sides attack."""
    from gradconceal.evaluation.spec import sample_seeds

    size = int(settings["chunk"])
    indices = list(range(chunk * size, (chunk + 1) * size))
    images = torch.stack([data[i][0] for i in indices])
    labels = torch.tensor([int(data[i][1]) for i in indices], dtype=torch.int64)
    with torch.no_grad():
        correct = (defended(images).argmax(1) == labels).tolist()
    kept = [j for j, ok in enumerate(correct) if ok]
    seeds = sample_seeds(int(settings["seed"]), [indices[j] for j in kept])
    return indices, labels, correct, kept, images[kept], labels[kept], seeds


def refresh_rest(record: Dict[str, Any], settings: Mapping[str, Any], data: Any, defended: nn.Module,
                 plans: Sequence[AttackPlan]) -> Dict[str, Any]:
    """``record`` (a saved chunk) with the rest of the preset measured again with today's ``plans`` (its time and
    broken images); both sides' results are kept, since the rest of the preset takes no part in them."""
    indices, _, _, kept, x, y, seeds = chunk_batch(settings, int(record["chunk"]), data, defended)
    broken: Optional[Dict[str, List[int]]] = None
    for key in ("seconds", "cpu_seconds"):
        record[key] = {k: v for k, v in record[key].items() if k not in ("rest", "rest_by_attack")}
    if kept:
        watch, broken = run_rest(rest_plans(plans, defended), defended, x, y, seeds, [indices[j] for j in kept])
        record["seconds"].update(_seconds({"rest": watch}, "wall"))
        record["cpu_seconds"].update(_seconds({"rest": watch}, "cpu"))
    return {**record, "rest_broken": broken, "rest_digest": rest_digest(settings["rest_attacks"])}


def run_chunk(settings: Mapping[str, Any], chunk: int, data: Any, defended: nn.Module, view: nn.Module,
              plans: Sequence[AttackPlan]) -> Dict[str, Any]:
    """Everything measured on chunk ``chunk`` (images ``chunk * size`` onwards): the JSON-ready record."""
    norm, seed = str(settings["norm"]), int(settings["seed"])
    indices, labels, correct, kept, x, y, seeds = chunk_batch(settings, chunk, data, defended)
    members = ensemble_plans(plans, norm, defended)
    threat = members[0].build(defended).threat
    watches: Dict[str, Stopwatch] = {}

    aa_by, watches["autoattack"], aa_norms, aa_outside = run_autoattack(view, defended, threat, x, y, seed)
    ours_by, watches["ours"], ours_norms, ours_outside = run_ours(members, defended, threat, x, y, seeds)
    rest_broken: Optional[Dict[str, List[int]]] = None
    if settings["rest"] and kept:
        watches["rest"], rest_broken = run_rest(rest_plans(plans, defended), defended, x, y, seeds,
                                                [indices[j] for j in kept])

    missed = [k for k in range(len(kept)) if aa_by[k] is not None and ours_by[k] is None]
    check_by: Dict[int, Optional[str]] = {}
    if missed:
        again, watches["check"], _, _ = run_autoattack(view, defended, threat, x[missed], y[missed],
                                                       int(settings["check_seed"]))
        check_by = dict(zip(missed, again))

    records: List[Dict[str, Any]] = []
    position = {j: k for k, j in enumerate(kept)}
    for j, index in enumerate(indices):
        k = position.get(j)
        record: Dict[str, Any] = {"index": index, "label": int(labels[j]), "clean_correct": bool(correct[j]),
                                  "robust_autoattack": None, "autoattack_broken_by": None, "robust_ours": None,
                                  "ours_broken_by": None, "check_robust_autoattack": None, "check_broken_by": None}
        if k is not None:
            record.update(robust_autoattack=aa_by[k] is None, autoattack_broken_by=aa_by[k],
                          autoattack_norm=_rounded(aa_norms[k]), robust_ours=ours_by[k] is None,
                          ours_broken_by=ours_by[k], ours_norm=_rounded(ours_norms[k]))
            if k in check_by:
                record.update(check_robust_autoattack=check_by[k] is None, check_broken_by=check_by[k])
        records.append(record)
    return {"format": FORMAT_VERSION, "chunk": chunk, "start": indices[0], "stop": indices[-1] + 1,
            "threads": torch.get_num_threads(), "images": records,
            "seconds": _seconds(watches, "wall"), "cpu_seconds": _seconds(watches, "cpu"),
            "rest_broken": rest_broken, "rest_digest": rest_digest(settings["rest_attacks"]),
            "outside_budget": {"autoattack": aa_outside, "ours": ours_outside}}


def _rounded(value: Optional[float]) -> Optional[float]:
    return None if value is None else float(f"{value:.6g}")


def _seconds(watches: Mapping[str, Stopwatch], kind: str) -> Dict[str, Any]:
    """``{"autoattack": total, "autoattack_by_attack": {...}, "ours": ...}`` in ``kind`` ("wall" or "cpu") seconds."""
    out: Dict[str, Any] = {}
    for side, watch in watches.items():
        steps = getattr(watch, kind)
        out[side] = round(sum(steps.values()), 3)
        out[f"{side}_by_attack"] = {name: round(value, 3) for name, value in steps.items()}
    return out


# -- the folder -----------------------------------------------------------------------------------------------
def folder_config(args: argparse.Namespace, plans: Sequence[AttackPlan], defended: nn.Module) -> Dict[str, Any]:
    """What decides a folder's chunks (a rerun with anything else is refused); ``--n`` and ``--threads`` do not."""
    import pyautoattack

    members = ensemble_plans(plans, args.norm, defended)
    rest = args.norm == "linf"
    return {
        "format": FORMAT_VERSION, "model": args.model, "defense": args.defense, "norm": args.norm,
        "eps": members[0].build(defended).threat.eps, "data": DATA, "seed": args.seed, "check_seed": args.check_seed,
        "chunk": args.chunk, "rest": rest, "attack_semantics_version": ATTACK_SEMANTICS_VERSION,
        "autoattack": {"package": "pyautoattack", "version": pyautoattack.__version__, "version_name": "standard",
                       "attacks": list(AUTOATTACK_ORDER), "view": "adaptive_view(model, bpda=True)"},
        "ours": [plan.to_dict() for plan in members],
        "rest_attacks": [plan.to_dict() for plan in rest_plans(plans, defended)] if rest else [],
    }


def chunk_path(out: Path, chunk: int) -> Path:
    """The file of chunk ``chunk`` in folder ``out``."""
    return out / f"chunk-{chunk:04d}.json"


def check_config(out: Path, config: Mapping[str, Any]) -> None:
    """Write ``config.json`` in a new folder; refuse a folder whose saved configuration differs, except in the rest
    of the preset alone (``rest_attacks``, which decides no image of either side): then each saved chunk is stamped
    with the digest of the rest it was timed with, and ``run`` measures that rest again."""
    path = out / "config.json"
    text = json.dumps(config, indent=1, sort_keys=True) + "\n"
    if not path.exists():
        write_atomic(path, text)
        return
    saved, wanted = json.loads(path.read_text(encoding="utf-8")), json.loads(json.dumps(config))
    if saved != wanted:
        changed = sorted(key for key in set(saved) | set(wanted) if saved.get(key) != wanted.get(key))
        if changed != ["rest_attacks"]:
            raise GradconcealError(f"folder {out} holds chunks of another configuration (differs in {changed}); "
                                   "choose another --out or the same settings")
        old = rest_digest(saved["rest_attacks"])
        for chunk in sorted(out.glob("chunk-*.json")):
            record = json.loads(chunk.read_text(encoding="utf-8"))
            if "rest_digest" not in record:
                write_atomic(chunk, json.dumps({**record, "rest_digest": old}, indent=1) + "\n")
        write_atomic(path, text)
        log.info("%s: the rest of the preset changed since its chunks were saved: measuring it again", out)


def run(args: argparse.Namespace) -> Path:
    """Compute and save every chunk of the first ``args.n`` images not saved yet; returns the folder."""
    from gradconceal.data import load_dataset

    if args.n % args.chunk:
        raise GradconcealError(f"--n must be a multiple of --chunk ({args.chunk}), got {args.n}")
    out = Path(args.out) if args.out else RESULTS_DIR / f"{args.model}-{args.defense}-{args.norm}"
    defended, view = load_models(args.model, args.defense)
    plans = preset_plans(IMAGE_SIZE)
    config = folder_config(args, plans, defended)
    lock = FolderLock(out)
    lock.acquire()
    try:
        check_config(out, config)
        todo = [c for c in range(args.n // args.chunk) if not chunk_path(out, c).exists()]
        digest = rest_digest(config["rest_attacks"])
        saved = {path: json.loads(path.read_text(encoding="utf-8")) for path in sorted(out.glob("chunk-*.json"))}
        stale = {path: record for path, record in saved.items() if record.get("rest_digest", digest) != digest}
        log.info("%s: %d of %d chunks to compute, %d to time the rest of the preset again", out, len(todo),
                 args.n // args.chunk, len(stale))
        if not todo and not stale:
            return out
        data = load_dataset(DATA, split="test", limit=max([args.n] + [record["stop"] for record in stale.values()]))
        settings = {**config, "chunk": args.chunk}
        for path, old in stale.items():
            record = refresh_rest(old, settings, data, defended, plans)
            write_atomic(path, json.dumps(record, indent=1) + "\n")
            log.info("%s: rest of the preset timed again (%s s)", path, record["seconds"].get("rest", "-"))
        for c in todo:
            started = time.perf_counter()
            record = run_chunk(settings, c, data, defended, view, plans)
            write_atomic(chunk_path(out, c), json.dumps(record, indent=1) + "\n")
            s = record["seconds"]
            log.info("%s chunk %d: AutoAttack %.1f s, ours %.1f s, rest %s s (%.0f s in all)", out.name, c,
                     s["autoattack"], s["ours"], s.get("rest", "-"), time.perf_counter() - started)
    finally:
        lock.release()
    return out


# -- the summary ----------------------------------------------------------------------------------------------
def read_folder(folder: Path) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """A result folder's configuration and its chunks, in order."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    chunks = [json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("chunk-*.json"))]
    return config, chunks


def result_folders(paths: Sequence[str]) -> List[Path]:
    """The result folders among ``paths`` and their subfolders (those holding a ``config.json``)."""
    found: List[Path] = []
    for path in map(Path, paths):
        found.extend([path] if (path / "config.json").exists()
                     else sorted(p.parent for p in path.glob("*/config.json")))
    order = {name: i for i, name in enumerate(MODELS + DEFENSES + NORMS)}

    def key(folder: Path) -> Tuple[int, int, int]:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        return order.get(config["model"], 99), order.get(config["defense"], 99), order.get(config["norm"], 99)

    return sorted(found, key=key)


def command(config: Mapping[str, Any], images: int) -> str:
    """The command line that computes a folder's ``images`` images."""
    args = ["--model", config["model"], "--defense", config["defense"], "--norm", config["norm"], "--n", str(images)]
    if config["seed"] != 0:
        args += ["--seed", str(config["seed"])]
    if config["check_seed"] != 1:
        args += ["--check-seed", str(config["check_seed"])]
    if config["chunk"] != 50:
        args += ["--chunk", str(config["chunk"])]
    return "OMP_NUM_THREADS=1 python " + SCRIPT + " " + shlex.join(args)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]


def _attack_seconds(chunks: Sequence[Mapping[str, Any]], side: str, name: str) -> float:
    """CPU seconds of attack ``name`` of ``side`` ("autoattack" or "ours") over ``chunks``."""
    return sum(c["cpu_seconds"][f"{side}_by_attack"].get(name, 0.0) for c in chunks)


def summary(paths: Sequence[str]) -> str:
    """The Markdown tables of the result folders under ``paths``: both sides per folder, the exceptions, the whole
    preset's time, and the commands."""
    rows, exceptions, commands, by_attack = [], [], [], []
    totals: Dict[Tuple[str, str], Dict[str, Dict[int, Dict[str, Any]]]] = {}
    for folder in result_folders(paths):
        config, chunks = read_folder(folder)
        if not chunks:
            continue
        images = [record for chunk in chunks for record in chunk["images"]]
        attacked = [r for r in images if r["clean_correct"]]
        missed = [r for r in attacked if not r["robust_autoattack"] and r["robust_ours"]]
        seed_dependent = [r for r in missed if r["check_robust_autoattack"]]
        only_ours = sum(1 for r in attacked if r["robust_autoattack"] and not r["robust_ours"])
        aa_s, ours_s = (sum(c["cpu_seconds"][side] for c in chunks) for side in ("autoattack", "ours"))
        aa_wall, ours_wall = (sum(c["seconds"][side] for c in chunks) for side in ("autoattack", "ours"))
        rest_s = sum(c["cpu_seconds"].get("rest", 0.0) for c in chunks) if config["rest"] else None
        norm = {"linf": "Linf", "l2": "L2"}[config["norm"]]
        threat = str(ThreatModel(config["norm"], config["eps"]))
        rows.append([config["model"], config["defense"], threat, len(images), len(attacked),
                     sum(1 for r in attacked if r["robust_autoattack"]), sum(1 for r in attacked if r["robust_ours"]),
                     f"{len(missed)} ({len(seed_dependent)})", only_ours, f"{aa_s:.0f}", f"{ours_s:.0f}",
                     f"{ours_s / aa_s:.2f}" if aa_s else "-", f"{ours_wall / aa_wall:.2f}" if aa_wall else "-",
                     "-" if rest_s is None else f"{rest_s:.0f}"])
        steps = [_attack_seconds(chunks, "autoattack", name) for name in AUTOATTACK_ORDER]
        ours_steps = [_attack_seconds(chunks, "ours", plan["label"]) for plan in config["ours"][:len(AUTOATTACK_ORDER)]]
        by_attack.append([config["model"], config["defense"], threat,
                          *(f"{a:.0f} / {o:.0f}" for a, o in zip(steps, ours_steps))])
        exceptions += [[config["model"], config["defense"], norm, r["index"], r["label"], r["autoattack_broken_by"],
                        r.get("autoattack_norm"), "yes" if r["check_robust_autoattack"] else
                        f"no ({r['check_broken_by']})"] for r in missed]
        commands.append(command(config, len(images)))
        per_chunk = totals.setdefault((config["model"], config["defense"]), {})
        per_chunk[config["norm"]] = {c["chunk"]: {**c["cpu_seconds"], "images": c["stop"] - c["start"]}
                                     for c in chunks}
    lines = _table(["model", "defence", "threat", "images", "clean-correct", "robust: AutoAttack", "robust: ours",
                    "AA breaks, ours not (another AA seed misses too)", "ours breaks, AA not", "AA CPU s",
                    "ours CPU s", "ours / AA (CPU)", "ours / AA (wall)", "rest of the preset CPU s"], rows)
    lines += ["", "CPU seconds per attack, AutoAttack / ours:", ""]
    lines += _table(["model", "defence", "threat", "APGD-CE", "APGD-T", "FAB-T", "Square"], by_attack)
    if exceptions:
        lines += ["", "Images AutoAttack breaks and ours does not:", ""]
        lines += _table(["model", "defence", "norm", "image", "label", "broken by (AA)", "AA norm",
                         "seed-dependent (AA with the check seed misses it too)"], exceptions)
    whole = []
    for (model, defense), by_norm in totals.items():
        linf, l2 = by_norm.get("linf", {}), by_norm.get("l2", {})
        common = sorted(set(linf) & set(l2))
        if not common or any("rest" not in linf[c] for c in common):
            continue
        rest = sum(linf[c]["rest"] for c in common)
        ens_linf = sum(linf[c]["ours"] for c in common)
        ens_l2 = sum(l2[c]["ours"] for c in common)
        whole.append([model, defense, sum(linf[c]["images"] for c in common), f"{rest:.0f}", f"{ens_linf:.0f}",
                      f"{ens_l2:.0f}", f"{rest + ens_linf + ens_l2:.0f}"])
    if whole:
        lines += ["", "The whole adaptive preset (CPU seconds) on the chunks both norms cover:", ""]
        lines += _table(["model", "defence", "images", "rest of the preset", "ensemble Linf", "ensemble L2",
                         "whole preset"], whole)
    lines += ["", "Commands:", "", *("    " + c for c in commands), f"    python {SCRIPT} --summary"]
    return "\n".join(lines)


# -- the command line -----------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line (``--summary`` alone prints the tables of saved folders)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="fmnist-cnn")
    parser.add_argument("--defense", choices=DEFENSES, default="none")
    parser.add_argument("--norm", choices=NORMS, default="linf")
    parser.add_argument("--n", type=int, default=100, help="images: the first N of the test split")
    parser.add_argument("--chunk", type=int, default=50, help="images per saved chunk")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/autoattack/<model>-<defense>-<norm>")
    parser.add_argument("--seed", type=int, default=0, help="AutoAttack's seed and our per-image seeds' base")
    parser.add_argument("--check-seed", type=int, default=1,
                        help="AutoAttack's seed for the second look at the images it breaks and ours does not")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--summary", nargs="*", metavar="FOLDER", default=None,
                        help="print the tables of these result folders (default: every one under "
                             "benchmarks/results/autoattack)")
    args = parser.parse_args(argv)
    for name in ("n", "chunk", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv: Sequence[str]) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.summary is not None:
        print(summary(args.summary or [str(RESULTS_DIR)]))
        return
    torch.set_num_threads(args.threads)
    log.info("$ python %s %s", SCRIPT, shlex.join(argv))
    run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
