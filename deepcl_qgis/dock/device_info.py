"""What the device chooser offers, and what was found: which GPU, or why there is none."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

from ..dependencies import missing_dependencies


@dataclass
class DeviceReport:
    """``choices``: (label, Processing DEVICE value, usable); ``found``: one line for the panel."""

    choices: List[Tuple[str, str, bool]]
    found: str


def device_report() -> DeviceReport:
    """Imports torch (when it can) to ask; call it after the panel is shown, not at plugin load."""
    if "torch" in missing_dependencies():
        return DeviceReport([("Auto", "auto", True), ("CPU", "cpu", False), ("GPU", "cuda", False)],
                            "PyTorch cannot be used yet: no device can be used.")
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return DeviceReport([("Auto (GPU)", "auto", True), ("CPU", "cpu", True), ("GPU (CUDA)", "cuda", True)],
                            f"GPU found: {', '.join(names)} (CUDA {torch.version.cuda}).")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return DeviceReport([("Auto (GPU)", "auto", True), ("CPU", "cpu", True), ("GPU (Apple)", "mps", True)],
                            "GPU found: Apple Metal (mps).")
    return DeviceReport([("Auto (CPU)", "auto", True), ("CPU", "cpu", True), ("GPU", "cuda", False)],
                        f"No GPU: {_why_no_gpu(torch)}. Detection runs on the CPU.")


def _why_no_gpu(torch: object) -> str:
    if torch.version.cuda is None:
        return "this PyTorch is a CPU-only build"
    return f"PyTorch has CUDA {torch.version.cuda} but finds no usable NVIDIA GPU or driver"
