"""Blending on the GPU: beside a GPU a single host thread blending every tile's maps and flushing
the rows set the pipeline's pace (docs/benchmarks_gpu_e2e.md); on the device the same sums cost
a few kernel launches per tile, and only finished rows come back to the host."""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple, Union

import numpy as np
import torch

from .device import host_to_device
from .pending import Pending

Maps = Union[np.ndarray, torch.Tensor]  # a map on the host, or on the device


def fits_on_device(width: int, tile_height: int, channels: int, free_bytes: int) -> bool:
    """Whether a :class:`DeviceRowBlender` for rows ``width`` wide leaves the network most of the
    device's ``free_bytes``: its buffers and a flush's temporaries take at most half (a 100,000 px
    wide mosaic in tiles of 768 needs about 1.4 GB for one channel)."""
    buffers = (4 * channels + 4 + 1) * tile_height * width  # sums, weights, validity
    return 2 * buffers <= free_bytes // 2


class DeviceRowBlender:
    """:class:`~deepcl_core.tiling.RowBlender` with its buffers on ``device``: the same weighted
    sums, flushes and validity, for maps that are already there (numpy maps are copied over)."""

    def __init__(self, width: int, tile_height: int, channels: int, device: torch.device) -> None:
        self.device = device
        self.sums = torch.zeros((channels, tile_height, width), dtype=torch.float32, device=device)
        self.weights = torch.zeros((tile_height, width), dtype=torch.float32, device=device)
        self.valid = torch.zeros((tile_height, width), dtype=torch.bool, device=device)
        self.top = 0
        # Blend weights copied to the device, by id of the host array, which is kept so that the
        # id stays its own (TileGrid hands out one array per kind of tile).
        self._weights: Dict[int, Tuple[np.ndarray, torch.Tensor]] = {}

    def add(self, values: Sequence[Maps], weights: np.ndarray, valid: np.ndarray, x: int, y: int) -> None:
        """``values``: one (h, w) map per channel, or a (channels, h, w) array or tensor."""
        h, w = weights.shape
        r = y - self.top
        on_device = self._weights_on_device(weights)
        for channel, value in enumerate(values):
            self.sums[channel, r:r + h, x:x + w].addcmul_(self._to_device(value), on_device)
        self.weights[r:r + h, x:x + w] += on_device
        self.mark_valid(valid, x, y)

    def mark_valid(self, valid: np.ndarray, x: int, y: int) -> None:
        h, w = valid.shape
        region = self.valid[y - self.top:y - self.top + h, x:x + w]
        if valid.all():  # most tiles: no copy
            region.fill_(True)
        else:
            region.copy_(self._to_device(valid))

    def flush_later(self, until: int) -> Callable[[], Tuple[int, np.ndarray, np.ndarray]]:
        """The final rows [top, until) as :meth:`RowBlender.flush
        <deepcl_core.tiling.RowBlender.flush>` gives them, computed on the device and copied back
        without waiting: the function returned waits for them."""
        n = until - self.top
        weights = self.weights[:n]
        covered = weights > 0
        blended = self.sums[:, :n] / torch.where(covered, weights, torch.ones_like(weights))
        rows = Pending.copied_to_host(blended, self.valid[:n] & covered)
        top = self.top
        for buffer in (self.sums, self.weights, self.valid):
            _shift_rows(buffer, n)
        self.top = until
        return lambda: (top, *rows.result())

    def _weights_on_device(self, weights: np.ndarray) -> torch.Tensor:
        kept = self._weights.get(id(weights))
        if kept is None:
            kept = self._weights[id(weights)] = (weights, self._to_device(weights.copy()))  # torch wants it writable
        return kept[1]

    def _to_device(self, values: Maps) -> torch.Tensor:
        return values if isinstance(values, torch.Tensor) else host_to_device(values, self.device)


def _shift_rows(buffer: torch.Tensor, n: int) -> None:
    """Move rows up by ``n`` (rows are the second-last axis) and clear the freed rows."""
    kept = buffer[..., n:, :].clone()
    buffer[..., :kept.shape[-2], :] = kept
    buffer[..., kept.shape[-2]:, :] = 0
