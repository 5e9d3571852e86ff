"""Whole-pair prediction for pairs already in memory: the tiling, padding and blending of detection
(same tiles, same overlap weights, same ``run_network``), without files, for validation in training
and calibration (the network's own score) and for benchmarks (the confidence detection writes)."""
from __future__ import annotations

from typing import Callable, List, Tuple

import numpy as np
import torch

from ..confidence_calibration import PlattScaling
from ..heap import freed_memory_kept
from ..model_file import ModelBundle
from ..network_on_tiles import run_network
from ..tiling import DEFAULT_TILE, TileGrid, tile_overlap
from .pairs import LoadedPair


def predict_pair(network: torch.nn.Module, pair: LoadedPair, device: torch.device, tile: int, overlap: int,
                 batch_size: int = 4, scale: int = 1, platt_scaling: PlattScaling = PlattScaling(),
                 stop_if_cancelled: Callable[[], None] = lambda: None) -> Tuple[np.ndarray, np.ndarray]:
    """(probability, distance), each (h, w) float32 on the pair's grid; ``tile`` and ``overlap`` in
    the network's pixels, the pair enlarged ``scale`` times for it and the score scaled by
    ``platt_scaling`` (as detection does; the default: the network's own score).
    ``stop_if_cancelled`` is called before each batch of tiles (a Sentinel-2 scene is minutes)."""
    height, width = pair.shape
    grid = TileGrid.for_network(width, height, tile, overlap, scale)
    sums = np.zeros((2, height, width), np.float32)
    weights = np.zeros((height, width), np.float32)
    positions = list(grid.positions())
    # The scores of a network that overflowed are its callers' to refuse (check_scores_finite), in one
    # line: numpy need not warn of them at each tile
    with freed_memory_kept(), np.errstate(all="ignore"):  # freed memory: each batch reuses the last one's pages
        for start in range(0, len(positions), batch_size):
            stop_if_cancelled()
            chunk = positions[start:start + batch_size]
            before, after = (_tiles(image, grid, chunk) for image in (pair.before, pair.after))
            probability, distance = run_network(network, before, after, device, with_distance=True, scale=scale,
                                                platt_scaling=platt_scaling,
                                                inside=[grid.inside(x, y) for x, y in chunk])
            for i, (x, y) in enumerate(chunk):
                w = grid.blend_weights(x, y)  # of the part inside the image
                h_in, w_in = w.shape
                for channel, maps in enumerate((probability, distance)):
                    sums[channel, y:y + h_in, x:x + w_in] += maps[i, :h_in, :w_in] * w
                weights[y:y + h_in, x:x + w_in] += w
    return sums[0] / weights, sums[1] / weights


def predict_as_detected(network: torch.nn.Module, bundle: ModelBundle, pair: LoadedPair, device: torch.device,
                        tile: int = DEFAULT_TILE, stop_if_cancelled: Callable[[], None] = lambda: None) -> np.ndarray:
    """The confidence detection writes for ``pair`` with ``bundle``'s settings for its pixel size
    (enlargement and scaling), (h, w) float32."""
    size = pair.pixel_size_m
    return predict_pair(network, pair, device, tile, tile_overlap(tile), scale=bundle.input_scale_for(size),
                        platt_scaling=bundle.platt_scaling_for(size), stop_if_cancelled=stop_if_cancelled)[0]


def _tiles(image: np.ndarray, grid: TileGrid, positions: List[Tuple[int, int]]) -> np.ndarray:
    """(N, bands, tile height, tile width) tiles of ``image`` (bands, H, W) at ``positions``, 0 past
    the image's edge, as detection reads them."""
    tiles = np.zeros((len(positions), image.shape[0], grid.tile_height, grid.tile_width), np.float32)
    for tile, (x, y) in zip(tiles, positions):
        height, width = grid.inside(x, y)
        tile[:, :height, :width] = image[:, y:y + height, x:x + width]
    return tiles
