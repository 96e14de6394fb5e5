"""``train(...)``: the challenge recipe as a configurable, resumable, seeded trainer for pixel-space models.

Every batch: per-image augmentation, optional CutMix/MixUp on the clean term, optional FGSM pair and/or PGD
examples computed on the UNDEFENDED network in eval mode (GCM's gradient is noise; add GCM at test time with
``conceal``), one optimiser step, one schedule step. All randomness comes from a trainer generator seeded by
``config.seed`` (library code that draws from the global RNG runs inside ``fork_rng`` seeded from it), so a
seed fixes the weights on CPU and a resumed run continues exactly where the killed one stopped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from gradconceal.errors import GradconcealError
from gradconceal.folders import FolderLock, require_replaceable
from gradconceal.models.checkpoint import is_gradconceal_checkpoint, save_checkpoint
from gradconceal.models.pixel import PixelModel
from gradconceal.training.adversarial import eval_mode, fgsm_pair, pgd_linf, random_other_classes, undefended
from gradconceal.training.augment import Augmenter
from gradconceal.training.config import TrainConfig, make_config, to_command
from gradconceal.training.data import BatchSource, is_single_set, load_split
from gradconceal.training.optim import build_optimizer, build_scheduler
from gradconceal.training.state import LoopState, load_training_state, read_pointer, save_training_state

log = logging.getLogger(__name__)

FINAL_NAME = "model.safetensors"


@dataclass
class TrainResult:
    """What a training call produced: the trained (undefended) model and the numbers that describe it."""

    model: PixelModel
    config: TrainConfig
    checkpoint: Optional[Path]
    epochs_done: int
    test_accuracy: Optional[float]
    test_images: int
    wall_time_s: float
    history: List[Dict[str, float]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """True when all ``config.epochs`` epochs are done (False after ``stop_after``)."""
        return self.epochs_done >= self.config.epochs


def build_model(config: TrainConfig) -> PixelModel:
    """The config's model, randomly initialised from ``config.seed`` without touching the global RNG."""
    from gradconceal.models.zoo import load_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = load_model(config.model, pretrained=config.pretrained)
    if not isinstance(model, PixelModel):
        raise GradconcealError(f"model {config.model!r} did not load as a pixel-space PixelModel")
    return model


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise GradconcealError("device 'cuda' was asked for but torch sees no CUDA device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _Precision:
    """Mixed precision on CUDA only: bfloat16 autocast where supported, else float16 with a GradScaler."""

    def __init__(self, enabled: bool, device: torch.device) -> None:
        self.enabled = enabled and device.type == "cuda"
        self.device_type = device.type
        self.dtype = torch.bfloat16
        self.scaler: Optional[torch.amp.GradScaler] = None
        if self.enabled and not torch.cuda.is_bf16_supported():
            self.dtype = torch.float16
            self.scaler = torch.amp.GradScaler("cuda")

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context for forward passes (a no-op on CPU)."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def step(self, loss: Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward and optimiser step, through the scaler when float16 needs one."""
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


def train(
    model: Union[str, nn.Module] = "small:cnn",
    *,
    preset: str = "default",
    out_dir: Union[str, Path] = "runs/train",
    resume: bool = False,
    stop_after: Optional[int] = None,
    export: Union[str, Path, None] = None,
    progress: bool = True,
    **settings: Any,
) -> TrainResult:
    """Train ``model`` (a zoo name, or a PixelModel trained in place) with ``preset`` plus ``settings``.

    Writes a checkpoint pair to ``out_dir`` after every epoch; ``resume=True`` continues the run found there
    (its config must match). ``stop_after`` ends this call after that many epochs (resume later). When all
    epochs are done, ``out_dir/model.safetensors`` (and ``export`` if given) hold the final model with its
    config, test accuracy, wall time and the command that retrains it in the metadata. A DefendedModel is
    trained through its undefended ``base``; defences such as GCM act at test time only. The trained model is
    returned in eval mode.
    """
    if stop_after is not None and (not isinstance(stop_after, int) or stop_after < 1):
        raise GradconcealError(f"stop_after must be an integer >= 1 or None, got {stop_after!r}")
    if export is not None:  # refuse the user's own file there before training, not after
        require_replaceable(export, is_gradconceal_checkpoint, "a checkpoint")
    if isinstance(model, str):
        config = make_config(preset, model=model, **settings)
        net = build_model(config)
    elif isinstance(model, nn.Module):
        base = undefended(model)
        if not isinstance(base, PixelModel):
            raise GradconcealError(
                f"train needs a PixelModel (from load_model) or a zoo name, got {type(base).__name__}"
            )
        net = base
        config = make_config(preset, model=net.architecture or "custom", **settings)
    else:
        raise GradconcealError(f"model must be a zoo name or an nn.Module, got {type(model).__name__}")
    out = Path(out_dir)
    device = resolve_device(config.device)
    train_source = BatchSource(load_split(config.data, "train", config.train_limit))
    if config.test_data is None and is_single_set(config.data):
        log.warning("data %r has no test split: test accuracy is measured on the training images; "
                    "pass test_data (--test-data) for a held-out folder", config.data)  # fmt: skip
    test_source = BatchSource(load_split(config.test_data or config.data, "test", config.test_limit))
    expected = tuple(int(v) for v in (getattr(net, "input_size", None) or ()))
    for source, name in ((train_source, config.data), (test_source, config.test_data or config.data)):
        if expected and tuple(source.image_size) != expected and not _accepts_size(net, tuple(source.image_size)):
            raise GradconcealError(f"data {name!r} gives images of size {tuple(source.image_size)}, but model "
                                   f"{config.model!r} takes {expected}; choose matching data or another model")
    num_classes = net.num_classes
    if num_classes is None and train_source.labels is not None:
        num_classes = int(train_source.labels.max()) + 1
    if not num_classes:
        raise GradconcealError(f"model {config.model!r} has no class names; cannot tell its number of classes")
    net.to(device)
    steps_per_epoch = math.ceil(len(train_source) / config.batch_size)
    optimizer = build_optimizer(config, net)
    scheduler = build_scheduler(config, optimizer, steps_per_epoch * config.epochs)
    precision = _Precision(config.amp, device)
    generator = torch.Generator().manual_seed(config.seed)
    lock = FolderLock(out).acquire()  # a second run on the same folder refuses instead of interleaving
    try:
        remove_stale_temporaries(out)
        loop = _start_or_resume(out, resume, config, net, optimizer, scheduler, precision, generator)
        augmenter = Augmenter(config, train_source.image_size, num_classes)
        first_epoch = loop.epoch
        test_accuracy = loop.history[-1]["test_accuracy"] if loop.history else None
        for epoch in range(loop.epoch, config.epochs):
            if stop_after is not None and epoch - first_epoch >= stop_after:
                break
            started = time.perf_counter()
            loss, accuracy = _run_epoch(
                net, train_source, config, augmenter, optimizer, scheduler, precision, device, num_classes, generator,
                desc=f"epoch {epoch + 1}/{config.epochs}", progress=progress,
            )  # fmt: skip
            test_accuracy = evaluate_accuracy(net, test_source, device, precision.autocast)
            elapsed = time.perf_counter() - started
            loop.epoch = epoch + 1
            loop.rng_state = generator.get_state()
            loop.wall_time_s += elapsed
            loop.history.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": loss,
                    "train_accuracy": accuracy,
                    "test_accuracy": test_accuracy,
                    "seconds": elapsed,
                }
            )
            log.info(
                "epoch %d/%d: train loss %.4f, train acc %.4f, test acc %.4f (%.0f s)",
                epoch + 1, config.epochs, loop.history[-1]["train_loss"], loop.history[-1]["train_accuracy"],
                test_accuracy, elapsed,
            )  # fmt: skip
            save_training_state(
                out,
                model=net,
                architecture=net.architecture or config.model,
                config=config.to_dict(),
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=precision.scaler,
                loop=loop,
            )
        result = TrainResult(
            model=net,
            config=config,
            checkpoint=None,
            epochs_done=loop.epoch,
            test_accuracy=test_accuracy,
            test_images=len(test_source),
            wall_time_s=loop.wall_time_s,
            history=loop.history,
        )
        if result.finished:
            result.checkpoint = _write_final(result, out, preset, export)
        net.eval()
        return result
    finally:
        lock.release()


