"""The DeepCL network: Siamese encoder, metric heads with distance maps, and a decoder guided by
the distance map (the temporal prior), ending in a one-channel change logit (METHOD.md)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import build_encoder

STRIDES = (2, 4, 8, 16, 32)
NETWORK_MULTIPLE = STRIDES[-1]  # the input's sides must be multiples of the coarsest stride


@dataclass(frozen=True)
class NetworkConfig:
    """Everything needed to rebuild the network; stored in the model file."""

    encoder: str = "mobilenet_v2"
    in_channels: int = 3
    embed_dim: int = 64
    metric_strides: Tuple[int, ...] = (8, 16, 32)  # scales that get a metric head and a distance map
    decoder_channels: Tuple[int, ...] = (128, 96, 64, 32, 16)  # stride 32 → stride 2
    prior_guidance: bool = True  # False: the decoder never sees the distance map (ablation)

    def to_dict(self) -> Dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Dict) -> "NetworkConfig":
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        for name in ("metric_strides", "decoder_channels"):
            if name in known:
                known[name] = tuple(known[name])
        return cls(**known)


@dataclass
class NetworkOutput:
    logit: torch.Tensor  # (N, 1, H, W) change logit at input resolution
    distances: Dict[int, torch.Tensor] = field(default_factory=dict)  # stride → (N, 1, h, w) in [0, 2]

    @property
    def finest_distance(self) -> torch.Tensor:
        return self.distances[min(self.distances)]


class MetricHead(nn.Module):
    """1×1 conv to an embedding, normalised to unit length per pixel."""

    def __init__(self, cin: int, embed_dim: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(cin, embed_dim, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project(features), dim=1, eps=1e-6)


def pairwise_distance_map(e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between unit embeddings, per pixel; the epsilon keeps the gradient
    finite where the two embeddings coincide."""
    return torch.sqrt(((e1 - e2) ** 2).sum(dim=1, keepdim=True) + 1e-8)


class PriorGate(nn.Module):
    """feat ← feat · (1 + sigmoid(conv([D, feat]))): the distance map steers the decoder."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gate = nn.Conv2d(channels + 1, channels, 3, padding=1)

    def forward(self, features: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.gate(torch.cat([distance, features], dim=1)))
        return features * (1 + gate)


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DecoderStage(nn.Module):
    """Upsample the coarser decoder state, add the fused bi-temporal skip features, refine, and
    (with prior guidance) gate by the distance map."""

    def __init__(self, cin: int, skip_channels: int, cout: int, prior_guidance: bool) -> None:
        super().__init__()
        self.fuse = nn.Sequential(nn.Conv2d(2 * skip_channels, cout, 1, bias=False), nn.BatchNorm2d(cout),
                                  nn.ReLU(inplace=True))
        self.refine = _conv_block(cin + cout, cout)
        self.prior = PriorGate(cout) if prior_guidance else None

    def forward(self, state: torch.Tensor | None, f1: torch.Tensor, f2: torch.Tensor,
                distance: torch.Tensor) -> torch.Tensor:
        fused = self.fuse(torch.cat([torch.abs(f1 - f2), f1 + f2], dim=1))
        if state is None:  # the coarsest stage has nothing to upsample
            x = fused
        else:
            state = F.interpolate(state, size=fused.shape[2:], mode="bilinear", align_corners=False)
            x = torch.cat([state, fused], dim=1)
        x = self.refine(x)
        if self.prior is not None:
            prior = F.interpolate(distance, size=x.shape[2:], mode="bilinear", align_corners=False)
            x = self.prior(x, prior)
        return x


class DeepCLNet(nn.Module):
    """Input: before and after images (N, C, H, W) with H and W multiples of 32."""

    # Both dates through the encoder as one batch (True) or one after the other (False). None: one
    # batch in training, where batch norm must normalise both dates with the same statistics; one
    # after the other in eval mode, where that gives the same features with half the peak activation
    # memory (docs/memory_levers.md).
    dates_in_one_batch: Optional[bool] = None

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        unknown = set(config.metric_strides) - set(STRIDES)
        if unknown or not config.metric_strides:
            raise ValueError(f"metric_strides must be a non-empty subset of {STRIDES}")
        if len(config.decoder_channels) != len(STRIDES):
            raise ValueError(f"decoder_channels needs {len(STRIDES)} values, coarse to fine")
        self.config = config
        self.encoder = build_encoder(config.encoder, config.in_channels)
        channels = dict(zip(STRIDES, self.encoder.stage_channels))
        self.metric_heads = nn.ModuleDict(
            {str(s): MetricHead(channels[s], config.embed_dim) for s in config.metric_strides})
        stages = []
        cin = 0
        for stride, cout in zip(reversed(STRIDES), config.decoder_channels):
            stages.append(DecoderStage(cin, channels[stride], cout, config.prior_guidance))
            cin = cout
        self.decoder = nn.ModuleList(stages)
        self.head = nn.Conv2d(cin, 1, 1)

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> NetworkOutput:
        size = before.shape[2:]
        together = self.training if self.dates_in_one_batch is None else self.dates_in_one_batch
        if together:
            features = self.encoder(torch.cat([before, after], dim=0))
            n = before.shape[0]
            by_stride = {s: (f[:n], f[n:]) for s, f in zip(STRIDES, features)}
        else:
            by_stride = dict(zip(STRIDES, zip(self.encoder(before), self.encoder(after))))
        distances = {}
        for key, head in self.metric_heads.items():
            f1, f2 = by_stride[int(key)]
            distances[int(key)] = pairwise_distance_map(head(f1), head(f2))
        finest = distances[min(distances)]
        state = None
        for stride, stage in zip(reversed(STRIDES), self.decoder):
            f1, f2 = by_stride[stride]
            state = stage(state, f1, f2, distances.get(stride, finest))
        logit = F.interpolate(self.head(state), size=size, mode="bilinear", align_corners=False)
        return NetworkOutput(logit=logit, distances=distances)


def build_network(config: NetworkConfig) -> DeepCLNet:
    return DeepCLNet(config)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
