"""Choosing the torch device from the user's ``auto|cpu|cuda|cuda:N|mps``, copying to it, and
saying what to do when it runs out of memory."""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator, Union

import numpy as np
import torch

from .errors import DeviceMemoryError, InputError


def resolve_device(name: Union[str, torch.device] = "auto") -> torch.device:
    """``auto`` prefers CUDA, then Apple MPS, then the CPU; an explicit choice that this machine
    cannot honour is an :class:`InputError` that says what was found."""
    name = str(name or "auto").strip().lower()  # a torch.device too
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not mps_available():
            raise InputError("device 'mps' asked for, but Apple Metal is not available here; choose the device auto "
                             "or cpu")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise InputError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else "no usable NVIDIA GPU or driver"
        raise InputError(f"device {name!r} asked for, but CUDA is not available ({build}); choose the device auto "
                         "or cpu")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise InputError(f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device("cuda", index)


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def host_to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``array`` on ``device``. On CUDA through page-locked memory (the array's own when it lies in
    such memory, as the batch slots do): the copy is then a DMA that does not wait for the work
    queued before it, and torch's allocator keeps a page-locked block it made until the copy is done."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA raises OutOfMemoryError; MPS and older builds a RuntimeError that says so."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


@contextmanager
def out_of_memory_explained(device: torch.device, doing: str, advice: str) -> Iterator[None]:
    """Turns ``device`` running out of memory within the block into a :class:`DeviceMemoryError`
    that says what ran out (torch's first two sentences), while ``doing`` what, and ``advice``."""
    try:
        yield
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        # "CUDA out of memory. Tried to allocate 2.00 GiB": torch's advice on the allocator's
        # settings that follows is not the user's to act on.
        what = ". ".join(str(error).splitlines()[0].split(". ")[:2]).rstrip(".")
        raise DeviceMemoryError(f"the {device.type} device ran out of memory while {doing} ({what}); {advice}"
                                ) from error
