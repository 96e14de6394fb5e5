"""``evaluate(spec)``: run a spec (or re-run a ``results.json``) and write the report folder.

    >>> from gradconceal import evaluate
    >>> results = evaluate({"models": ["fmnist-cnn"], "defenses": ["none", "gcm"],
    ...                     "data": {"source": "fashion-mnist", "n": 100}, "attacks": ["paper", "adaptive"]},
    ...                    out_dir="fmnist-report")
    >>> print(results.table())
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from torch import nn

from gradconceal._version import __version__
from gradconceal.preserve import preserved_rng
from gradconceal.defenses.build import resize_pad_min_size
from gradconceal.errors import GradconcealError
from gradconceal.folders import read_json_mapping, write_atomic
from gradconceal.evaluation.artifacts import adversarial_path, gallery_name
from gradconceal.evaluation.metrics import RowMetrics, row_metrics, split_row
from gradconceal.evaluation.provenance import code_provenance, images_fingerprint, source_digest
from gradconceal.evaluation.records import CLEAN_LABEL, AttackRecord, Key, Record
from gradconceal.evaluation.results import Results, compare, read_results
from gradconceal.evaluation.run import JUDGE_STREAM, Runner
from gradconceal.evaluation.spec import EvalSpec, is_results_file, load_spec, read_spec_file

log = logging.getLogger(__name__)

DEFAULT_OUT = "gradconceal-report"


def library_versions() -> Dict[str, str]:
    """Versions of what decides the numbers (for ``results.json``)."""
    import numpy
    import torch

    versions = {"gradconceal": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
                "python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("torchvision", "timm"):
        module = sys.modules.get(name)
        if module is None:
            try:
                module = __import__(name)
            except ImportError:
                continue
        versions[name] = getattr(module, "__version__", "?")
    return versions


def evaluate(
    spec_or_path: Union[str, Path, Mapping[str, Any], EvalSpec],
    out_dir: Optional[Union[str, Path]] = None,
    *,
    quiet: bool = False,
    models: Optional[Mapping[str, nn.Module]] = None,
    plots: bool = True,
    extra_info: Optional[Mapping[str, Any]] = None,
    recompute: bool = False,
) -> Results:
    """Run an evaluation spec into ``out_dir`` (default ``gradconceal-report/``) and return its numbers.

    ``spec_or_path`` is a spec dict, an ``EvalSpec``, a TOML/JSON spec file, or a ``results.json`` to
    reproduce (then ``out_dir`` defaults to its folder's ``reproduction/`` and the numbers are compared).
    ``models`` maps names used in the spec's ``models`` to in-memory pixel-space models; ``extra_info`` is
    added to ``results.json`` (e.g. the demo's gradient facts). Rerunning into the same folder resumes:
    finished records are kept and only missing ones are computed. Records computed from other weights, other
    images, other settings or older attack code are never reused: such a folder is refused with a line saying
    what changed, unless ``recompute`` replaces them. ``out_dir`` must be new, empty or made by gradconceal.
    """
    original: Optional[Dict[str, Any]] = None
    if isinstance(spec_or_path, (str, Path)):
        path = Path(spec_or_path)
        raw = read_spec_file(path)
        if is_results_file(raw):
            original = read_results(path)
            if out_dir is None:
                out_dir = path.resolve().parent / "reproduction"
    spec = load_spec(spec_or_path, extra_models=tuple(models or ()))
    out = Path(out_dir if out_dir is not None else DEFAULT_OUT)
    started = time.perf_counter()
    runner = Runner(spec, out, quiet=quiet, models=models, recompute=recompute)
    try:
        with preserved_rng():  # the caller's global generators (torch, numpy, random) are left as found
            return _evaluate(runner, spec, out, original, spec_or_path, started, plots, extra_info)
    finally:
        runner.restore_user_models()


def _evaluate(runner: Runner, spec: EvalSpec, out: Path, original: Optional[Dict[str, Any]], source: Any,
              started: float, plots: bool, extra_info: Optional[Mapping[str, Any]]) -> Results:
    """Run, compute the numbers, audit, plot and write the report (rank 0)."""
    records = runner.run()
    rows = [
        row_metrics(m.label, d.label, *split_row(records, m.label, d.label, runner.n_images), runner.plans,
                    {p.label: p.applies(random=d.random) for p in runner.plans})
        for m in spec.models for d in spec.defenses
    ]
    info = _run_info(runner, started)
    wanted = ({m.label for m in spec.models}, {d.label for d in spec.defenses},
              {p.label for p in runner.plans} | {CLEAN_LABEL})
    info["total_records"] = sum(1 for k in records if k[0] in wanted[0] and k[1] in wanted[1] and k[2] in wanted[2]
                                and k[3] < runner.n_images)
    info.update(extra_info or {})
    results = Results(spec=spec, plans=runner.plans, rows=rows, out_dir=out, info=info, rank=runner.dist.rank)
    if runner.dist.rank != 0:
        return results
    info["audit"] = _audit(runner) if spec.audit else {
        f"{r.model}/{r.defense}": {"note": "audit not run (disabled in the spec)"} for r in rows}
    from gradconceal.evaluation.report import write_report

    try:
        if plots:
            info["plots"] = _plots(results, runner, records)
        if original is not None:
            differences = compare(original["rows"], results.to_dict()["rows"])
            info["reproduction"] = {"of": str(source), "equal": not differences, "differences": differences}
        info["runtime_s"] = time.perf_counter() - started
        write_report(results)
    except OSError as error:
        raise GradconcealError(
            f"cannot write the report into {out}: {error}; the records are kept, rerun the same command to write it"
        ) from None
    return results


def randomness_note(seed: int, draws: Optional[int] = None) -> str:
    """What in an evaluation is random and how it is seeded (a note of every report); ``draws``: the draws an
    adversarial image of a random defence is judged on, when the spec has such a defence."""
    return (
        f"Randomness: the random parts are PGD's and APGD's random starts, Square's proposals (windows and signs), "
        f"the draws EOT averages over, and the resize-and-pad defence's draws; FGSM, C&W, the GCM layer and the "
        f"clean pass are deterministic. Each image i draws from its own seed, sample_seed({seed}, i) (SplitMix64 of "
        f"the spec seed {seed} and the index), mixed with the attack's own 'seed' setting; the quick audit uses the "
        f"spec seed. So the numbers do not depend on batching, resuming or the number of processes. "
        + (f"A random defence classifies a clean image on one draw (the image's first) and each adversarial image on "
           f"{draws} fresh draws from a seed stream of its own (sample_seed(image seed, {JUDGE_STREAM:#x})) that no "
           f"attack sees. " if draws else "")
        + f"On CPU the same spec, seed and batch "
        f"size give bit-identical records; another batch size gives the same decisions, with norms that may differ "
        f"in the last digits (floating-point sums). Reproduce with `gradconceal evaluate results.json`."
    )


def _run_info(runner: Runner, started: float) -> Dict[str, Any]:
    spec = runner.spec
    notes: List[str] = [randomness_note(spec.seed, spec.draws if any(d.random for d in spec.defenses) else None)]
    if getattr(runner.dataset, "label_sets", None) is not None:
        notes.append(
            "Images have sets of accepted labels (e.g. a tabby photo: 281 tabby, 282 tiger cat, 285 Egyptian cat); a "
            "prediction is correct when it is in the set. Each attack pushes away from the model's clean prediction "
            "when that is accepted, else from the image's primary label, and sees the accepted labels merged into "
            "that one class (their highest logit), so it succeeds only by leaving the set; images with several "
            "accepted labels are attacked one at a time for this."
        )
    for defense in spec.defenses:
        if defense.random:
            size = runner.image_size[-1]
            notes.append(
                f"Defence {defense.label!r}: random resize-and-pad resizes (nearest) to a side in "
                f"[{resize_pad_min_size(size, defense.min_size)}, {size}) and zero-pads back to {size}"
                + ("" if defense.min_size is not None else f" (the challenge's 218/224 scaled to {size}-pixel images)")
                + "."
            )
    if any(p.view == "transfer" or p.attack == "transfer" for p in runner.plans):
        notes.append("Transfer attacks are crafted on the undefended model (the defended model's base) and scored on "
                     "the defended model.")
    if any(p.view != "plain" and p.view != "transfer" for p in runner.plans):
        notes.append("BPDA attacks differentiate through each concealment layer as the identity (its forward is "
                     "unchanged); EOT attacks average the loss gradient over draws of the random layers. On a model "
                     "without GCM, BPDA is plain autograd; it runs there too so that every row's worst case covers the "
                     "same attacks. EOT without randomness is n/a: it would repeat the plain attack.")
    cascades = sorted({p.cascade for p in runner.plans if p.cascade is not None})
    if cascades:
        notes.append(f"Cascade(s) {', '.join(cascades)} (AutoAttack's protocol): each member attacked only the images "
                     "still robust after the members before it, so its column is the ensemble's result so far and the "
                     "last applicable member's column is the ensemble's.")
    if spec.cascade:
        notes.append("Cascade: each attack ran only on the images still robust after the attacks before it, so each "
                     "attack's column is cumulative (AutoAttack style); only the worst case is comparable across specs.")
    in_memory = [m.label for m in spec.models if m.name in runner.user_models]
    if in_memory:
        notes.append(f"Model(s) {', '.join(in_memory)} were passed in memory: reproduce with "
                     "evaluate('results.json', models={...}) giving the same models under the same names.")
    done = runner.stats["computed_records"]
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runtime_s": time.perf_counter() - started,
        "attack_seconds": runner.stats["attack_seconds"],
        "attack_seconds_by_job": {k: round(v, 3) for k, v in runner.stats["seconds_by_attack"].items()},
        "attack_seconds_all_runs": round(sum(runner.stats["seconds_by_attack"].values()), 3),
        "computed_records": done,
        "n_images": runner.n_images,
        "image_size": list(runner.image_size),
        "seed": spec.seed,
        "device": str(runner.device),
        "dtype": spec.dtype,
        "world_size": runner.dist.world_size,
        "versions": library_versions(),
        "provenance": {
            **code_provenance(),
            "weights": dict(runner.weights),
            "images": images_fingerprint([runner.image_id(i) for i in range(runner.n_images)]),
            "jobs": {f"{job.model.label}/{job.defense.label}/{job.attack_label}": job.key for job in runner.jobs},
        },
        "notes": notes,
    }


AUDIT_FILE = "audit.json"
AUDIT_IMAGES = 64  # the quick audit's images: the first min(n, 64)


def _audit_fingerprint(runner: Runner, model_label: str, defense_label: str, code: str) -> str:
    """What decides a row's quick audit: the row's clean job key (weights, defence, data source, seed, dtype), the
    audited images' fingerprints, and ``code``, the digest of the audit's and the defences' source."""
    clean = next(job.key for job in runner.jobs if job.labels == (model_label, defense_label, CLEAN_LABEL))
    n = min(runner.n_images, AUDIT_IMAGES)
    config = {"clean_job": clean, "n": n, "seed": runner.spec.seed, "quick": True,
              "images": images_fingerprint([runner.image_id(i) for i in range(n)]),
              "code": code}
    return hashlib.blake2b(json.dumps(config, sort_keys=True).encode(), digest_size=8).hexdigest()


def _audit(runner: Runner) -> Dict[str, Dict[str, Any]]:
    """The quick masking audit (gradient checks, no attacks) of each (model, defence), or why it was not run.

    Each row's result is kept in the folder's ``audit.json`` under a fingerprint of what decides it
    (``_audit_fingerprint``), so a rerun that computes no record re-reports the audit instead of repeating it;
    other weights, defence settings, images or audit code recompute it."""
    from gradconceal.masking import audit  # part of the package: an ImportError here is a bug, never "not run"

    path = runner.out_dir / AUDIT_FILE
    kept = read_json_mapping(path, "rows")
    code = source_digest("masking", "defenses")  # read once, not per row
    out: Dict[str, Dict[str, Any]] = {}
    for (model_label, defense_label), model in runner.defended.items():
        key = f"{model_label}/{defense_label}"
        fingerprint = _audit_fingerprint(runner, model_label, defense_label, code)
        earlier = kept.get(key)
        if isinstance(earlier, dict) and earlier.get("fingerprint") == fingerprint and "result" in earlier:
            out[key] = dict(earlier["result"])
            continue
        try:
            report = audit(model, runner.dataset, quick=True, n=min(runner.n_images, AUDIT_IMAGES),
                           seed=runner.spec.seed)
        except GradconcealError as error:
            log.warning("audit of %s failed: %s", key, error)
            out[key] = {"note": f"audit failed: {error}"}
            continue
        out[key] = {"verdict": report.verdict, "quick": True, "cause": getattr(report, "cause", ""),
                    "seconds": getattr(report, "seconds", None)}
        kept[key] = {"fingerprint": fingerprint, "result": out[key]}
        try:
            write_atomic(path, json.dumps({"kind": "gradconceal-audits", "rows": kept}, indent=1, sort_keys=True)
                         + "\n")
        except OSError as error:
            log.warning("cannot keep the audit of %s in %s: %s", key, path, error)
    return out


def _plots(results: Results, runner: Runner, records: Mapping[Key, Record]) -> List[str]:
    """Draw the report's PNGs; returns their file names relative to the report folder."""
    from gradconceal.evaluation import plots

    out = results.out_dir
    if not results.plans:  # clean accuracy only: the report's table says it all
        return []
    made: List[Optional[Path]] = [plots.plot_ar_bars(results, out / "ar_per_attack.png")]
    made.append(plots.plot_eps_curves(results, out / "robust_accuracy_vs_eps.png"))
    if results.spec.gallery:
        for row in results.rows:
            items = _gallery_items(row, results, runner, records)
            name = gallery_name(row.model, row.defense)
            made.append(plots.plot_gallery(f"{row.model} / {row.defense}: clean, adversarial under the strongest "
                                           "successful attack, perturbation", items, out / name))
    return [p.name for p in made if p is not None]


def _gallery_items(row: RowMetrics, results: Results, runner: Runner,
                   records: Mapping[Key, Record]) -> List[Dict[str, Any]]:
    """Up to ``spec.gallery`` images of a row with the adversarial of its strongest successful attack."""
    import numpy as np
    from PIL import Image

    names = runner.class_names.get(row.model)

    def name(label: Optional[int]) -> str:
        if label is None:
            return "?"
        if names and 0 <= label < len(names):
            return f"{names[label].split(',')[0]} ({label})"
        return str(label)

    # Strongest = lowest AR; among equally strong attacks, the smallest perturbation relative to its budget.
    plans = {p.label: p for p in results.plans}

    def relative_norm(mean_norm: Optional[float], label: str) -> float:
        eps = plans[label].eps
        return mean_norm / eps if mean_norm is not None and eps else float("inf")

    strength = sorted(
        (m.ar.value if m.ar.value is not None else 1.0, relative_norm(m.mean_norm, label), order, label)
        for order, (label, m) in enumerate(row.attacks.items()) if m is not None)
    items = []
    for index in range(min(results.spec.gallery, runner.n_images)):
        clean_record = records.get((row.model, row.defense, CLEAN_LABEL, index))
        if clean_record is None or isinstance(clean_record, AttackRecord):
            continue
        item: Dict[str, Any] = {"clean": runner.dataset[index][0].float().numpy(), "clean_name": name(clean_record.pred)}
        if not clean_record.correct:
            item["note"] = "misclassified without attack"
        else:
            item["note"] = "no attack of the table fools the model with its saved (8-bit) image"
            for _, _, _, label in strength:
                record = records.get((row.model, row.defense, label, index))
                png = adversarial_path(results.out_dir, row.model, row.defense, label, index)
                # the PNG is the 8-bit image: show it only where it still fools the model after rounding
                if not (isinstance(record, AttackRecord) and record.attacked and record.correct_8bit is False):
                    continue
                if not png.is_file():  # fooled, but the folder no longer holds the image (never say "not fooled")
                    item["note"] = f"{label} fools the model, but this folder does not keep its image ({png.name})"
                    break
                with Image.open(png) as image:
                    array = np.asarray(image, dtype=np.float32) / 255.0
                item["adversarial"] = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
                item["adversarial_name"] = name(record.adv_pred_8bit)
                item["attack"] = label
                break
        items.append(item)
    return items
