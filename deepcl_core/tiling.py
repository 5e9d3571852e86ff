"""Tiles with overlap over a large image, and blending of overlapping tile predictions row by row
so that memory depends on the image width and tile size, never on the image height."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import gcd
from typing import Callable, Iterator, List, Sequence, Tuple

import numpy as np

# Detection's tiles, everywhere the network runs over whole images (detect, evaluate, calibrate, the
# plugin): fewer than tiles of 512, faster end to end on the CPU (benchmarks/pipeline_levers.py);
# the overlap is blended to hide the seams.
DEFAULT_TILE = 768
DEFAULT_OVERLAP = 64
MIN_BLEND_WEIGHT = 1e-3  # keeps an image-interior tile edge from dividing by zero


def tile_overlap(tile: int) -> int:
    """The overlap of tiles of ``tile`` pixels where none is given (detection's default, and evaluate,
    calibrate and training's validation, which have no overlap option): 64 where it is under half the tile, as
    :meth:`~deepcl_core.detect.DetectOptions.validate` requires, else a quarter of the tile (its hint).
    Scaled rather than refused: a user who gave only --tile cannot act on a refusal of an overlap
    they never chose, and every tile that worked with the default keeps it (and its results)."""
    return DEFAULT_OVERLAP if DEFAULT_OVERLAP < tile // 2 else tile // 4


@dataclass(frozen=True)
class TileGrid:
    """Positions of equally sized tiles covering a ``width`` × ``height`` image, each starting at a
    multiple of ``align`` pixels where the tiles are large enough for it (``tile - overlap`` at least
    ``align``): the overlap then grows to keep the steps on that grid, and the last tile may reach
    past the image's right or bottom edge by less than ``align`` pixels (:meth:`inside`)."""

    width: int
    height: int
    tile: int
    overlap: int
    align: int = 1

    @classmethod
    def for_network(cls, width: int, height: int, tile: int, overlap: int, scale: int = 1) -> "TileGrid":
        """The tiles of an image the network sees enlarged ``scale`` times, ``tile`` and ``overlap``
        given in the network's pixels: each tile starts where the whole image, seen at once, has a
        cell of the network's coarsest grid (every 32 of its pixels). The network is not
        shift-invariant: a tile cut off that grid sees its pixels in other cells of its pooling, and
        the map differed inside tiles, not only at their seams, from one tile size to another."""
        from .model.network import NETWORK_MULTIPLE  # here: the plugin imports this module before torch is found

        return cls(width, height, tile // scale, overlap // scale, NETWORK_MULTIPLE // gcd(NETWORK_MULTIPLE, scale))

    @property
    def tile_width(self) -> int:
        return min(self.tile, self.width)

    @property
    def tile_height(self) -> int:
        return min(self.tile, self.height)

    def columns(self) -> List[int]:
        return _starts(self.width, self.tile, self.overlap, self.align)

    def rows(self) -> List[int]:
        return _starts(self.height, self.tile, self.overlap, self.align)

    def inside(self, x: int, y: int) -> Tuple[int, int]:
        """(height, width) of the tile at (x, y) that lies inside the image: less than the tile's
        for a last tile reaching past the edge."""
        return min(self.tile_height, self.height - y), min(self.tile_width, self.width - x)

    def __len__(self) -> int:
        return len(self.columns()) * len(self.rows())

    def positions(self) -> Iterator[Tuple[int, int]]:
        """(x, y) of every tile, row by row (the order the blender needs)."""
        columns = self.columns()
        for y in self.rows():
            for x in columns:
                yield x, y

    def blend_weights(self, x: int, y: int) -> np.ndarray:
        """Weights of the part of the tile at (x, y) inside the image (:meth:`inside`) that fall off
        linearly across all a side shares with the neighbouring tile (at least the overlap; more where
        the steps keep to the grid, and most beside the last tile), and stay 1 at the image border:
        each pixel leans on the tile whose edge is farther. Read-only: tiles with the same neighbours
        share one array (a few kinds per grid)."""
        return _blend_weights(*self.inside(x, y), *_shared(self.rows(), y, self.tile_height),
                              *_shared(self.columns(), x, self.tile_width))


@lru_cache(maxsize=128)  # a few kinds per grid, for several runs at once
def _blend_weights(height: int, width: int, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    weights = np.outer(_ramp(height, top, bottom), _ramp(width, left, right))
    weights.flags.writeable = False
    return weights


def _shared(starts: List[int], start: int, tile: int) -> Tuple[int, int]:
    """How many pixels the tile at ``start`` shares with the tile before it and with the one after."""
    i = starts.index(start)
    return (starts[i - 1] + tile - start if i > 0 else 0,
            start + tile - starts[i + 1] if i + 1 < len(starts) else 0)


def _starts(length: int, tile: int, overlap: int, align: int) -> List[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    if step < align:  # tiles too small for the grid: the last one ends at the image edge
        align = 1
    step -= step % align
    # the first start on the grid from which a tile reaches the image's end; the steps before it
    # are multiples of the grid too, and neighbours share at least the overlap
    last = -(-(length - tile) // align) * align
    return [*range(0, last, step), last]


def _ramp(size: int, start: int, end: int) -> np.ndarray:
    """1, falling towards each end across ``start`` and ``end`` pixels (none: no fall)."""
    weights = np.ones(size, np.float32)
    for width, where in ((start, slice(None)), (end, slice(None, None, -1))):
        if width > 0:
            ramp = np.clip((np.arange(min(width, size), dtype=np.float32) + 0.5) / width, MIN_BLEND_WEIGHT, 1.0)
            view = weights[where]
            view[:ramp.size] = np.minimum(view[:ramp.size], ramp)
    return weights


class RowBlender:
    """Weighted sums of tile predictions for the band of rows the current tile row covers.

    After a tile row is added, the rows above the next tile row are final: :meth:`flush` returns
    them and shifts the buffers, so only ``tile_height`` rows of the image are ever held.
    """

    def __init__(self, width: int, tile_height: int, channels: int) -> None:
        self.sums = np.zeros((channels, tile_height, width), np.float32)
        self.weights = np.zeros((tile_height, width), np.float32)
        self.valid = np.zeros((tile_height, width), bool)
        self.top = 0  # image row held in buffer row 0

    def add(self, values: Sequence[np.ndarray], weights: np.ndarray, valid: np.ndarray, x: int, y: int) -> None:
        """``values``: one (h, w) map per channel, or a (channels, h, w) array."""
        h, w = weights.shape
        r = y - self.top
        for channel, value in enumerate(values):
            self.sums[channel, r:r + h, x:x + w] += value * weights
        self.weights[r:r + h, x:x + w] += weights
        self.valid[r:r + h, x:x + w] = valid

    def mark_valid(self, valid: np.ndarray, x: int, y: int) -> None:
        """Record validity of a tile that was not computed (no valid pixel in it)."""
        h, w = valid.shape
        r = y - self.top
        self.valid[r:r + h, x:x + w] = valid

    def flush(self, until: int) -> Tuple[int, np.ndarray, np.ndarray]:
        """Final rows [top, until): (first row, blended values (C, n, W), valid (n, W)), both new
        arrays that the caller may change."""
        n = until - self.top
        weights = self.weights[:n]
        covered = weights > 0
        blended = self.sums[:, :n] / np.where(covered, weights, 1.0)
        valid = self.valid[:n] & covered
        top = self.top
        for buffer in (self.sums, self.weights, self.valid):
            _shift_rows(buffer, n)
        self.top = until
        return top, blended, valid

    def flush_later(self, until: int) -> Callable[[], Tuple[int, np.ndarray, np.ndarray]]:
        """:meth:`flush` as a function that gives its result (here at once; see
        :class:`~deepcl_core.device_blending.DeviceRowBlender`, whose rows may still be on their way)."""
        flushed = self.flush(until)
        return lambda: flushed


def _shift_rows(buffer: np.ndarray, n: int) -> None:
    """Move rows up by ``n`` (rows are the second-last axis) and clear the freed rows."""
    kept = buffer[..., n:, :].copy()
    buffer[..., :kept.shape[-2], :] = kept
    buffer[..., kept.shape[-2]:, :] = 0
