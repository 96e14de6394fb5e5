"""Images with several accepted labels (the photos: a tabby may be 281, 282 or 285) seen by an attack.

An untargeted attack moves the prediction away from one label; on a photo whose accepted set has several
labels it may stop at a sibling (tabby -> tiger cat), which is still correct. ``AcceptedLabels`` shows the
attack a model whose accepted classes are merged into the attack label's logit (their maximum) and pushed
to the bottom elsewhere, so the attack succeeds exactly when the prediction leaves the accepted set. The
model's decision (correct or not) is unchanged by the merge.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

_FORWARDED = ("input_size", "class_names", "num_classes", "mean", "std", "model_name")


class AcceptedLabels(nn.Module):
    """``model`` with the ``accepted`` classes of one image merged into class ``label`` (one image per call)."""

    def __init__(self, model: nn.Module, accepted: Sequence[int], label: int) -> None:
        super().__init__()
        if int(label) not in {int(a) for a in accepted}:
            raise ValueError(f"label {label} is not among the accepted labels {list(accepted)}")
        self.model = model
        self.accepted = sorted(int(a) for a in accepted)
        self.label = int(label)
        for name in _FORWARDED:
            if hasattr(model, name) and not hasattr(self, name):
                setattr(self, name, getattr(model, name))
        self.training = model.training  # the wrapper's flag only: the model's layers keep their modes

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model(x)
        classes = logits.shape[1]
        index = torch.tensor(self.accepted, device=logits.device)
        merged = logits.index_select(1, index).amax(dim=1, keepdim=True)
        is_label = torch.zeros(classes, dtype=torch.bool, device=logits.device)
        is_label[self.label] = True
        is_other = torch.zeros(classes, dtype=torch.bool, device=logits.device)
        is_other[index] = True
        is_other[self.label] = False
        floor = logits.detach().amin(dim=1, keepdim=True)
        return torch.where(is_label, merged, torch.where(is_other, floor, logits))

    def extra_repr(self) -> str:
        return f"accepted={self.accepted}, label={self.label}"
