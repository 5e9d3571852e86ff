"""The straightforward way to run DeepCL on a pair: both images read whole into memory, normalised,
then one tile at a time through the plain (unfolded) network in float32, no prefetching, the
blend accumulated over the whole image, and both outputs written at the end.

It is the benchmark's naive baseline and the equivalence test's reference: it shares the building
blocks that define the result (the band choice, the image stretch, the tile grid and blend weights)
with ``detect_changes`` and none of its speed levers."""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np
import torch
from osgeo import gdal

from deepcl_core.area import ground_pixel_size
from deepcl_core.band_choice import choose_bands
from deepcl_core.grid import Grid, align_after_to_before
from deepcl_core.model_file import ModelBundle
from deepcl_core.network_on_tiles import run_network
from deepcl_core.normalization import normalize
from deepcl_core.outputs import CHANGE_NODATA, FLOAT_NODATA
from deepcl_core.pair_statistics import read_pair_sample
from deepcl_core.raster_io import open_image, read_window
from deepcl_core.tiling import TileGrid


def read_whole(before: Path, after: Path, bundle: ModelBundle) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Grid]:
    """Normalised before and after (bands, H, W), joint validity (H, W) and the before grid."""
    before_ds, after_ds = open_image(before, "before"), open_image(after, "after")
    aligned = align_after_to_before(before_ds, after_ds)
    bands_b = choose_bands(before_ds, None, bundle.bands, "before")
    bands_a = choose_bands(after_ds, None, bundle.bands, "after")
    grid = Grid.of(before_ds)
    pixels_b, valid_b = read_window(before_ds, bands_b, 0, 0, grid.width, grid.height, "before")
    pixels_a, valid_a = read_window(aligned, bands_a, 0, 0, grid.width, grid.height, "after")
    valid = valid_b & valid_a
    stretch_b, stretch_a = read_pair_sample(before_ds, bands_b, aligned, bands_a).stretches(bundle.normalization)
    norm_b = normalize(pixels_b, stretch_b, bundle.normalization) * valid
    norm_a = normalize(pixels_a, stretch_a, bundle.normalization) * valid
    return norm_b, norm_a, valid, grid


def naive_confidence(before: Path, after: Path, bundle: ModelBundle, tile: int = 512, overlap: int = 64,
                     device: str = "cpu") -> Tuple[np.ndarray, np.ndarray, Grid]:
    """Blended change probability (H, W) float32 (the model's scaled confidence) and validity (H, W),
    tile by tile, batch of one;
    ``tile`` and ``overlap`` are the network's, as in detection (smaller on enlarged images)."""
    norm_b, norm_a, valid, grid = read_whole(before, after, bundle)
    network = bundle.build().to(device)  # plain eval-mode network: batch norms not folded
    scale = bundle.input_scale_for(ground_pixel_size(grid))
    platt_scaling = bundle.platt_scaling_for(ground_pixel_size(grid))
    tiles = _tile_grid(grid, tile, overlap, scale)
    sums = np.zeros((grid.height, grid.width), np.float32)
    weights = np.zeros_like(sums)
    h, w = tiles.tile_height, tiles.tile_width
    for x, y in tiles.positions():
        window = (slice(y, y + h), slice(x, x + w))
        if not valid[window].any():
            continue
        probability, _ = run_network(network, norm_b[(Ellipsis, *window)][None], norm_a[(Ellipsis, *window)][None],
                                     torch.device(device), with_distance=False, scale=scale,
                                     platt_scaling=platt_scaling)
        blend = tiles.blend_weights(x, y)
        sums[window] += probability[0] * blend
        weights[window] += blend
    covered = weights > 0
    confidence = np.clip(sums / np.where(covered, weights, 1.0), 0.0, 1.0)
    return confidence.astype(np.float32), valid & covered, grid


def naive_detect(before: Path, after: Path, change_path: Path, confidence_path: Path, bundle: ModelBundle,
                 tile: int = 512, overlap: int = 64, device: str = "cpu") -> int:
    """The naive run file to file: change (Byte) and confidence (Float32) GeoTIFFs, tiled and
    compressed like the real outputs. Returns the number of tiles."""
    confidence, valid, grid = naive_confidence(before, after, bundle, tile, overlap, device)
    pixel_size = ground_pixel_size(grid)
    change = np.where(valid, confidence >= bundle.threshold_for(pixel_size), CHANGE_NODATA).astype(np.uint8)
    confidence = np.where(valid, confidence, FLOAT_NODATA).astype(np.float32)
    for path, values, data_type, nodata in ((change_path, change, gdal.GDT_Byte, CHANGE_NODATA),
                                            (confidence_path, confidence, gdal.GDT_Float32, FLOAT_NODATA)):
        _write_whole(path, values, data_type, nodata, grid)
    return len(_tile_grid(grid, tile, overlap, bundle.input_scale_for(pixel_size)))


def _tile_grid(grid: Grid, tile: int, overlap: int, scale: int) -> TileGrid:
    """Detection's tiles: ``tile`` and ``overlap`` are the network's, so smaller on enlarged images."""
    return TileGrid.for_network(grid.width, grid.height, tile, overlap, scale)


def _write_whole(path: Path, values: np.ndarray, data_type: int, nodata: float, grid: Grid) -> None:
    options = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"]
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), grid.width, grid.height, 1, data_type, options)
    if grid.crs_wkt:
        dataset.SetGeoTransform(grid.geotransform)
        dataset.SetProjection(grid.crs_wkt)
    band = dataset.GetRasterBand(1)
    band.SetNoDataValue(nodata)
    band.WriteArray(values)
    dataset = None  # closing writes the file
