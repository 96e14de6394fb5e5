"""The runner: every (model, defence) on every attack, one durable record per image, resumable and shardable.

Randomness is per image: sample i uses ``sample_seed(spec.seed, i)`` for the attack's own randomness and
for the draws of random defence layers, so numbers do not depend on batching, on resuming, or on how many
processes share the work. Under ``torchrun`` each process takes every ``world_size``-th block of
``batch_size`` images (``shard_images``), writes its own records file, and rank 0 merges them and
writes the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, cast

import torch
from torch import Tensor, nn

from gradconceal.attacks.plan import AttackPlan
from gradconceal.attacks.probe import probe_model
from gradconceal.attacks.randomness import random_layers
from gradconceal.defenses import DefendedModel
from gradconceal.defenses.randomization import seeded_randomness
from gradconceal.errors import GradconcealError
from gradconceal.evaluation.artifacts import adversarial_path, round_to_8bit, save_png
from gradconceal.evaluation.distributed import (
    Distributed,
    resolve_device,
    setup_distributed,
    shard_images,
    uneven_subsets,
)
from gradconceal.evaluation.plan import Job, plan_attacks, plan_jobs
from gradconceal.evaluation.provenance import (
    image_fingerprint,
    read_job_configs,
    weights_fingerprint,
    what_changed,
    write_job_configs,
)
from gradconceal.evaluation.records import CLEAN_LABEL, AttackRecord, CleanRecord, Key, Record
from gradconceal.evaluation.spec import DefenseEntry, EvalSpec, ModelEntry, sample_seed, sample_seeds
from gradconceal.evaluation.store import RecordStore, unpack_archive
from gradconceal.folders import FolderLock, write_atomic

log = logging.getLogger(__name__)

# What the report of a finished run consists of (written last, atomically, from the records).
REPORT_FILES = ("report.md", "results.json", "results.csv")
# The stream of seeds the draws judging an adversarial image use: sample_seed(image seed, JUDGE_STREAM), apart
# from the image seed itself (the clean pass, the attack's own randomness and its draws).
JUDGE_STREAM = 0x4A55444745
PRELOAD_LIMIT_BYTES = 4 * 1024**3  # an image folder's images are decoded once up front when they fit in this
STALE_BANNER = "> **Stale report:**"

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_defended(base: nn.Module, defense: DefenseEntry, image_size: Sequence[int]) -> DefendedModel:
    """The defence's input layers (``gradconceal.defenses.build``) in front of ``base`` (shared, not copied)."""
    return DefendedModel(base, defense.layers(image_size)).eval()


# -- the runner -----------------------------------------------------------------------------------------
def seconds_key(model: str, defense: str, attack: str) -> str:
    """The key of a job in ``attack_seconds_by_job``: 'model/defence/attack'."""
    return f"{model}/{defense}/{attack}"


