"""Results a GPU may still be working on, so that the thread that queued the work can go on and
another thread waits for them only when it needs them."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch


class Pending:
    """A tuple of values (arrays, tensors, None) that :meth:`result` gives once ``ready`` (a CUDA
    event recorded after the work that makes them) has passed; at once without an event."""

    def __init__(self, values: Tuple[Any, ...], ready: Optional["torch.cuda.Event"] = None) -> None:
        self._values = values
        self._ready = ready

    @classmethod
    def copied_to_host(cls, *tensors: Optional[torch.Tensor]) -> "Pending":
        """``tensors`` as numpy arrays: from CUDA copied without waiting, into page-locked memory
        (the only kind a copy from the GPU fills asynchronously); from other devices at once."""
        if not any(t is not None and t.device.type == "cuda" for t in tensors):
            return cls(tuple(None if t is None else t.cpu().numpy() for t in tensors))
        host = tuple(None if t is None else torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors)
        for target, tensor in zip(host, tensors):
            if target is not None:
                target.copy_(tensor, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
        return cls(tuple(None if target is None else target.numpy() for target in host), ready)

    def result(self) -> Tuple[Any, ...]:
        if self._ready is not None:
            self._ready.synchronize()
            self._ready = None
        return self._values
