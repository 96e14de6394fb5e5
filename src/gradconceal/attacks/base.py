"""The attack base class, its per-sample result and the bookkeeping one run shares with the attack's loop.

``Attack.perturb`` owns everything but the attack's own iterations: input checks, skipping samples the
model already gets wrong, counting model evaluations, early stop, projection into the budget and the
[0, 1] box, and the final success decision. Subclasses write ``run(images, labels, state)``.

It also keeps two promises for every attack: a NaN or infinite logit, loss or input gradient is noted per
sample (``AttackResult.non_finite``) and never counted as robustness; and the caller's things are left as
found (the model's buffers and modes, the global random generators: ``gradconceal.preserve``).
"""

from __future__ import annotations

import abc
import contextlib
import logging
from dataclasses import dataclass
from typing import ClassVar, ContextManager, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from gradconceal.attacks import checks
from gradconceal.attacks.losses import LOSSES, attack_loss, is_success, min_classes, ranked_wrong_classes
from gradconceal.attacks.probe import check_model_dtype, check_num_classes, model_label, probe_model
from gradconceal.attacks.randomness import SampleRandom, random_layers, sample_rows, seeded_layers
from gradconceal.attacks.threat import NORMS, Number, ThreatModel
from gradconceal.errors import GradconcealError
from gradconceal.preserve import preserved_model, preserved_rng

logger = logging.getLogger(__name__)

__all__ = ["Attack", "AttackResult", "RunState", "ThreatModel"]


@dataclass
class AttackResult:
    """Per-sample outcome of one attack call; every tensor but ``adversarial`` is on the CPU.

    ``fooled``: the model's prediction on ``adversarial`` is wrong (targeted with explicit targets: is the
    target). Samples the model got wrong on the clean image (``clean_correct`` False) are not attacked:
    their adversarial image is the clean one and ``fooled`` is False. ``grad_evals`` counts input-gradient
    evaluations (one forward + backward each; EOT counts every draw), ``forward_evals`` forward-only
    passes (queries), including the clean check (also when the caller made it and passed ``clean_logits``)
    and the final verification (which a deterministic model skips for images it already judged fooled
    inside the budget). ``stopped_early``: the sample left the batch once fooled, before its step or query
    budget was used up.

    ``non_finite``: the model gave a NaN or infinite logit, loss or input gradient for the sample during
    the attack (or on its final image). Such a sample is never robust, whatever ``fooled`` says:
    ``fooled`` stays True only for an image that fooled the model with finite logits (that image is kept);
    otherwise ``fooled`` is False and ``adversarial`` holds the last candidate if its pixels are finite, the
    clean image if not. Huge but finite gradients (GCM's ~1e12) and zero gradients are not flagged. A model
    whose clean logits are not finite is refused before any attack (``probe.check_logits``).
    """

    adversarial: Tensor
    fooled: Tensor
    norms: Tensor
    grad_evals: Tensor
    forward_evals: Tensor
    clean_correct: Tensor
    stopped_early: Tensor
    threat: ThreatModel
    attack: str
    targets: Optional[Tensor] = None
    # A bool per sample; all False when not given (None is replaced in __post_init__, so readers get a Tensor).
    non_finite: Tensor = None  # type: ignore[assignment]  # the default None never outlives __post_init__

    def __post_init__(self) -> None:
        if self.non_finite is None:
            self.non_finite = torch.zeros_like(self.fooled, dtype=torch.bool)

    def __len__(self) -> int:
        return int(self.fooled.shape[0])

    @property
    def robust(self) -> Tensor:
        """Bool per sample: correct on the clean image, still correct on the adversarial one, and the model's
        logits and gradients stayed finite throughout (a non-finite sample is never robust)."""
        return self.clean_correct & ~self.fooled & ~self.non_finite

    @property
    def robust_accuracy(self) -> float:
        """Share of all samples that stay correct under the attack."""
        return float(self.robust.float().mean())

    @property
    def attack_robustness(self) -> float:
        """The paper's AR: share of the correctly classified samples that stay correct (nan if none)."""
        correct = int(self.clean_correct.sum())
        return float(self.robust.sum()) / correct if correct else float("nan")


