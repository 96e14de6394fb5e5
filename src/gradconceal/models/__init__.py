"""Models: the zoo (names -> pixel-space classifiers), pixel-space wrapper, checkpoints, offline pretrained weights."""

from gradconceal.models.checkpoint import read_checkpoint, save_checkpoint
from gradconceal.models.pixel import PixelModel
from gradconceal.models.zoo import build_architecture, list_models, load_model

__all__ = ["PixelModel", "build_architecture", "list_models", "load_model", "read_checkpoint", "save_checkpoint"]