def _accepts_size(net: nn.Module, size: Tuple[int, ...]) -> bool:
    """True when ``net`` runs on images of ``size`` (convolutional nets take other sizes than their default)."""
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, *size))
        return True
    except (RuntimeError, ValueError):
        return False
    finally:
        net.train(was_training)


def remove_stale_temporaries(out: Path) -> None:
    """Delete the temporary files a kill during a save left behind (only the lock holder runs, so none is live)."""
    for path in list(out.glob("*.safetensors.*.tmp")) + list(out.glob("*.json.*.tmp")):
        try:
            path.unlink()
            log.info("removed %s, left by an interrupted save", path.name)
        except OSError as error:
            log.warning("cannot remove %s: %s", path, error)


def _run_epoch(
    net: PixelModel,
    source: BatchSource,
    config: TrainConfig,
    augmenter: Augmenter,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    precision: "_Precision",
    device: torch.device,
    num_classes: int,
    generator: torch.Generator,
    *,
    desc: str,
    progress: bool,
) -> Tuple[float, float]:
    """One pass over the training data in an order drawn from ``generator``; returns (mean loss, accuracy)."""
    order = torch.randperm(len(source), generator=generator)
    net.train()
    totals = {"loss": 0.0, "correct": 0.0, "seen": 0}
    steps = math.ceil(len(source) / config.batch_size)
    bar = tqdm(source.batches(order, config.batch_size), total=steps, desc=desc, disable=not progress, leave=False)
    for images, labels in bar:
        step_seed = int(torch.randint(0, 2**62, (), generator=generator))
        loss, correct = _train_step(
            net, images, labels, config, augmenter, optimizer, precision, device, num_classes, step_seed
        )
        scheduler.step()
        totals["loss"] += loss * len(labels)
        totals["correct"] += correct
        totals["seen"] += len(labels)
        bar.set_postfix(loss=f"{totals['loss'] / totals['seen']:.3f}", acc=f"{totals['correct'] / totals['seen']:.3f}")
    return totals["loss"] / totals["seen"], totals["correct"] / totals["seen"]


