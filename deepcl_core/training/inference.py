"""Whole-pair prediction for pairs already in memory: the tiling, padding and blending of detection
(same tiles, same overlap weights, same ``run_network``), without files, for validation in training."""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from ..network_on_tiles import run_network
from ..heap import freed_memory_kept
from ..tiling import TileGrid
from .pairs import LoadedPair


def predict_pair(network: torch.nn.Module, pair: LoadedPair, device: torch.device, tile: int = 512,
                 overlap: int = 64, batch_size: int = 4, scale: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """(probability, distance), each (h, w) float32 on the pair's grid; ``tile`` and ``overlap`` in
    the network's pixels, the pair enlarged ``scale`` times for it (as detection does)."""
    height, width = pair.shape
    grid = TileGrid(width, height, tile // scale, overlap // scale)
    sums = np.zeros((2, height, width), np.float32)
    weights = np.zeros((height, width), np.float32)
    positions = list(grid.positions())
    th, tw = grid.tile_height, grid.tile_width
    with freed_memory_kept():  # as in detection: each batch reuses the last one's pages
        for start in range(0, len(positions), batch_size):
            chunk = positions[start:start + batch_size]
            before = np.stack([pair.before[:, y:y + th, x:x + tw] for x, y in chunk])
            after = np.stack([pair.after[:, y:y + th, x:x + tw] for x, y in chunk])
            probability, distance = run_network(network, before, after, device, with_distance=True, scale=scale)
            for i, (x, y) in enumerate(chunk):
                w = grid.blend_weights(x, y)
                sums[0, y:y + th, x:x + tw] += probability[i] * w
                sums[1, y:y + th, x:x + tw] += distance[i] * w
                weights[y:y + th, x:x + tw] += w
    return sums[0] / weights, sums[1] / weights

