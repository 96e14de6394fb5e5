"""The runner: every (model, defence) on every attack, one durable record per image, resumable and shardable.

Randomness is per image: sample i uses ``sample_seed(spec.seed, i)`` for the attack's own randomness and
for the draws of random defence layers, so numbers do not depend on batching, on resuming, or on how many
processes share the work. Under ``torchrun`` each process takes every ``world_size``-th image, writes its
own records file, and rank 0 merges them and writes the report.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from gradconceal.defenses import DefendedModel, GradientConcealment, RandomResizePad
from gradconceal.errors import GradconcealError
from gradconceal.evaluation.attackplan import applicable, build_attack, plan_attacks
from gradconceal.evaluation.spec import CHALLENGE_MIN_RATIO, CLEAN_LABEL, AttackPlan, DefenseEntry, EvalSpec, ModelEntry, sample_seeds
from gradconceal.evaluation.store import FolderLock, Key, RecordStore, record_key, unpack_archive

log = logging.getLogger(__name__)

# Bumped whenever the meaning of a record changes, so that a resume never mixes the two.
RECORDS_VERSION = 1

# What the report of a finished run consists of (written last, atomically, from the records).
REPORT_FILES = ("report.md", "results.json", "results.csv")

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


# -- small helpers --------------------------------------------------------------------------------------
def safe_name(text: str) -> str:
    """A label as one file name inside the output folder: anything but letters, digits and ._+- becomes '_',
    and a leading dot too, so that no label ('..', '../x', '/abs') can name a folder outside it or a hidden file."""
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", text) or "_"
    return "_" + name[1:] if name.startswith(".") else name


def adversarial_path(out_dir: Path, model: str, defense: str, attack: str, index: int) -> Path:
    """Where the 8-bit PNG of one adversarial image is kept."""
    return out_dir / "adversarial" / safe_name(model) / safe_name(defense) / safe_name(attack) / f"{index:06d}.png"


def resolve_device(name: str) -> torch.device:
    """The torch device of a spec's ``device`` (``auto``: CUDA when present); clear error when it is missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GradconcealError(f"device {name!r} asked for, but no CUDA device is available (use 'cpu' or 'auto')")
        index = int(name.split(":", 1)[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise GradconcealError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise GradconcealError("device 'mps' asked for, but it is not available (use 'cpu' or 'auto')")
    return torch.device(name)


def build_defended(base: nn.Module, defense: DefenseEntry, image_size: Sequence[int]) -> DefendedModel:
    """The defence's input layers in front of ``base`` (which stays shared, not copied)."""
    layers: List[nn.Module] = []
    if defense.kind in ("gcm", "challenge"):
        layers.append(GradientConcealment(w=defense.w, epsilon=defense.epsilon))
    if defense.kind in ("resize-pad", "challenge"):
        size = int(image_size[-1])
        if int(image_size[-2]) != size:
            raise GradconcealError(f"defence {defense.label!r}: resize-and-pad needs square images, got {tuple(image_size)}")
        layers.append(RandomResizePad(size=size, min_size=resize_pad_min_size(defense, size)))
    return DefendedModel(base, layers).eval()


def resize_pad_min_size(defense: DefenseEntry, size: int) -> int:
    """The defence's smallest resized side: as given, else the challenge's 218/224 of ``size`` (at most size-1)."""
    if defense.min_size is not None:
        if not 0 < defense.min_size < size:
            raise GradconcealError(f"defence {defense.label!r}: min_size must be in 1..{size - 1} for {size}-pixel images, "
                                   f"got {defense.min_size}")
        return defense.min_size
    return max(1, min(size - 1, int(size * CHALLENGE_MIN_RATIO)))


@contextlib.contextmanager
def seeded_randomness(model: nn.Module, seeds: Sequence[int]) -> Iterator[None]:
    """Within the block, every random resize-and-pad layer of ``model`` draws per sample from ``seeds``.

    Attacks may call the model on an empty sub-batch once every sample is fooled; such a call passes
    through without a draw (the layer itself would refuse a batch that does not match its seeds).
    """
    with contextlib.ExitStack() as stack:
        for module in model.modules():
            if isinstance(module, RandomResizePad):
                stack.enter_context(module.per_sample_seeds(seeds))
                stack.enter_context(_empty_batches_pass(module))
        yield


@contextlib.contextmanager
def _empty_batches_pass(layer: RandomResizePad) -> Iterator[None]:
    forward = layer.forward

    def guarded(x: Tensor) -> Tensor:
        return x if x.shape[0] == 0 else forward(x)

    layer.forward = guarded  # type: ignore[method-assign]
    try:
        yield
    finally:
        del layer.forward  # back to the class's forward


def job_hash(config: Mapping[str, Any]) -> str:
    """A short fingerprint of everything that decides a job's records."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def round_to_8bit(images: Tensor) -> Tensor:
    """Pixels rounded to the 256 levels a saved PNG holds."""
    return torch.round(images.clamp(0, 1) * 255) / 255


def save_png(image: Tensor, path: Path) -> None:
    """Save one C x H x W image in [0, 1] as an 8-bit PNG (grey or RGB)."""
    from PIL import Image

    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    picture = Image.fromarray(array[0].numpy(), mode="L") if array.shape[0] == 1 else Image.fromarray(
        array.permute(1, 2, 0).numpy())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path)
    except OSError as error:
        raise GradconcealError(f"cannot write adversarial image {path}: {error}; finished records are kept, "
                               "rerun to resume") from None


# -- distributed ----------------------------------------------------------------------------------------
@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def all_ok(self, ok: bool, device: torch.device) -> bool:
        """True when every process reports ``ok`` (so that one process's error stops all, instead of a hang)."""
        if not self.active:
            return ok
        flag = torch.tensor([1 if ok else 0], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item())


def setup_distributed(device_name: str) -> Tuple[Distributed, str]:
    """Join the torchrun job when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA); returns it and the device name."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(), device_name
    import torch.distributed as dist

    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device_name = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size()), device_name


# -- the runner -----------------------------------------------------------------------------------------
def seconds_key(model: str, defense: str, attack: str) -> str:
    """The key of a job in ``attack_seconds_by_job``: 'model/defence/attack'."""
    return f"{model}/{defense}/{attack}"


class Runner:
    """Runs one spec into an output folder; ``run()`` returns every record of the folder."""

    def __init__(
        self,
        spec: EvalSpec,
        out_dir: Path,
        *,
        quiet: bool = False,
        models: Optional[Mapping[str, nn.Module]] = None,
    ) -> None:
        self.spec = spec
        self.out_dir = Path(out_dir)
        self.quiet = quiet
        self.user_models = dict(models or {})
        self.dataset: Any = None
        self.plans: List[AttackPlan] = []
        self.dist = Distributed()
        self.device = torch.device("cpu")
        self.defended: Dict[Tuple[str, str], DefendedModel] = {}
        self.class_names: Dict[str, Optional[List[str]]] = {}
        self._restore: List[Any] = []
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
        self.plans = plan_attacks(self.spec, self.image_size)
        for defense in self.spec.defenses:
            if defense.random:
                build_defended(nn.Identity(), defense, self.image_size)  # checks min_size against the image size

    def _job_config(self, model: ModelEntry, defense: DefenseEntry, plan: Optional[AttackPlan]) -> Dict[str, Any]:
        user = model.name in self.user_models
        return {
            "records_version": RECORDS_VERSION,
            "model": {"in_memory": model.name} if user else model.to_dict(),
            "defense": defense.to_dict(),
            "attack": plan.config() if plan else CLEAN_LABEL,
            "data": {"source": self.spec.data.source, "split": self.spec.data.split},
            "seed": self.spec.seed,
            "dtype": self.spec.dtype,
        }

    def _check_resumable(self, done: Mapping[Key, Mapping[str, Any]]) -> None:
        """Refuse to mix records of a different configuration under the same labels."""
        expected: Dict[Tuple[str, str, str], str] = {}
        for model in self.spec.models:
            for defense in self.spec.defenses:
                expected[(model.label, defense.label, CLEAN_LABEL)] = job_hash(self._job_config(model, defense, None))
                for plan in self.plans:
                    expected[(model.label, defense.label, plan.label)] = job_hash(self._job_config(model, defense, plan))
        for key, record in done.items():
            want = expected.get(key[:3])
            if want is not None and record.get("job") != want:
                raise GradconcealError(
                    f"{self.out_dir} holds records of another configuration for {key[0]}/{key[1]}/{key[2]}; "
                    "resume only with the same spec (or choose another --out)"
                )

    def _earlier_attack_seconds(self) -> Dict[str, float]:
        """Per-job attack seconds in the earlier ``results.json`` here, for this run's jobs whose attack has the
        same configuration (their records are the ones being resumed, so their cost carries over)."""
        current = {plan.label: plan.config() for plan in self.plans}
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

    def _remove_stale_report(self) -> None:
        """Delete the report of an earlier run in this folder: until this run writes its own, a report there
        would look complete while the records change under it (an interrupted run leaves records only)."""
        # with the temporary files a kill can leave while a report is being written (``name.XXXX.tmp``)
        stale = [self.out_dir / name for name in REPORT_FILES]
        stale += [p for name in REPORT_FILES for p in self.out_dir.glob(f"{name}.*.tmp")]
        for path in stale:
            try:
                path.unlink(missing_ok=True)
            except OSError as error:
                raise GradconcealError(f"cannot remove the earlier report {path}: {error}") from None

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
            raise GradconcealError(
                f"model {entry.label!r} takes images of size {tuple(size)}, but {self.spec.data.source} gives "
                f"{self.image_size}; choose a matching data source"
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
        training = model.training
        place = (first.device, first.dtype) if first is not None else None

        def restore() -> None:
            model.train(training)
            if place is not None:
                model.to(*place)
            for parameter, flag in flags:
                parameter.requires_grad_(flag)

        self._restore.append(restore)

    def restore_user_models(self) -> None:
        """Give the caller's in-memory models back as they came (mode, device, dtype, requires_grad)."""
        while self._restore:
            self._restore.pop()()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.spec.dtype in ("bfloat16", "float16"):
            return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.spec.dtype])
        return contextlib.nullcontext()

    # data ----------------------------------------------------------------------------------------------
    def _images(self, indices: Sequence[int]) -> Tensor:
        dtype = torch.float64 if self.spec.dtype == "float64" else torch.float32
        return torch.stack([self.dataset[i][0] for i in indices]).to(self.device, dtype)

    def _accepted(self, index: int) -> List[int]:
        label_sets = getattr(self.dataset, "label_sets", None)
        if label_sets is not None:
            return sorted(int(v) for v in label_sets[index])
        return [int(self.dataset.targets[index])]

    def _predict(self, model: nn.Module, images: Tensor, seeds: Sequence[int]) -> List[int]:
        with torch.no_grad(), seeded_randomness(model, seeds), self._autocast():
            return model(images).argmax(dim=1).tolist()

    def _bar(self, total: int, desc: str):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="img", leave=False, dynamic_ncols=True,
                    disable=self.quiet or self.dist.rank != 0 or total == 0)

    # passes --------------------------------------------------------------------------------------------
    def _clean_pass(self, model: ModelEntry, defense: DefenseEntry, defended: nn.Module, shard: Sequence[int],
                    done: Mapping[Key, Mapping[str, Any]], store: RecordStore) -> Dict[int, Mapping[str, Any]]:
        job = job_hash(self._job_config(model, defense, None))
        clean = {i: done[(model.label, defense.label, CLEAN_LABEL, i)] for i in shard
                 if (model.label, defense.label, CLEAN_LABEL, i) in done}
        todo = [i for i in shard if i not in clean]
        with self._bar(len(todo), f"{model.label}/{defense.label} clean") as bar:
            for start in range(0, len(todo), self.spec.batch_size):
                batch = todo[start:start + self.spec.batch_size]
                preds = self._predict(defended, self._images(batch), sample_seeds(self.spec.seed, batch))
                records = []
                for index, pred in zip(batch, preds):
                    accepted = self._accepted(index)
                    primary = int(self.dataset.targets[index])
                    records.append({
                        "model": model.label, "defense": defense.label, "attack": CLEAN_LABEL, "index": index,
                        "job": job, "pred": int(pred), "correct": int(pred) in accepted, "accepted": accepted,
                        "primary": primary, "label": int(pred) if int(pred) in accepted else primary,
                    })
                store.append(records)
                self.stats["computed_records"] += len(records)
                clean.update((r["index"], r) for r in records)
                bar.update(len(batch))
        return clean

    def _attack_pass(self, model: ModelEntry, defense: DefenseEntry, plan: AttackPlan, defended: DefendedModel,
                     shard: Sequence[int], clean: Mapping[int, Mapping[str, Any]], broken: Dict[int, bool],
                     done: Mapping[Key, Mapping[str, Any]], store: RecordStore) -> None:
        job = job_hash(self._job_config(model, defense, plan))
        head = {"model": model.label, "defense": defense.label, "attack": plan.label, "job": job}
        todo, skipped = [], []
        for i in shard:
            key = (model.label, defense.label, plan.label, i)
            if key in done:
                if not done[key]["correct"]:
                    broken[i] = True
                continue
            c = clean[i]
            if not c["correct"]:
                status = "clean-incorrect"
            elif self.spec.cascade and broken.get(i):
                status = "cascade-skipped"
            else:
                todo.append(i)
                continue
            skipped.append({**head, "index": i, "label": c["label"], "clean_correct": bool(c["correct"]),
                            "status": status, "adv_pred": None, "correct": False, "fooled": None, "norm": None,
                            "grad_evals": 0, "forward_evals": 0, "adv_pred_8bit": None, "correct_8bit": None})
        store.append(skipped)
        self.stats["computed_records"] += len(skipped)  # written by this run, though no attack ran on them
        if not todo:
            return
        keep = plan.keep or self.spec.keep_adversarial
        started = time.perf_counter()
        # An image with several accepted labels needs its own view of the model: it is attacked alone. A
        # random defence draws per sample from the image's seed and the calls it took part in, so its
        # images share batches (the attacks tell the layer which samples each call holds).
        single = [[i] for i in todo if len(clean[i]["accepted"]) > 1]
        single_set = {batch[0] for batch in single}
        rest = [i for i in todo if i not in single_set]
        batches = single + [rest[s:s + self.spec.batch_size] for s in range(0, len(rest), self.spec.batch_size)]
        shared = build_attack(plan, defended) if rest else None
        with self._bar(len(todo), f"{model.label}/{defense.label} {plan.label}") as bar:
            for batch in batches:
                if batch[0] in single_set:
                    first = clean[batch[0]]
                    attack = build_attack(plan, defended, first["accepted"], int(first["label"]))
                else:
                    attack = shared
                seeds = sample_seeds(self.spec.seed, batch)
                images = self._images(batch)
                labels = torch.tensor([int(clean[i]["label"]) for i in batch], device=self.device)
                with self._autocast(), seeded_randomness(defended, seeds):
                    result = attack.perturb(images, labels, sample_seeds=seeds)
                adversarial = result.adversarial.detach()
                preds = self._predict(defended, adversarial, seeds)
                preds_8bit = self._predict(defended, round_to_8bit(adversarial).to(adversarial.dtype), seeds)
                records = []
                for j, index in enumerate(batch):
                    accepted = clean[index]["accepted"]
                    correct = int(preds[j]) in accepted
                    records.append({
                        **head, "index": index, "label": int(clean[index]["label"]), "clean_correct": True,
                        "status": "attacked", "adv_pred": int(preds[j]), "correct": correct,
                        "fooled": bool(result.fooled[j]), "norm": float(result.norms[j]),
                        "grad_evals": int(result.grad_evals[j]), "forward_evals": int(result.forward_evals[j]),
                        "adv_pred_8bit": int(preds_8bit[j]), "correct_8bit": int(preds_8bit[j]) in accepted,
                    })
                    if not correct:
                        broken[index] = True
                    if keep or index < self.spec.gallery:
                        save_png(adversarial[j], adversarial_path(self.out_dir, model.label, defense.label, plan.label, index))
                store.append(records)
                self.stats["computed_records"] += len(records)
                bar.update(len(batch))
        elapsed = time.perf_counter() - started
        self.stats["attack_seconds"] += elapsed
        key = seconds_key(model.label, defense.label, plan.label)
        self.stats["seconds_by_attack"][key] = self.stats["seconds_by_attack"].get(key, 0.0) + elapsed

    # the whole run -------------------------------------------------------------------------------------
    def run(self) -> Dict[Key, Dict[str, Any]]:
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

    def _run_locked(self) -> Dict[Key, Dict[str, Any]]:
        if self.dist.rank == 0:
            unpack_archive(self.out_dir)
        self.dist.barrier()
        store = RecordStore(self.out_dir, rank=self.dist.rank)
        done = store.load()
        self._check_resumable(done)
        if self.dist.rank == 0:
            self.stats["seconds_by_attack"] = self._earlier_attack_seconds()  # read before the report goes
            self._remove_stale_report()
        shard = list(range(self.dist.rank, self.n_images, self.dist.world_size))
        table = [p for p in self.plans if p.group != "sweep"]
        ordered = table + [p for p in self.plans if p.group == "sweep"]
        log.info("evaluating %d image(s) x %d model(s) x %d defence(s) x %d attack(s)%s; %d record(s) already done",
                 self.n_images, len(self.spec.models), len(self.spec.defenses), len(self.plans),
                 f" on {self.dist.world_size} processes" if self.dist.active else "", len(done))
        with store:
            for model in self.spec.models:
                base = self._load_model(model)
                self.class_names[model.label] = getattr(base, "class_names", None) or getattr(self.dataset, "class_names", None)
                for defense in self.spec.defenses:
                    defended = build_defended(base, defense, self.image_size)  # layers hold no tensors
                    self.defended[(model.label, defense.label)] = defended
                    clean = self._clean_pass(model, defense, defended, shard, done, store)
                    broken: Dict[int, bool] = {}
                    for plan in ordered:
                        if not applicable(plan, defense):
                            continue
                        self._attack_pass(model, defense, plan, defended, shard, clean,
                                          broken if plan.group != "sweep" else {}, done, store)
        self.dist.barrier()
        if self.dist.rank == 0:
            merged = store.merge_parts()
            store.close()
            if merged:
                log.info("merged %d record(s) of the other processes", merged)
        self.dist.barrier()
        return store.load()


def group_records(records: Mapping[Key, Mapping[str, Any]], model: str, defense: str, n_images: int) -> Dict[str, List[Mapping[str, Any]]]:
    """The records of one row by attack label, limited to the spec's first ``n_images`` images, sorted by index."""
    out: Dict[str, List[Mapping[str, Any]]] = {}
    for key, record in records.items():
        if key[0] == model and key[1] == defense and key[3] < n_images:
            out.setdefault(key[2], []).append(record)
    for values in out.values():
        values.sort(key=record_key)
    return out