def _start_or_resume(
    out: Path,
    resume: bool,
    config: TrainConfig,
    net: PixelModel,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    precision: _Precision,
    generator: torch.Generator,
) -> LoopState:
    """A fresh loop state, or the one restored from ``out`` (refusing a run whose config differs)."""
    pointer = read_pointer(out)
    if pointer is None:
        if resume:
            log.info("nothing to resume in %s: starting a new run", out)
        return LoopState()
    if not resume:
        raise GradconcealError(
            f"{out} already holds a training run (epoch {pointer['epoch']}); pass resume=True (--resume) "
            "to continue it, or choose another out_dir (--out)"
        )
    saved = pointer.get("config", {})
    current = config.to_dict()
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise GradconcealError(f"cannot resume the run in {out} with a different config ({details})")
    loop = load_training_state(out, model=net, optimizer=optimizer, scheduler=scheduler, scaler=precision.scaler)
    if loop.rng_state is not None:
        generator.set_state(loop.rng_state)
    log.info("resuming %s after epoch %d", out, loop.epoch)
    return loop


def _train_step(
    net: PixelModel,
    images: Tensor,
    labels: Tensor,
    config: TrainConfig,
    augmenter: Augmenter,
    optimizer: torch.optim.Optimizer,
    precision: _Precision,
    device: torch.device,
    num_classes: int,
    step_seed: int,
) -> Tuple[float, float]:
    """One optimiser step; returns (loss, number of correct predictions on the first loss term)."""
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(step_seed)
        draws = torch.Generator().manual_seed(step_seed ^ 0x5DEECE66D)
        images = augmenter.images(images).to(device)
        labels = labels.to(device)
        mixed = augmenter.mixed(images, labels) if config.clean_weight > 0 else None
        adversarial = _adversarial_examples(net, images, labels, config, precision, num_classes, draws)
        terms: List[tuple] = []
        if config.clean_weight > 0:
            clean_images, clean_targets = mixed if mixed is not None else (images, labels)
            terms.append((config.clean_weight, clean_images, clean_targets))
        terms.extend(adversarial)
        loss = torch.zeros((), device=device)
        correct = 0.0
        for index, (weight, batch, targets) in enumerate(terms):
            with precision.autocast():
                logits = net(batch).float()
            loss = loss + weight * F.cross_entropy(logits, targets, label_smoothing=config.label_smoothing)
            if index == 0:
                hard = targets.argmax(1) if targets.ndim == 2 else targets
                correct = float((logits.argmax(1) == hard).sum())
        optimizer.zero_grad(set_to_none=True)
        precision.step(loss, optimizer)
    return float(loss.detach()), correct