class RunState:
    """What one call shares with an attack's loop: labels, targets, randomness, counts and the best images.

    Rows are indices into the batch handed to ``run``. Every model evaluation goes through
    ``loss_gradient`` or ``logits`` so the counts are right; ``record`` keeps the first image that fooled
    each sample; ``drop_fooled`` shrinks the working batch (the only place the loop synchronises).
    """

    def __init__(
        self,
        attack: "Attack",
        images: Tensor,
        labels: Tensor,
        clean_logits: Tensor,
        goal_targets: Optional[Tensor],
        random: SampleRandom,
        sample_seeds: Optional[List[int]],
        positions: Optional[List[int]] = None,
    ) -> None:
        self.model = attack.model
        # where each row sits in the caller's batch, for random layers seeded per sample (None: no such layer)
        self.positions = positions
        self.loss = attack.loss
        self.early_stop = attack.early_stop
        self.check_every = attack.check_every
        self.labels = labels
        self.goal = goal_targets
        self.clean_logits = clean_logits
        self.random = random
        self.sample_seeds = sample_seeds
        self.eot_samples = max(1, int(getattr(attack.model, "eot_samples", 1)))
        count = images.shape[0]
        device = images.device
        self.best = images.clone()
        self.fooled = torch.zeros(count, dtype=torch.bool, device=device)
        self.grad_evals = torch.zeros(count, dtype=torch.int64, device=device)
        self.forward_evals = torch.zeros(count, dtype=torch.int64, device=device)
        self.stopped_early = torch.zeros(count, dtype=torch.bool, device=device)
        # rows whose logits, loss or input gradient were NaN or infinite at some evaluation
        self.non_finite = torch.zeros(count, dtype=torch.bool, device=device)
        self.targets: Optional[Tensor] = None
        if goal_targets is not None:
            self.targets = goal_targets
        elif attack.targeted:
            self.targets = self.wrong_class(0)

    def wrong_class(self, rank: int) -> Tensor:
        """The (rank+1)-th most likely wrong class of every sample on its clean image (rank 0 = runner-up)."""
        return ranked_wrong_classes(self.clean_logits, self.labels, rank + 1)[:, rank]

    def all_rows(self) -> Tensor:
        """Every row of the batch."""
        return torch.arange(self.labels.shape[0], device=self.labels.device)

    def remaining(self) -> Tensor:
        """Rows not fooled yet (synchronises with the device)."""
        return (~self.fooled).nonzero().flatten()

    def loss_gradient(self, rows: Tensor, x: Tensor, loss: Optional[str] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """(loss per sample, input gradient, logits) at ``x`` for ``rows``; EOT averages the loss gradient.

        Gradients are taken with ``torch.autograd.grad`` w.r.t. the input only, so no parameter gradient is
        computed or stored and every graph is freed before the next draw.
        """
        if rows.numel() == 0:  # every row left the batch: no model call (nor a compiled graph for 0 images)
            return x.new_zeros(0), torch.zeros_like(x), self.clean_logits.new_zeros(0, self.clean_logits.shape[1])
        labels = self.labels[rows]
        targets = self.targets[rows] if self.targets is not None else None
        x = x.detach().requires_grad_(True)
        values, grad, logits = self._draw(rows, x, labels, targets, loss or self.loss)
        if self.eot_samples > 1:
            for _ in range(self.eot_samples - 1):
                more_values, more_grad, logits = self._draw(rows, x, labels, targets, loss or self.loss)
                values, grad = values.add_(more_values), grad.add_(more_grad)
            values, grad = values.div_(self.eot_samples), grad.div_(self.eot_samples)
        self.grad_evals.index_add_(0, rows, torch.full_like(rows, self.eot_samples))
        return values, grad, logits

    def _draw(self, rows: Tensor, x: Tensor, labels: Tensor, targets: Optional[Tensor], loss: str) -> Tuple[Tensor, Tensor, Tensor]:
        """One forward + backward: (loss per sample, its input gradient, logits), no graph kept."""
        with torch.enable_grad(), self._holding(rows):
            logits = self.model(x)
            values = attack_loss(loss, logits, labels, targets)
        (grad,) = torch.autograd.grad(values.sum(), x)
        self.note_non_finite(rows, logits, values, grad)
        return values.detach(), grad, logits.detach()

    def note_non_finite(self, rows: Tensor, *per_row: Tensor) -> None:
        """Mark the ``rows`` where any of the per-row tensors (logits, losses, gradients) holds NaN or inf.

        Runs on the device without synchronising; a bool tensor is taken as the mark itself.
        """
        bad = torch.zeros(rows.shape[0], dtype=torch.bool, device=self.non_finite.device)
        for tensor in per_row:
            if tensor.dtype == torch.bool:
                bad |= tensor.to(bad.device)
            else:
                finite = torch.isfinite(tensor.detach())
                bad |= ~(finite.flatten(1).all(dim=1) if finite.ndim > 1 else finite).to(bad.device)
        self.non_finite[rows] = self.non_finite[rows] | bad

    def _holding(self, rows: Tensor) -> ContextManager[None]:
        """Tell the model's per-sample-seeded random layers which samples a call holds (no-op without them)."""
        if self.positions is None:
            return contextlib.nullcontext()
        return sample_rows(self.model, [self.positions[r] for r in rows.tolist()])

    def logits(self, rows: Tensor, x: Tensor) -> Tensor:
        """Logits at ``x`` for ``rows`` without a gradient (one query each)."""
        if rows.numel() == 0:
            return self.clean_logits.new_zeros(0, self.clean_logits.shape[1])
        with torch.no_grad(), self._holding(rows):
            logits = self.model(x)
        self.forward_evals.index_add_(0, rows, torch.ones_like(rows))
        self.note_non_finite(rows, logits)
        return logits

    def loss_values(self, rows: Tensor, logits: Tensor, loss: Optional[str] = None) -> Tensor:
        """The attack's loss per row for ``logits`` (no gradient): what score-based attacks maximise."""
        targets = self.targets[rows] if self.targets is not None else None
        return attack_loss(loss or self.loss, logits, self.labels[rows], targets)

    def success(self, rows: Tensor, logits: Tensor) -> Tensor:
        """Bool per row: ``logits`` meet the attack's goal."""
        return is_success(logits, self.labels[rows], self.goal[rows] if self.goal is not None else None)

    def record(self, rows: Tensor, x: Tensor, logits: Tensor, allowed: Optional[Tensor] = None) -> Tensor:
        """Note which rows ``x`` fools (only where ``allowed``); keep each row's first fooling image."""
        now = self.success(rows, logits)
        if allowed is not None:
            now = now & allowed
        new = now & ~self.fooled[rows]
        self.best[rows] = torch.where(new.view(-1, *([1] * (x.ndim - 1))), x.detach(), self.best[rows])
        self.fooled[rows] = self.fooled[rows] | now
        return now

    def check_due(self, step: int, total: int) -> bool:
        """True every ``check_every`` steps (not at the last one) when early stop is on."""
        return self.early_stop and (step + 1) % self.check_every == 0 and step + 1 < total

    def drop_fooled(self, rows: Tensor, *tensors: Tensor) -> Tuple[Tensor, ...]:
        """Remove fooled rows from ``rows`` and from each per-row tensor; marks them as stopped early."""
        keep = ~self.fooled[rows]
        kept = keep.nonzero().flatten()
        if kept.numel() == rows.numel():
            return (rows, *tensors)
        self.stopped_early[rows[~keep]] = True
        return (rows[kept], *(t[kept] for t in tensors))


def _is_stochastic(model: nn.Module) -> bool:
    """True when the model's output may change between calls on the same input: a random layer
    (``random_layers``: resize-and-pad, dropout in training mode), or a model that says so with ``stochastic = True``."""
    return bool(random_layers(model))


def _checked_clean_logits(logits: object, labels: Tensor, device: torch.device, model_name: str) -> Tensor:
    """A caller's clean logits, detached on ``device``, once they are (N, classes) finite floating-point values
    with a class for every label; a ``GradconcealError`` naming what is wrong otherwise."""
    count = int(labels.shape[0])
    if not isinstance(logits, Tensor):
        raise GradconcealError(f"clean_logits must be a tensor of shape (N, classes), got {type(logits).__name__}")
    if not logits.dtype.is_floating_point:
        raise GradconcealError(f"clean_logits must be floating-point logits, got {str(logits.dtype).replace('torch.', '')} "
                               "values (class indices after argmax?)")
    if logits.ndim != 2 or int(logits.shape[0]) != count or int(logits.shape[1]) == 0:
        raise GradconcealError(f"clean_logits must have shape (N, classes) = ({count}, classes) for {count} images, "
                               f"got {tuple(logits.shape)}")
    finite = torch.isfinite(logits).all(dim=1)
    if not bool(finite.all()):
        first = int((~finite).nonzero().flatten()[0])
        raise GradconcealError(f"clean_logits hold NaN or infinite values for {int((~finite).sum())} of {count} images "
                               f"(the first: image {first}); pass the model's own finite logits, or none")
    check_num_classes(logits, labels, model_name)
    return logits.detach().to(device)


def _has_training_layers(model: nn.Module) -> bool:
    """True when a layer whose output depends on the mode (batch norm, dropout) is in training mode."""
    kinds = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
    return any(m.training for m in model.modules() if isinstance(m, kinds))


class Attack(abc.ABC):
    """An attack on a pixel-space classifier under one threat model; call it, or ``perturb`` for details."""

    name: ClassVar[str] = "attack"
    norms: ClassVar[Tuple[str, ...]] = NORMS
    losses: ClassVar[Tuple[str, ...]] = LOSSES
    wraps_attack: ClassVar[bool] = False  # True for attacks that run another attack (transfer)

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: str = "linf",
        eps: Number = 8 / 255,
        loss: str = "ce",
        targeted: bool = False,
        seed: int = 0,
        early_stop: bool = True,
        check_every: int = 3,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise GradconcealError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.threat = ThreatModel(norm, eps)
        if self.threat.norm not in self.norms:
            raise GradconcealError(f"{type(self).__name__} supports norm {list(self.norms)}, got {norm!r}")
        self.loss = checks.choice("loss", loss, self.losses)
        self.targeted = checks.boolean("targeted", targeted)
        self.seed = checks.positive_int("seed", seed, minimum=0)
        self.early_stop = checks.boolean("early_stop", early_stop)
        self.check_every = checks.positive_int("check_every", check_every)
        shape = checks.image_shape_of(model)
        if shape is not None:
            self.threat.check_image_shape(shape)
        self._warned_training = False

    @property
    def deterministic(self) -> bool:
        """True when the attack draws no random numbers (its result depends on the model alone)."""
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.threat}, loss={self.loss!r}, targeted={self.targeted})"

    def __call__(self, images: Tensor, labels: Tensor, sample_seeds: Optional[Sequence[int]] = None, **kwargs: Tensor) -> Tensor:
        """Adversarial images of the same shape and dtype as ``images``."""
        return self.perturb(images, labels, sample_seeds, **kwargs).adversarial

    def perturb(
        self,
        images: Tensor,
        labels: Tensor,
        sample_seeds: Optional[Sequence[int]] = None,
        *,
        target_labels: Optional[Tensor] = None,
        clean_logits: Optional[Tensor] = None,
    ) -> AttackResult:
        """Attack every correctly classified image; return the adversarial images and per-sample records.

        ``sample_seeds`` (one int per image) gives every sample its own random stream, so results do not
        depend on batching. ``target_labels`` (targeted attacks only) sets each sample's target; without
        them a targeted attack aims at the most likely wrong classes and counts any misclassification.

        ``clean_logits`` (N x classes, any floating dtype, any device): the model's logits on ``images``, for a
        caller that already has them (the evaluation runner's clean pass); the attack then skips its own clean
        forward. They are checked (shape, finite, class count) and used as given: when they are the model's
        own, every result (adversarial images, ``fooled``, counts) is bit-identical to a call without them.
        ``forward_evals`` still counts the clean query: the caller made it. On a random model a call with
        them differs from one without: the attack's clean forward would have taken one draw of the layers.

        The model is run in the mode it is in; its buffers and modes, and the global random generators, are
        as they were when the call returns (``gradconceal.preserve``).
        """
        with preserved_rng(), preserved_model(self.model):
            return self._perturb(images, labels, sample_seeds, target_labels, clean_logits)

    def _perturb(
        self, images: Tensor, labels: Tensor, sample_seeds: Optional[Sequence[int]], target_labels: Optional[Tensor],
        given_logits: Optional[Tensor] = None,
    ) -> AttackResult:
        images = checks.check_images(images, self.model)
        count, device = images.shape[0], images.device
        labels = checks.check_labels(labels, count, device)
        seeds = checks.check_sample_seeds(sample_seeds, count)
        goal = self._check_targets(target_labels, labels, count, device)
        self.threat.check_image_shape(images.shape[1:])
        name = model_label(self.model)
        num_classes = getattr(self.model, "num_classes", None)
        if isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes > 0:
            check_num_classes(num_classes, labels, name)
        if not self._warned_training and _has_training_layers(self.model):
            logger.warning("%s: batch-norm or dropout layers of the model are in training mode (they act per "
                           "batch); call model.eval() first; the attack keeps the mode and restores the "
                           "running statistics afterwards", type(self).__name__)
            self._warned_training = True

        if given_logits is None:
            clean_logits = probe_model(self.model, images, labels, model_name=name)
        else:
            check_model_dtype(self.model, images, name)
            clean_logits = _checked_clean_logits(given_logits, labels, device, name)
        classes = int(clean_logits.shape[1])
        if goal is not None:
            check_num_classes(classes, goal, name, "target_labels")
        needed = min_classes(self.loss, self.targeted)
        if classes < needed:
            raise GradconcealError(f"loss {self.loss!r} needs a model with at least {needed} classes, this one has {classes}")

        clean_correct = clean_logits.argmax(dim=1) == labels
        forward_evals = torch.ones(count, dtype=torch.int64, device=device)
        grad_evals = torch.zeros(count, dtype=torch.int64, device=device)
        stopped = torch.zeros(count, dtype=torch.bool, device=device)
        fooled = torch.zeros(count, dtype=torch.bool, device=device)
        non_finite = torch.zeros(count, dtype=torch.bool, device=device)
        adversarial = images.clone()
        active = clean_correct.nonzero().flatten()
        if active.numel():
            sub_images, sub_labels = images[active], labels[active]
            sub_seeds = [seeds[i] for i in active.tolist()] if seeds is not None else None
            positions = active.tolist() if bool(seeded_layers(self.model)) else None
            state = RunState(
                self,
                sub_images,
                sub_labels,
                clean_logits[active].detach().float(),
                goal[active] if goal is not None else None,
                SampleRandom(self.seed, sub_seeds, int(active.numel()), device),
                sub_seeds,
                positions,
            )
            candidate = self.run(sub_images, sub_labels, state).detach()
            candidate = torch.where(state.fooled.view(-1, 1, 1, 1), state.best, candidate)
            final = self.threat.project(sub_images, candidate.to(images.dtype))
            # A candidate with NaN or infinite pixels (a non-finite gradient stepped into it) is no image:
            # the sample keeps its clean image and is marked non-finite.
            broken = ~torch.isfinite(final).flatten(1).all(dim=1)
            final = torch.where(broken.view(-1, *([1] * (final.ndim - 1))), sub_images, final)
            state.note_non_finite(state.all_rows(), broken)
            # A deterministic model already judged each recorded image: those inside the budget are kept as
            # they are and not evaluated again; every other final image is verified by one more forward.
            trusted = torch.zeros_like(state.fooled)
            if not _is_stochastic(self.model):
                trusted = state.fooled & self.threat.contains(sub_images, state.best)
                final = torch.where(trusted.view(-1, *([1] * (final.ndim - 1))), state.best, final)
            adversarial[active] = final
            sub_fooled = trusted.clone()
            verify = (~trusted).nonzero().flatten()
            if verify.numel():
                rows = [positions[r] for r in verify.tolist()] if positions is not None else None
                with torch.no_grad(), (sample_rows(self.model, rows) if rows is not None else contextlib.nullcontext()):
                    final_logits = self.model(final[verify])
                sub_goal = goal[active][verify] if goal is not None else None
                sub_fooled[verify] = is_success(final_logits, sub_labels[verify], sub_goal)
                state.note_non_finite(verify, final_logits)
            fooled[active] = sub_fooled
            non_finite[active] = state.non_finite
            grad_evals[active] += state.grad_evals
            forward_evals[active] += state.forward_evals + (~trusted).long()
            stopped[active] = state.stopped_early
        return AttackResult(
            adversarial=adversarial,
            fooled=fooled.cpu(),
            norms=self.threat.norms(adversarial - images).cpu(),
            grad_evals=grad_evals.cpu(),
            forward_evals=forward_evals.cpu(),
            clean_correct=clean_correct.cpu(),
            stopped_early=stopped.cpu(),
            threat=self.threat,
            attack=self.name,
            targets=goal.cpu() if goal is not None else None,
            non_finite=non_finite.cpu(),
        )

    def _check_targets(self, target_labels: object, labels: Tensor, count: int, device: torch.device) -> Optional[Tensor]:
        if target_labels is None:
            return None
        if not self.targeted:
            raise GradconcealError("target_labels were given to an untargeted attack; create it with targeted=True")
        targets = checks.check_labels(target_labels, count, device, name="target_labels")
        if bool((targets == labels).any()):
            raise GradconcealError("target_labels must differ from labels for every image")
        return targets

    @abc.abstractmethod
    def run(self, images: Tensor, labels: Tensor, state: RunState) -> Tensor:
        """The attack's own loop on correctly classified ``images``; returns one candidate per image."""
