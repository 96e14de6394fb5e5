"""Small classifiers for 28x28 grey images (Fashion-MNIST, digits): a CNN, a ResNet, a ViT and a ConvNeXt.

Each builder is called as ``fn(in_chans=1, num_classes=10)`` and returns a plain ``nn.Module`` that takes
normalised input (``PixelModel`` adds the normalisation). They are small enough to train in minutes on a CPU,
so the project has real, undefended networks to put GCM in front of and to attack.
"""

from __future__ import annotations

from typing import Callable, Dict

from torch import Tensor, nn

from gradconceal.data.classes import FASHION_MNIST_CLASSES

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "SMALL_ARCHITECTURES",
    "SmallCNN",
    "SmallResNet",
    "small_cnn",
    "small_convnext",
    "small_resnet",
    "small_vit",
]

# Per-channel statistics of the 60,000 Fashion-MNIST training images on [0, 1] pixels.
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)


def _conv_bn_relu(in_chans: int, out_chans: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU: the unit the CNN and the ResNet stem are made of."""
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_chans),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU-pool stages (32, 64, 128 channels) and a two-layer head; about 240k parameters."""

    def __init__(self, in_chans: int = 1, num_classes: int = 10, width: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(in_chans, width),
            nn.MaxPool2d(2),
            _conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2),
            _conv_bn_relu(2 * width, 4 * width),
            nn.AdaptiveMaxPool2d(3),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(4 * width * 9, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with a (projected where shapes differ) skip connection."""

    def __init__(self, in_chans: int, out_chans: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chans, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chans)
        self.conv2 = nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chans)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_chans != out_chans:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chans, out_chans, 1, stride=stride, bias=False), nn.BatchNorm2d(out_chans)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet-8 for 28x28 input: stem + three stages (16, 32, 64 channels, one basic block each); ~80k parameters."""

    def __init__(self, in_chans: int = 1, num_classes: int = 10, widths: tuple = (16, 32, 64)) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(in_chans, widths[0])
        stages = []
        previous = widths[0]
        for index, width in enumerate(widths):
            stages.append(BasicBlock(previous, width, stride=1 if index == 0 else 2))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(previous, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


def small_cnn(in_chans: int = 1, num_classes: int = 10) -> nn.Module:
    """The CNN: three conv stages and an MLP head (~240k parameters)."""
    return SmallCNN(in_chans=in_chans, num_classes=num_classes)


def small_resnet(in_chans: int = 1, num_classes: int = 10) -> nn.Module:
    """The ResNet: a ResNet-8 with widths 16/32/64 (~80k parameters)."""
    return SmallResNet(in_chans=in_chans, num_classes=num_classes)


def small_vit(in_chans: int = 1, num_classes: int = 10) -> nn.Module:
    """A tiny ViT (timm's VisionTransformer): 4x4 patches (7x7 tokens), width 64, 4 blocks, 4 heads (~140k)."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=28,
        patch_size=4,
        in_chans=in_chans,
        num_classes=num_classes,
        embed_dim=64,
        depth=4,
        num_heads=4,
        mlp_ratio=2.0,
        global_pool="avg",
        class_token=False,
    )


def small_convnext(in_chans: int = 1, num_classes: int = 10) -> nn.Module:
    """A tiny ConvNeXt (timm's ConvNeXt): 1x1 stem, four stages at 28/14/7/3 pixels, 16-128 channels (~270k).

    Layer scale starts at 1 instead of timm's 1e-6: with five blocks and a few epochs of training, blocks that
    start as the identity learn too slowly (docs/training.md).
    """
    from timm.models.convnext import ConvNeXt

    return ConvNeXt(
        in_chans=in_chans,
        num_classes=num_classes,
        depths=(1, 1, 2, 1),
        dims=(16, 32, 64, 128),
        patch_size=1,
        ls_init_value=1.0,
    )


SMALL_ARCHITECTURES: Dict[str, Callable[..., nn.Module]] = {
    "cnn": small_cnn,
    "resnet": small_resnet,
    "vit": small_vit,
    "convnext": small_convnext,
}