def _adversarial_examples(
    net: PixelModel,
    images: Tensor,
    labels: Tensor,
    config: TrainConfig,
    precision: _Precision,
    num_classes: int,
    draws: torch.Generator,
) -> List[tuple]:
    """The FGSM pair and/or PGD examples as weighted loss terms, made on the undefended net in eval mode."""
    terms: List[tuple] = []
    if not (config.fgsm or config.pgd):
        return terms
    with eval_mode(net):
        if config.fgsm:
            eps_values = torch.linspace(config.fgsm_eps_min, config.fgsm_eps_max, config.fgsm_eps_count)
            eps = float(eps_values[int(torch.randint(config.fgsm_eps_count, (), generator=draws))])
            targets = random_other_classes(labels, num_classes, draws)
            untargeted, targeted = fgsm_pair(net, images, labels, eps, targets, autocast=precision.autocast)
            terms.append((config.fgsm_weight, untargeted, labels))
            if config.fgsm_targeted:
                terms.append((config.fgsm_weight, targeted, labels))
        if config.pgd:
            adversarial = pgd_linf(
                net,
                images,
                labels,
                eps=config.pgd_eps,
                steps=config.pgd_steps,
                step_size=config.pgd_alpha,
                generator=draws,
                autocast=precision.autocast,
            )
            terms.append((config.pgd_weight, adversarial, labels))
    return terms


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module,
    source: BatchSource,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    batch_size: int = 500,
) -> float:
    """Top-1 accuracy of ``model`` on every image of ``source`` (eval mode, restored afterwards)."""
    correct = 0
    with eval_mode(model):
        for images, labels in source.batches(torch.arange(len(source)), batch_size):
            with autocast():
                logits = model(images.to(device))
            correct += int((logits.argmax(1).cpu() == labels).sum())
    return correct / len(source)


def _write_final(result: TrainResult, out: Path, preset: str, export: Union[str, Path, None]) -> Path:
    """Write ``out/model.safetensors`` (and ``export``) with the config, accuracy, time and retraining command."""
    net = result.model
    extra = {
        "training": {
            "preset": preset,
            "config": result.config.to_dict(),
            "epochs": result.epochs_done,
            "history": result.history,
            "device": str(next(net.parameters()).device),
            "cpu_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "test_accuracy": result.test_accuracy,
        "test_images": result.test_images,
        "wall_time_s": round(result.wall_time_s, 1),
        "command": to_command(result.config, preset, out_dir=out, export=export),
    }
    architecture = net.architecture or result.config.model
    final = save_checkpoint(net, out / FINAL_NAME, architecture=architecture, extra=extra)
    if export is not None:
        export = Path(export)
        name = net.model_name
        net.model_name = export.stem
        try:
            save_checkpoint(net, export, architecture=architecture, extra=extra)
        finally:
            net.model_name = name
        log.info("exported %s", export)
    return final
