"""Transfer attack: craft adversarial images on a surrogate model, judge them on the defended one.

By default the surrogate is the defended model with its input defences removed (``normalize`` then
``base`` of a ``DefendedModel``): for GCM, whose forward is the identity up to 1e-8, this is the exact
undefended network, so transfer shows what the concealment does not hide.
"""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor, nn

from gradconceal.attacks.adaptive import AdaptiveView
from gradconceal.attacks.base import Attack, RunState
from gradconceal.attacks.registry import create_attack, register
from gradconceal.errors import GradconcealError


def default_surrogate(model: nn.Module) -> nn.Module:
    """The undefended part of a defended model: ``normalize`` + ``base`` (views are unwrapped first)."""
    if isinstance(model, AdaptiveView):
        model = model.model
    base = getattr(model, "base", None)
    if not isinstance(base, nn.Module) or not isinstance(getattr(model, "defenses", None), nn.Module):
        raise GradconcealError(
            f"Transfer needs surrogate=MODEL for a {type(model).__name__}; only a defended model "
            "(conceal(...), DefendedModel) has a default surrogate, its undefended base"
        )
    normalize = getattr(model, "normalize", None)
    return nn.Sequential(normalize, base) if isinstance(normalize, nn.Module) else base


@register
class Transfer(Attack):
    """``Transfer(defended, attack="pgd", surrogate=None, **settings)``: any attack, run on the surrogate.

    ``grad_evals``/``forward_evals`` count the surrogate's evaluations plus the target's clean check and
    final verification; the defended model answers no other query. A sample whose logits or gradients were
    not finite on the surrogate is ``non_finite`` in the result too.
    """

    name = "transfer"
    wraps_attack = True

    def __init__(self, model: nn.Module, *, attack: str = "pgd", surrogate: Optional[nn.Module] = None, **settings: Any) -> None:
        if str(attack).lower() == "transfer":
            raise GradconcealError("Transfer cannot wrap itself; pass attack='pgd' (or another attack)")
        self.surrogate = surrogate if surrogate is not None else default_surrogate(model)
        if not isinstance(self.surrogate, nn.Module):
            raise GradconcealError(f"surrogate must be a torch.nn.Module, got {type(self.surrogate).__name__}")
        self.inner = create_attack(attack, self.surrogate, **settings)
        super().__init__(model, norm=self.inner.threat.norm, eps=self.inner.threat.eps, loss=self.inner.loss,
                         targeted=self.inner.targeted, seed=self.inner.seed, early_stop=False)

    @property
    def deterministic(self) -> bool:
        return self.inner.deterministic

    def __repr__(self) -> str:
        return f"Transfer({self.inner!r})"

    def run(self, images: Tensor, labels: Tensor, state: RunState) -> Tensor:
        result = self.inner.perturb(images, labels, state.sample_seeds, target_labels=state.goal)
        state.grad_evals += result.grad_evals.to(state.grad_evals.device)
        state.forward_evals += result.forward_evals.to(state.forward_evals.device)
        # a sample the surrogate gave NaN/inf for was not really attacked: never robust on the target either
        state.note_non_finite(state.all_rows(), result.non_finite.to(state.non_finite.device))
        return result.adversarial
