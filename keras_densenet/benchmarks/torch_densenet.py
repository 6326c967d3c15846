"""A native PyTorch DenseNet, the benchmark's reference when torchvision is missing.

Same modules, state-dict keys and computation as `torchvision.models.DenseNet`
(BatchNorm epsilon 1e-5, symmetric padding), including its
``memory_efficient=True``: the concat-BN-ReLU-1x1 conv of each dense layer
runs under ``torch.utils.checkpoint`` and is recomputed in the backward pass.
Plain PyTorch only (no Keras): `throughput` times it against the Keras
models. Use `native_densenet` to get torchvision's class when it imports.

Example::

    from keras_densenet.benchmarks.torch_densenet import native_densenet
    model, source = native_densenet((6, 12, 24, 16), growth_rate=32, num_init_features=64)
    source  # "torchvision" or "keras_densenet.benchmarks.torch_densenet"
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import nn


class _DenseLayer(nn.Module):
    def __init__(self, in_features: int, growth_rate: int, bn_size: int, memory_efficient: bool):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_features, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        self.memory_efficient = memory_efficient

    def _bottleneck(self, *features):
        return self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))

    def forward(self, features):
        if self.memory_efficient and torch.is_grad_enabled() and any(f.requires_grad for f in features):
            x = cp.checkpoint(self._bottleneck, *features, use_reentrant=False)
        else:
            x = self._bottleneck(*features)
        return self.conv2(self.relu2(self.norm2(x)))


class _DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers, in_features, growth_rate, bn_size, memory_efficient):
        super().__init__()
        for i in range(num_layers):
            layer = _DenseLayer(in_features + i * growth_rate, growth_rate, bn_size, memory_efficient)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_features, out_features, 1, bias=False)
        self.pool = nn.AvgPool2d(2, stride=2)


class DenseNet(nn.Module):
    """torchvision's DenseNet (``features.*`` and ``classifier`` keys)."""

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        num_classes: int = 1000,
        memory_efficient: bool = False,
    ):
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                conv0=nn.Conv2d(3, num_init_features, 7, stride=2, padding=3, bias=False),
                norm0=nn.BatchNorm2d(num_init_features),
                relu0=nn.ReLU(inplace=True),
                pool0=nn.MaxPool2d(3, stride=2, padding=1),
            )
        )
        n = num_init_features
        for i, num_layers in enumerate(block_config):
            block = _DenseBlock(num_layers, n, growth_rate, bn_size, memory_efficient)
            self.features.add_module(f"denseblock{i + 1}", block)
            n += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", _Transition(n, n // 2))
                n //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(n))
        self.classifier = nn.Linear(n, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = F.relu(self.features(x), inplace=True)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


def native_densenet(
    block_config: Sequence[int],
    growth_rate: int = 32,
    num_init_features: int = 64,
    bn_size: int = 4,
    num_classes: int = 1000,
    memory_efficient: bool = False,
) -> Tuple[nn.Module, str]:
    """torchvision's DenseNet if it imports, else this module's; and which one.

    Returns:
        ``(model, source)``, source ``"torchvision"`` or
        ``"keras_densenet.benchmarks.torch_densenet"``.
    """
    kwargs = dict(
        growth_rate=growth_rate,
        block_config=tuple(block_config),
        num_init_features=num_init_features,
        bn_size=bn_size,
        num_classes=num_classes,
        memory_efficient=memory_efficient,
    )
    try:
        from torchvision.models import DenseNet as TorchvisionDenseNet
    except Exception:  # not installed, or built against another torch
        return DenseNet(**kwargs), __name__
    return TorchvisionDenseNet(**kwargs), "torchvision"
