"""Tiles in batches for the network: which tiles go together, and the arrays the readers normalise
them into, so that a batch reaches the network without being copied together first."""
from __future__ import annotations

import threading
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from .tiling import TileGrid

Position = Tuple[int, int]


def even_batch_size(count: int, size: int) -> int:
    """The batch size that splits ``count`` tiles into as few batches of at most ``size`` as
    possible, all of one size but the last. cuDNN prepares its kernels for each new input shape the
    first time it meets it (about 2 s for this network on an H100, docs/benchmarks_gpu_e2e.md): a
    row's batches of 6 and 6, the last padded to it, meet one shape where 8 and 4 meet two."""
    return -(-count // -(-count // size))


def batch_plan(tiles: TileGrid, size: int) -> List[Tuple[int, List[Position]]]:
    """(tile row index, positions) of each batch, in reading order: every tile row cut into batches
    of at most ``size`` tiles, as even as they can be (12 tiles in batches of at most 8: 6 and 6,
    not 8 and 4). A batch never spans two rows, so a row can be finished as soon as its last batch is."""
    columns = tiles.columns()
    even = even_batch_size(len(columns), size)
    return [(row_index, [(x, y) for x in columns[start:start + even]])
            for row_index, y in enumerate(tiles.rows()) for start in range(0, len(columns), even)]


def batch_array(size: int, shape: Sequence[int], device: torch.device) -> np.ndarray:
    """A float32 (size, *shape) array; on CUDA in page-locked memory, which the copy to the GPU
    reads directly. The array keeps the tensor, and so the page-locked block, alive (torch caches
    such blocks)."""
    if device.type == "cuda":
        return torch.empty((size, *shape), dtype=torch.float32, pin_memory=True).numpy()
    return np.empty((size, *shape), np.float32)


class BatchSlots:
    """One pair of arrays (before, after) per batch of ``plan``, made when a reader asks for the
    slot of one of the batch's tiles, so that each tile's inputs are normalised straight into its
    slot. A batch of fewer than ``pad_to`` tiles gets ``pad_to`` slots, the ones after its tiles
    zero (on CUDA: every batch one shape). Safe for several reader threads."""

    def __init__(self, plan: List[Tuple[int, List[Position]]], bands: Tuple[int, int], tile_shape: Tuple[int, int],
                 device: torch.device, pad_to: int = 0) -> None:
        self._where: Dict[Position, Tuple[int, int]] = {
            position: (index, slot)
            for index, (_, positions) in enumerate(plan) for slot, position in enumerate(positions)}
        self._tiles = [len(positions) for _, positions in plan]
        self._pad_to = pad_to
        self._shapes = [(count, *tile_shape) for count in bands]
        self._device = device
        self._arrays: Dict[int, Tuple[np.ndarray, ...]] = {}
        self._lock = threading.Lock()

    def slot(self, position: Position) -> Tuple[np.ndarray, np.ndarray]:
        """The (bands, h, w) views of ``position``'s batch arrays that its tile's inputs go into."""
        index, slot = self._where[position]
        with self._lock:
            arrays = self._arrays.get(index)
            if arrays is None:
                tiles = self._tiles[index]
                arrays = tuple(batch_array(max(tiles, self._pad_to), shape, self._device) for shape in self._shapes)
                for array in arrays:
                    array[tiles:] = 0.0
                self._arrays[index] = arrays
        return arrays[0][slot], arrays[1][slot]

    def take(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """Batch ``index``'s arrays, once all its tiles are read; the slots forget them."""
        with self._lock:
            before, after = self._arrays.pop(index)
        return before, after
