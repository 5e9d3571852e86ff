"""Siamese encoders: each maps an image to features at strides 2, 4, 8, 16 and 32.

Every encoder exposes ``stage_channels`` (channels of the five feature maps, fine to coarse) so the
rest of the network is built from it and any encoder can be trained the DeepCL way.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn


def _conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2 block; attribute names follow the ImageNet weight file's key layout."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers: List[nn.Module] = []
        if expand != 1:
            layers += _conv_bn_relu6(cin, hidden, kernel=1)
        layers += _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden)
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        # One flat Sequential (conv, bn, relu6, ...): the layout of the ImageNet weight file.
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


# (expansion, output channels, repeats, first stride) of MobileNetV2 (Sandler et al., CVPR 2018).
_MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
# Indices into ``features`` whose outputs are the stride 2, 4, 8, 16, 32 feature maps.
_MOBILENET_V2_TAPS = (1, 3, 6, 13, 17)


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 feature extractor without its final 1×1 conv to 1280 channels (not needed for
    dense prediction). ``features.N`` keys match torchvision's ``mobilenet_v2().features``."""

    stage_channels = (16, 24, 32, 96, 320)

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        layers: List[nn.Module] = [_conv_bn_relu6(in_channels, 32, stride=2)]
        cin = 32
        for expand, cout, repeats, stride in _MOBILENET_V2_SETTINGS:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in _MOBILENET_V2_TAPS:
                taps.append(x)
        return taps


class SimpleCNNEncoder(nn.Module):
    """A small plain CNN in the FC-Siam style, trained from scratch: two 3×3 conv-BN-ReLU per
    stage, each stage halving the resolution."""

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64, 96, 128)) -> None:
        super().__init__()
        self.stage_channels = tuple(widths)
        self.in_channels = in_channels
        stages = []
        cin = in_channels
        for cout in widths:
            stages.append(nn.Sequential(
                nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            ))
            cin = cout
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        taps = []
        for stage in self.stages:
            x = stage(x)
            taps.append(x)
        return taps


ENCODERS = {"mobilenet_v2": MobileNetV2Encoder, "simple_cnn": SimpleCNNEncoder}


def build_encoder(name: str, in_channels: int) -> nn.Module:
    try:
        return ENCODERS[name](in_channels=in_channels)
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}") from None
