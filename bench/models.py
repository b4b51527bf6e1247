"""Victim/clone architectures, registered by name.

Every model exposes ``features(x)`` (penultimate activations) and ``fc`` (the last linear
layer), so MAD can use the closed form of the last-layer Jacobian.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import MODELS


class Classifier(nn.Module):
    def forward(self, x):
        return self.fc(self.features(x))


@MODELS.register("smallcnn")
class SmallCNN(Classifier):
    """Two conv blocks + one hidden fc: the CPU-profile victim and clone."""
    input_size = None  # any size: pooled to 7x7 before the fc

    def __init__(self, num_classes=10, in_channels=1, width=32, hidden=128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(7), nn.Flatten(),
            nn.Linear(2 * width * 49, hidden), nn.ReLU())
        self.fc = nn.Linear(hidden, num_classes)

    def features(self, x):
        return self.body(x)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


@MODELS.register("resnet18")
class ResNet18(Classifier):
    """CIFAR-style ResNet-18: 3x3 stride-1 stem, no max-pool."""
    input_size = None  # 28x28 grayscale and 32x32 colour alike (global pooling)

    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        layers, cin = [], 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, num_classes)

    def features(self, x):
        return F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1)


VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


@MODELS.register("vgg16")
class VGG16BN(Classifier):
    """VGG-16 with batch norm, 32x32 inputs (28x28 sets are padded to 32)."""
    input_size = 32

    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        layers, cin = [], in_channels
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                cin = v
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.fc = nn.Linear(512, num_classes)

    def features(self, x):
        return self.body(x)


@MODELS.register("hashnet")
class HashNet(Classifier):
    """EDM's small hash network: three conv blocks 32-64-128, fc 256, fc C."""
    input_size = None  # any size: global pooling before the fc layers

    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        blocks, cin = [], in_channels
        for cout in (32, 64, 128):
            blocks += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
            cin = cout
        self.body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 256), nn.ReLU())
        self.fc = nn.Linear(256, num_classes)

    def features(self, x):
        return self.body(x)


def build(name: str, num_classes: int, in_channels: int, **params) -> nn.Module:
    return MODELS.get(name, num_classes=num_classes, in_channels=in_channels, **params)


def input_size(name: str, default: int = 28) -> int:
    return getattr(MODELS.lookup(name), "input_size", None) or default
