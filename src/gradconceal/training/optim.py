"""Optimiser and learning-rate schedule from a TrainConfig (schedules are per step, so short runs decay smoothly)."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from gradconceal.training.config import TrainConfig


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW, Adamax (the challenge recipe) or SGD with Nesterov momentum over all trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamax":
        return torch.optim.Adamax(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=config.momentum > 0
    )


def lr_factor(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate at each optimiser step: cosine to 0, step decay, or constant."""
    if config.schedule == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    if config.schedule == "step":
        bounds = [int(round(m * total_steps)) for m in config.step_milestones]
        return lambda step: config.step_gamma ** sum(step >= b for b in bounds)
    return lambda step: 1.0


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    """A LambdaLR stepped once per batch; its state (a step count) is plain JSON, so it checkpoints safely."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, total_steps))