class Runner:
    """Runs one spec into an output folder; ``run()`` returns every record of the folder."""

    # The torch.compile backend of ``spec.compile`` (a cheaper or counting one can be swapped in, e.g. "aot_eager").
    compile_backend: Any = "inductor"

    def __init__(
        self,
        spec: EvalSpec,
        out_dir: Path,
        *,
        quiet: bool = False,
        models: Optional[Mapping[str, nn.Module]] = None,
        recompute: bool = False,
    ) -> None:
        self.spec = spec
        self.recompute = recompute
        self.out_dir = Path(out_dir)
        self.quiet = quiet
        self.user_models = dict(models or {})
        self.dataset: Any = None
        self.plans: List[AttackPlan] = []
        self.jobs: List[Job] = []
        self.weights: Dict[str, str] = {}  # model label -> weights fingerprint
        self._image_ids: Dict[int, str] = {}
        self.dist = Distributed()
        self.device = torch.device("cpu")
        self.defended: Dict[Tuple[str, str], DefendedModel] = {}
        self.class_names: Dict[str, Optional[List[str]]] = {}
        self._restore: List[Any] = []
        self._loaded: Optional[Tuple[str, nn.Module]] = None  # a model prepare() loaded, reused by its jobs
        # The clean logits of the current row's last pass, by batch (its image indices), on the CPU in the dtype
        # the model gave them: the attacks of a deterministic row take them instead of a clean forward of their
        # own when their batch is the same (``_attack_pass``).
        self._batch_logits: Dict[Tuple[int, ...], Tensor] = {}
        # The attack records this run wrote for the current row, by attack label and image (``_twin_records``)
        self._row_records: Dict[str, Dict[int, AttackRecord]] = {}
        # seconds_by_attack starts from the earlier finished runs' seconds (a resumed run adds its own);
        # attack_seconds is this run's alone
        self.stats: Dict[str, Any] = {"computed_records": 0, "attack_seconds": 0.0, "seconds_by_attack": {}}

    # setup ---------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Load the data and resolve the attacks (all validation that needs no model)."""
        from gradconceal.data import load_dataset

        self.dataset = load_dataset(self.spec.data.source, split=self.spec.data.split, limit=self.spec.data.n)
        available = len(self.dataset)
        if self.spec.data.n is not None and self.spec.data.n > available:
            raise GradconcealError(f"data.n is {self.spec.data.n}, but {self.spec.data.source} has only {available} "
                                   f"{self.spec.data.split} images")
        if available == 0:
            raise GradconcealError(f"data source {self.spec.data.source} has no images")
        self.n_images = min(available, self.spec.data.n or available)
        self.image_size = tuple(int(v) for v in self.dataset.image_size)
        self._preload()
        self.plans = plan_attacks(self.spec, self.image_size)
        first = list(range(min(self.n_images, self.spec.batch_size)))
        for entry in self.spec.models:  # each model once, before anything runs: its weights' fingerprint, and a
            model = self._load_model(entry)  # forward that refuses a model whose output cannot be scored
            self._loaded = (entry.label, model)  # the last one is kept for its jobs (the first, with one model)
            self.weights[entry.label] = weights_fingerprint(model)
            with self._autocast():
                probe_model(model, self._images(first), model_name=entry.label,
                            num_labels=max(getattr(self.dataset, "num_classes", 0), 1 + max(
                                max(self._accepted(i)) for i in range(self.n_images))))
        self.jobs = plan_jobs(self.spec, self.plans, self.weights, tuple(self.user_models))
        for defense in self.spec.defenses:
            if defense.random:
                build_defended(nn.Identity(), defense, self.image_size)  # checks min_size against the image size

    def _preload(self) -> None:
        """Decode an image folder's images of this process once (in ``data.workers`` DataLoader workers, pinned
        for CUDA) instead of on every access: each image is read by every attack of every row. Without
        ``workers`` only when they fit in ``PRELOAD_LIMIT_BYTES``."""
        from gradconceal.data.base import FileImageDataset

        if not isinstance(self.dataset, FileImageDataset):
            return  # the other sources are in memory already
        mine = self._shard()
        size = len(mine) * 4 * math.prod(int(v) for v in self.dataset.image_size)
        workers = self.spec.data.workers
        if workers is None and size > PRELOAD_LIMIT_BYTES:
            log.info("%d images take %.1f GB decoded: read on every access (set data.workers to decode them once)",
                     len(mine), size / 1e9)
            return
        self.dataset.preload(mine, workers=workers or 0, pin_memory=self.device.type == "cuda",
                             progress=not self.quiet and self.dist.rank == 0)

    def image_id(self, index: int) -> str:
        """The fingerprint of image ``index`` (its pixels as the model sees them and its accepted labels)."""
        if index not in self._image_ids:
            self._image_ids[index] = image_fingerprint(self.dataset[index][0], self._accepted(index))
        return self._image_ids[index]

    def _reconcile(self, done: Mapping[Key, Record]) -> Tuple[Dict[Key, Record], List[Key]]:
        """Check the folder's records against this run's jobs: returns the records to keep and those to drop.

        A record of a job whose key differs (other weights, settings, data source, attack code), or whose image
        changed, is refused with a line saying what changed, or dropped with ``recompute``. Records of a folder
        made before keys covered the weights and the attack code (records version 1) can be re-reported as
        they are, but never resumed: a run that would compute anything there is refused (or, with
        ``recompute``, starts over).
        """
        jobs = {job.labels: job for job in self.jobs}
        old_configs = read_job_configs(self.out_dir)
        stale: Dict[Key, str] = {}
        legacy: List[Key] = []
        for key, record in done.items():
            job = jobs.get(key[:3])
            if job is None:
                continue  # another spec's records in the same folder: kept, not reported
            if record.job == job.key:
                if key[3] < self.n_images and record.image is not None and record.image != self.image_id(key[3]):
                    stale[key] = f"another image {key[3]} (the data changed)"
            elif record.job == job.legacy_key and record.image is None:
                legacy.append(key)
            else:
                stale[key] = what_changed(old_configs.get(record.job), job.config)
        if stale and not self.recompute:
            key, reason = next(iter(stale.items()))
            raise GradconcealError(
                f"{self.out_dir} holds {len(stale)} record(s) computed with {reason} (first: {key[0]}/{key[1]}/"
                f"{key[2]}, image {key[3]}); they are never reused: rerun into a new --out, or add --recompute "
                "to replace them")
        kept = {k: r for k, r in done.items() if k not in stale}
        drop = list(stale)
        if legacy and self._missing(kept):
            if not self.recompute:
                raise GradconcealError(
                    f"{self.out_dir} was made by an older gradconceal (records version 1: its job keys cover neither "
                    "the weights nor the attack code), so it can be re-reported as it is but not resumed or "
                    "extended: rerun into a new --out, or add --recompute to compute it again")
            drop += legacy
            old = set(legacy)  # once: a folder holds tens of thousands of records
            kept = {k: r for k, r in kept.items() if k not in old}
        return kept, drop

    def _missing(self, done: Mapping[Key, Record]) -> int:
        """How many records of this run's jobs (all their images, all processes) the folder lacks."""
        return sum(1 for job in self.jobs for i in range(job.plan.images(self.n_images) if job.plan else self.n_images)
                   if (*job.labels, i) not in done)

    def _earlier_attack_seconds(self) -> Dict[str, float]:
        """Per-job attack seconds in the earlier ``results.json`` here, for this run's jobs whose attack has the
        same configuration (their records are the ones being resumed, so their cost carries over)."""
        current = {plan.label: plan.config() for plan in self.plans}
        if not (self.out_dir / "results.json").is_file():
            return {}
        try:
            earlier = json.loads((self.out_dir / "results.json").read_text(encoding="utf-8"))
            same = [entry["label"] for entry in earlier.get("attacks", []) if entry.get("label") in current
                    and current[entry["label"]] == {k: entry.get(k) for k in ("attack", "view", "settings")}]
            seconds = earlier.get("attack_seconds_by_job") or {}
        except (OSError, ValueError, AttributeError, TypeError):  # no earlier report, or not one of ours
            return {}
        keys = {seconds_key(m.label, d.label, label) for m in self.spec.models for d in self.spec.defenses
                for label in same}
        return {key: float(value) for key, value in seconds.items() if key in keys and isinstance(value, (int, float))}

    def _mark_report_stale(self) -> None:
        """Mark the report of an earlier run here as stale before this run adds records: report.md gets a first
        line saying so and results.json a ``status``, both replaced atomically (nothing is removed until the new
        report replaces them); temporary files a killed report write left behind are removed."""
        for path in [p for name in REPORT_FILES for p in self.out_dir.glob(f"{name}.*.tmp")]:
            path.unlink(missing_ok=True)
        note = ("a later run is adding records to this folder; this report predates them and is replaced when that "
                "run finishes (rerun the same command to finish an interrupted run)")
        report, results = self.out_dir / "report.md", self.out_dir / "results.json"
        try:
            if report.is_file():
                text = report.read_text(encoding="utf-8")
                if not text.startswith(STALE_BANNER):
                    write_atomic(report, f"{STALE_BANNER} {note}.\n\n{text}")
            if results.is_file():
                data = json.loads(results.read_text(encoding="utf-8"))
                if isinstance(data, dict) and data.get("status") != "stale":
                    write_atomic(results, json.dumps({**data, "status": "stale", "status_note": note}, indent=1))
        except (OSError, ValueError) as error:
            raise GradconcealError(f"cannot mark the earlier report in {self.out_dir} as stale: {error}") from None

    # models --------------------------------------------------------------------------------------------
    def _load_model(self, entry: ModelEntry) -> nn.Module:
        if entry.name in self.user_models:
            model = self.user_models[entry.name]
            self._remember(model)
        else:
            from gradconceal.models.zoo import load_model

            model = load_model(entry.name, weights=entry.weights, pretrained=entry.pretrained)
        size = getattr(model, "input_size", None)
        if size is not None and tuple(int(v) for v in size) != self.image_size:
            from gradconceal.data.sources import source_at_size

            sized = source_at_size(self.spec.data.source, size)
            advice = (f"use data source {sized!r}, the same images at the model's size" if sized
                      else "choose a data source of the model's size")
            raise GradconcealError(
                f"model {entry.label!r} takes images of size {tuple(size)}, but {self.spec.data.source} gives "
                f"{self.image_size}; {advice}"
            )
        model = model.eval().to(self.device)
        if self.spec.dtype == "float64":
            model = model.double()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return model

    def _remember(self, model: nn.Module) -> None:
        """Note a caller's model's mode, device, dtype and requires_grad flags, to give it back unchanged."""
        first = next(iter(model.parameters()), None)
        flags = [(p, p.requires_grad) for p in model.parameters()]
        modes = [(m, m.training) for m in model.modules()]  # each layer's own (frozen batch norm stays frozen)
        place = (first.device, first.dtype) if first is not None else None

        def restore() -> None:
            for module, training in modes:
                module.training = training
            if place is not None:
                model.to(*place)
            for parameter, flag in flags:
                parameter.requires_grad_(flag)

        self._restore.append(restore)

    def restore_user_models(self) -> None:
        """Give the caller's in-memory models back as they came (mode, device, dtype, requires_grad)."""
        while self._restore:
            self._restore.pop()()

    def _attacker_base(self, base: nn.Module) -> nn.Module:
        """The base network the attacks run: ``base`` through ``torch.compile`` when ``spec.compile`` asks, else itself.

        Only the attacks' model is compiled, once per model; the defence layers in front of it (GCM, resize-and-
        pad), their BPDA hooks and the clean pass and judging of the records stay eager, so every record's verdict
        is the eager model's. ``dynamic=True`` compiles the batch dimension as a symbol: early stop shrinks batches
        without recompiling. What remains is one graph per grad mode (attack steps; clean and final checks), each
        for batches of 1, 2-15 and 16+ images (torch specialises these on the CPU): at most 6 per model, under
        torch's recompile limit (8). An attack makes no model call for an empty batch (``RunState``).
        """
        if self.spec.compile is None:
            return base
        mode = None if self.spec.compile == "default" else self.spec.compile
        return cast(nn.Module, torch.compile(base, backend=self.compile_backend, mode=mode, dynamic=True))

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.spec.dtype in ("bfloat16", "float16"):
            return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.spec.dtype])
        return contextlib.nullcontext()

    # data ----------------------------------------------------------------------------------------------
    def _images(self, indices: Sequence[int]) -> Tensor:
        dtype = torch.float64 if self.spec.dtype == "float64" else torch.float32
        return self.dataset.batch(indices).to(self.device, dtype, non_blocking=True)

    def _accepted(self, index: int) -> List[int]:
        label_sets = getattr(self.dataset, "label_sets", None)
        if label_sets is not None:
            return sorted(int(v) for v in label_sets[index])
        return [int(self.dataset.targets[index])]

    def _predict(self, model: nn.Module, images: Tensor, seeds: Sequence[int]) -> Tuple[List[int], List[bool]]:
        """Predicted classes and, per image, whether every logit was finite (a NaN would win the argmax)."""
        return self._decide(self._logits(model, images, seeds))

    def _logits(self, model: nn.Module, images: Tensor, seeds: Sequence[int]) -> Tensor:
        """The model's logits on ``images`` (no gradient; the images' draws of random layers; autocast)."""
        with torch.no_grad(), seeded_randomness(model, seeds), self._autocast():
            return model(images)

    @staticmethod
    def _decide(logits: Tensor) -> Tuple[List[int], List[bool]]:
        return logits.argmax(dim=1).tolist(), torch.isfinite(logits).all(dim=1).tolist()

    def _judge(self, model: nn.Module, images: Tensor, seeds: Sequence[int], accepted: Sequence[Sequence[int]],
               draws: int) -> Tuple[List[int], List[bool], Optional[List[int]], List[bool]]:
        """Judge adversarial images: (prediction, correct, correct draws, finite logits) per image.

        With ``draws`` > 1 (a random defence) each image is classified on that many fresh draws of the random
        layers, from seeds of its own that no attack uses (``JUDGE_STREAM``); it is correct only when every draw
        classifies it correctly, and its prediction is the first wrong draw's. With one draw, the defence's
        first draw for the image (the clean pass's), as before.
        """
        if draws == 1:
            preds, finite = self._predict(model, images, seeds)
            return preds, [int(p) in a for p, a in zip(preds, accepted)], None, finite
        judge = [sample_seed(s, JUDGE_STREAM) for s in seeds]
        counts = [0] * len(seeds)
        first_wrong: List[Optional[int]] = [None] * len(seeds)
        first: List[int] = []
        finite_all = [True] * len(seeds)
        with torch.no_grad(), seeded_randomness(model, judge), self._autocast():
            for draw in range(draws):
                # each call is a fresh draw per image (its seed and its call count)
                preds, finite = self._decide(model(images))
                if draw == 0:
                    first = preds
                for j, (pred, ok) in enumerate(zip(preds, finite)):
                    if ok and int(pred) in accepted[j]:
                        counts[j] += 1
                    elif first_wrong[j] is None:
                        first_wrong[j] = int(pred)
                    finite_all[j] = finite_all[j] and bool(ok)
        shown = [w if w is not None else p for w, p in zip(first_wrong, first)]
        return shown, [c == draws for c in counts], counts, finite_all

    def _shard(self) -> List[int]:
        """This process's images (``shard_images``: whole blocks of ``batch_size``, see ``_blocks``)."""
        return shard_images(self.n_images, self.spec.batch_size, self.dist.world_size, self.dist.rank)

    def _blocks(self, indices: Sequence[int]) -> List[List[int]]:
        """``indices`` in batches by block of image index: image i goes with the others of ``indices`` in
        [k * batch_size, (k + 1) * batch_size) (k = i // batch_size). A batch therefore holds the same images
        whatever was skipped, resumed or cut off elsewhere (the first 20 images of a run with n = 20 are batched
        as in a run with n = 1000 when batch_size divides 20), so such runs give bit-identical records."""
        blocks: Dict[int, List[int]] = {}
        for i in indices:
            blocks.setdefault(i // self.spec.batch_size, []).append(i)
        return [blocks[k] for k in sorted(blocks)]

    def _bar(self, total: int, desc: str):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="img", leave=False, dynamic_ncols=True,
                    disable=self.quiet or self.dist.rank != 0 or total == 0)

    # passes --------------------------------------------------------------------------------------------
    def _clean_pass(self, job: Job, defended: nn.Module, shard: Sequence[int],
                    done: Mapping[Key, Record], store: RecordStore) -> Dict[int, CleanRecord]:
        model, defense = job.model.label, job.defense.label
        clean: Dict[int, CleanRecord] = {}
        for i in shard:
            record = done.get((model, defense, CLEAN_LABEL, i))
            if isinstance(record, CleanRecord):
                clean[i] = record
        todo = [i for i in shard if i not in clean]
        self._batch_logits = {}
        with self._bar(len(todo), f"{model}/{defense} clean") as bar:
            for batch in self._blocks(todo):
                logits = self._logits(defended, self._images(batch), sample_seeds(self.spec.seed, batch))
                preds, finite = self._decide(logits)
                if not job.defense.random and self.spec.compile is None:  # compiled attacks make their own
                    self._batch_logits[tuple(batch)] = logits.detach().cpu()
                if not all(finite):
                    index = batch[finite.index(False)]
                    raise GradconcealError(f"model {model!r} with defence {defense!r} gives NaN or infinite logits on "
                                           f"clean image {index}: it has no accuracy to report (check its weights)")
                records = []
                for index, pred in zip(batch, preds):
                    accepted = self._accepted(index)
                    primary = int(self.dataset.targets[index])
                    correct = int(pred) in accepted
                    records.append(CleanRecord(model=model, defense=defense, index=index, job=job.key, pred=int(pred),
                                               correct=correct, accepted=accepted, primary=primary,
                                               label=int(pred) if correct else primary, image=self.image_id(index)))
                store.append(records)
                self.stats["computed_records"] += len(records)
                clean.update((r.index, r) for r in records)
                bar.update(len(batch))
        return clean

    def _attack_pass(self, job: Job, defended: DefendedModel, shard: Sequence[int], clean: Mapping[int, CleanRecord],
                     broken: Dict[int, bool], done: Mapping[Key, Record], store: RecordStore,
                     cascades: Dict[str, Dict[int, bool]], attacked: Optional[nn.Module] = None) -> None:
        """Attack the row's images of ``shard`` (the first ``plan.n``); ``broken`` marks images any attack broke
        (the spec-wide cascade), ``cascades`` those each named cascade broke (the plan's own cascade). The attacks
        run ``attacked`` (the defended model with a compiled base, sharing its layers) when given; the records'
        verdicts are ``defended``'s."""
        attacker = attacked if attacked is not None else defended
        plan = job.plan
        assert plan is not None  # attack jobs have a plan; the clean pass is _clean_pass
        model, defense = job.model.label, job.defense.label
        in_cascade = cascades.setdefault(plan.cascade, {}) if plan.cascade is not None else {}
        draws = self.spec.draws if job.defense.random else 1
        todo: List[int] = []
        skipped: List[AttackRecord] = []
        for i in shard:
            if i >= plan.images(self.n_images):
                continue
            existing = done.get((model, defense, plan.label, i))
            if existing is not None:
                if not existing.correct:
                    broken[i] = in_cascade[i] = True
                continue
            c = clean[i]
            if not c.correct:
                status = "clean-incorrect"
            elif (self.spec.cascade and broken.get(i)) or in_cascade.get(i):
                status = "cascade-skipped"
            else:
                todo.append(i)
                continue
            skipped.append(AttackRecord(model=model, defense=defense, attack=plan.label, index=i, job=job.key,
                                        label=c.label, clean_correct=c.correct, status=status, correct=False,
                                        image=self.image_id(i)))
        self._remember_records(skipped)
        store.append(skipped)
        self.stats["computed_records"] += len(skipped)  # written by this run, though no attack ran on them
        if not todo:
            return
        twin = self._twin_records(job, defended, todo, done)
        if twin is not None:
            for record in twin:
                if not record.correct:
                    broken[record.index] = in_cascade[record.index] = True
            self._remember_records(twin)
            store.append(twin)
            self.stats["computed_records"] += len(twin)
            return
        keep = plan.keep or self.spec.keep_adversarial
        started = time.perf_counter()
        # An image with several accepted labels needs its own view of the model: it is attacked alone. A
        # random defence draws per sample from the image's seed and the calls it took part in, so its
        # images share batches (the attacks tell the layer which samples each call holds).
        single = [[i] for i in todo if len(clean[i].accepted) > 1]
        single_set = {batch[0] for batch in single}
        rest = [i for i in todo if i not in single_set]
        batches = single + self._blocks(rest)
        shared = plan.build(attacker) if rest else None
        reuse = self._reuses_clean_logits(job, defended)
        kept: Dict[Tuple[int, ...], Tensor] = {}
        with self._bar(len(todo), f"{model}/{defense} {plan.label}") as bar:
            for batch in batches:
                if batch[0] in single_set:
                    first = clean[batch[0]]
                    attack = plan.build(attacker, first.accepted, first.label)
                else:
                    assert shared is not None  # built whenever a batch of several-label-free images exists
                    attack = shared
                seeds = sample_seeds(self.spec.seed, batch)
                images = self._images(batch)
                labels = torch.tensor([clean[i].label for i in batch], device=self.device)
                given: Optional[Tensor] = None
                if reuse and batch[0] not in single_set:
                    given = self._batch_logits.get(tuple(batch))
                    if given is None:  # the forward the attack would make (same model, same batch): kept for the next
                        given = self._logits(attack.model, images, seeds)
                    kept[tuple(batch)] = given = given.detach().cpu()
                with self._autocast(), seeded_randomness(defended, seeds):
                    result = attack.perturb(images, labels, sample_seeds=seeds, clean_logits=given)
                adversarial = result.adversarial.detach()
                accepted = [clean[i].accepted for i in batch]
                preds, right, right_draws, finite = self._judge(defended, adversarial, seeds, accepted, draws)
                preds_8bit, right_8bit, _, finite_8bit = self._judge(
                    defended, round_to_8bit(adversarial).to(adversarial.dtype), seeds, accepted, draws)
                non_finite = [bool(result.non_finite[j]) or not finite[j] for j in range(len(batch))]
                records = []
                for j, index in enumerate(batch):
                    correct = right[j] and not non_finite[j]  # a NaN is never robustness
                    records.append(AttackRecord(
                        model=model, defense=defense, attack=plan.label, index=index, job=job.key,
                        label=clean[index].label, clean_correct=True, status="attacked", correct=correct,
                        adv_pred=int(preds[j]), fooled=bool(result.fooled[j]), norm=float(result.norms[j]),
                        grad_evals=int(result.grad_evals[j]), forward_evals=int(result.forward_evals[j]),
                        adv_pred_8bit=int(preds_8bit[j]),
                        correct_8bit=right_8bit[j] and finite_8bit[j] and not non_finite[j],
                        image=self.image_id(index), non_finite=non_finite[j], draws=draws,
                        correct_draws=None if right_draws is None else (0 if non_finite[j] else right_draws[j]),
                    ))
                    if not correct:
                        broken[index] = in_cascade[index] = True
                    if keep or index < self.spec.gallery:
                        save_png(adversarial[j], adversarial_path(self.out_dir, model, defense, plan.label, index))
                self._remember_records(records)
                store.append(records)
                self.stats["computed_records"] += len(records)
                bar.update(len(batch))
        if reuse:
            self._batch_logits = kept
        elapsed = time.perf_counter() - started
        self.stats["attack_seconds"] += elapsed
        key = seconds_key(model, defense, plan.label)
        self.stats["seconds_by_attack"][key] = self.stats["seconds_by_attack"].get(key, 0.0) + elapsed

    def _remember_records(self, records: Sequence[AttackRecord]) -> None:
        for record in records:
            self._row_records.setdefault(record.attack, {})[record.index] = record

    def _twin_records(self, job: Job, defended: nn.Module, todo: Sequence[int],
                      done: Mapping[Key, Record]) -> Optional[List[AttackRecord]]:
        """The records of ``todo`` taken from an earlier attack of the row that is the same attack on this model
        (``AttackPlan.same_attack_as``: e.g. 'BPDA C&W-L2' on a model without a concealment layer, where BPDA is
        plain autograd), relabelled as this job's; None when there is no such attack or it lacks an image.

        They are the records this job would compute: the same attack on the same batches (the spec-wide cascade
        off, so both attacked every clean-correct image; batches are blocks of image index) with the same seeds,
        judged by the same deterministic model. Rows with random layers always compute (their draws follow the
        calls). The saved adversarial PNGs are copied along; where one is missing the job computes.
        """
        plan = job.plan
        assert plan is not None
        if self.spec.cascade or job.defense.random or random_layers(defended):
            return None
        model, defense = job.model.label, job.defense.label
        keep = plan.keep or self.spec.keep_adversarial
        for other in self.jobs:
            if other is job:
                return None
            if (other.plan is None or other.labels[:2] != job.labels[:2]
                    or not plan.same_attack_as(other.plan, defended)):
                continue
            label = other.plan.label
            found: List[AttackRecord] = []
            for i in todo:
                record = self._row_records.get(label, {}).get(i) or done.get((model, defense, label, i))
                if (not isinstance(record, AttackRecord) or record.status != "attacked"
                        or record.image != self.image_id(i)
                        or ((keep or i < self.spec.gallery)
                            and not adversarial_path(self.out_dir, model, defense, label, i).is_file())):
                    break
                found.append(dataclasses.replace(record, attack=plan.label, job=job.key))
            else:
                for record in found:
                    if keep or record.index < self.spec.gallery:
                        target = adversarial_path(self.out_dir, model, defense, plan.label, record.index)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(adversarial_path(self.out_dir, model, defense, label, record.index), target)
                log.info("%s/%s %s: the same attack as %s on this model; its %d record(s) reused",
                         model, defense, plan.label, label, len(found))
                return found
        return None

    @staticmethod
    def _reuses_clean_logits(job: Job, defended: nn.Module) -> bool:
        """Whether the row's attacks take clean logits the runner already has instead of a forward of their own.

        Only where that changes nothing: a deterministic model (a random defence's attack takes the image's first
        draw in its clean forward; skipping it would shift every later draw) seen through a view whose forward is
        the model's own (plain, BPDA; not transfer, whose attack is judged on the model but crafted on another).
        The logits must be those of the very batch the attack gets: on the CPU a forward's float32 logits change
        in the last bits with the batch's size and content (oneDNN and MKL block the work by batch), while the
        same batch gives the same bits. So a batch reuses the logits of an identical earlier batch of the row
        (the clean pass's, or an earlier attack's); elsewhere the runner makes the forward the attack would have
        made and keeps it for the next attack. An image with several accepted labels (attacked alone through an
        ``AcceptedLabels`` view with other logits) makes its own.
        """
        plan = job.plan
        return (plan is not None and not job.defense.random and not random_layers(defended)
                and plan.view in ("plain", "bpda") and plan.attack != "transfer")

    # the whole run -------------------------------------------------------------------------------------
    def run(self) -> Dict[Key, Record]:
        """Evaluate everything not yet in the folder; returns every record of the folder (all processes merged)."""
        self.dist, device_name = setup_distributed(self.spec.device)
        lock = FolderLock(self.out_dir)
        error: Optional[BaseException] = None
        try:
            self.device = resolve_device(device_name)
            if self.dist.rank == 0:
                lock.acquire()
            self.prepare()
        except GradconcealError as caught:
            error = caught
        if not self.dist.all_ok(error is None, self.device) or error is not None:
            lock.release()
            if error is not None:
                raise error
            raise GradconcealError("another process of this torchrun job failed during set-up; see its error")
        try:
            return self._run_locked()
        finally:
            lock.release()

    def _run_locked(self) -> Dict[Key, Record]:
        if self.dist.rank == 0:
            unpack_archive(self.out_dir)
        self.dist.barrier()
        store = RecordStore(self.out_dir, rank=self.dist.rank)
        error: Optional[GradconcealError] = None
        try:
            done, drop = self._reconcile(store.load())
        except GradconcealError as caught:
            error, done, drop = caught, {}, []
        if not self.dist.all_ok(error is None, self.device):
            raise error or GradconcealError("another process of this torchrun job refused the folder; see its error")
        if self.dist.rank == 0:
            if drop:
                store.rewrite(done.values())
                log.warning("dropped %d record(s) of another configuration (--recompute)", len(drop))
            self.stats["seconds_by_attack"] = self._earlier_attack_seconds()
            if self._missing(done):
                write_job_configs(self.out_dir, {job.key: job.config for job in self.jobs})
                self._mark_report_stale()
                subsets = {plan.label: plan.images(self.n_images) for plan in self.plans
                           if plan.images(self.n_images) < self.n_images}
                for note in uneven_subsets(subsets, self.spec.batch_size, self.dist.world_size):
                    log.warning("%s", note)
        self.dist.barrier()
        done = store.load()
        shard = self._shard()
        log.info("evaluating %d image(s) x %d model(s) x %d defence(s) x %d attack(s)%s; %d record(s) already done",
                 self.n_images, len(self.spec.models), len(self.spec.defenses), len(self.plans),
                 f" on {self.dist.world_size} processes" if self.dist.active else "", len(done))
        bases: Dict[str, nn.Module] = {}
        clean: Dict[int, CleanRecord] = {}
        broken: Dict[int, bool] = {}
        cascades: Dict[str, Dict[int, bool]] = {}
        attacker_base: Optional[nn.Module] = None
        attacked: Dict[Tuple[str, str], nn.Module] = {}
        with store:
            for job in self.jobs:
                row = (job.model.label, job.defense.label)
                if job.model.label not in bases:
                    bases.clear()  # one model in memory at a time
                    kept, self._loaded = self._loaded, None
                    base = bases[job.model.label] = (kept[1] if kept is not None and kept[0] == job.model.label
                                                     else self._load_model(job.model))
                    self.class_names[job.model.label] = (getattr(base, "class_names", None)
                                                         or getattr(self.dataset, "class_names", None))
                    attacker_base = self._attacker_base(base)
                if job.plan is None:  # a new row: its clean pass
                    defended = build_defended(bases[job.model.label], job.defense, self.image_size)
                    self.defended[row] = defended  # layers hold no tensors
                    if attacker_base is not None and attacker_base is not defended.base:  # the same layer objects
                        attacked[row] = DefendedModel(attacker_base, list(defended.defenses)).eval()
                    clean, broken, cascades = self._clean_pass(job, defended, shard, done, store), {}, {}
                    self._row_records = {}
                    continue
                self._attack_pass(job, self.defended[row], shard, clean,
                                  broken if job.plan.group != "sweep" else {}, done, store, cascades, attacked.get(row))
        self.dist.barrier()
        if self.dist.rank == 0:
            merged = store.merge_parts()
            store.close()
            if merged:
                log.info("merged %d record(s) of the other processes", merged)
        self.dist.barrier()
        records = store.load()
        lost = self._missing(records)
        if lost:
            raise GradconcealError(
                f"{lost} record(s) of this run are missing from {self.out_dir} after it finished (was records.jsonl "
                "removed or changed while it ran?); no report was written: rerun the same command to compute them")
        return records
