"""A PNG quick-look that lets a person judge a result at a glance: before, after, confidence and
change side by side (and the reference, when there is one)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
from osgeo import gdal

from .band_choice import choose_bands
from .grid import align_after_to_before
from .raster_io import open_image, open_raster

GAP = 8  # pixels of white between panels


def _rgb(path: Path, grid_of: Optional[gdal.Dataset] = None) -> np.ndarray:
    dataset = open_image(path, "image")
    if grid_of is not None:
        dataset = align_after_to_before(grid_of, dataset)
    bands = choose_bands(dataset, None, ("red", "green", "blue"), "image") if dataset.RasterCount >= 3 else (1, 1, 1)
    pixels = np.stack([dataset.GetRasterBand(b).ReadAsArray().astype(np.float32) for b in bands])
    low, high = np.percentile(pixels, [2, 98])
    return (np.clip((pixels - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)


def _ramp(path: Path) -> np.ndarray:
    """Confidence 0–1 as dark blue → yellow; nodata grey."""
    values = open_raster(path, "confidence").ReadAsArray().astype(np.float32)
    nodata = values < 0
    v = np.clip(values, 0, 1)
    rgb = np.stack([255 * v, 40 + 200 * v, 120 * (1 - v)]).astype(np.uint8)
    rgb[:, nodata] = 128
    return rgb


def _mask(path: Path, colour: tuple) -> np.ndarray:
    values = open_raster(path, "change").ReadAsArray()
    rgb = np.zeros((3,) + values.shape, np.uint8)
    for channel, level in enumerate(colour):
        rgb[channel][values == 1] = level
    rgb[:, values == 255] = 128
    return rgb


def write_quicklook(before: Path, after: Path, confidence: Path, change: Path, out: Path,
                    reference: Optional[Path] = None) -> Path:
    before_ds = open_raster(before, "before")
    panels: List[np.ndarray] = [_rgb(before), _rgb(after, grid_of=before_ds), _ramp(confidence),
                                _mask(change, (255, 40, 40))]
    if reference is not None:
        panels.append(_mask(reference, (40, 220, 40)))
    height = max(p.shape[1] for p in panels)
    width = sum(p.shape[2] for p in panels) + GAP * (len(panels) - 1)
    canvas = np.full((3, height, width), 255, np.uint8)
    x = 0
    for panel in panels:
        canvas[:, :panel.shape[1], x:x + panel.shape[2]] = panel
        x += panel.shape[2] + GAP
    memory = gdal.GetDriverByName("MEM").Create("", width, height, 3, gdal.GDT_Byte)
    for band in range(3):
        memory.GetRasterBand(band + 1).WriteArray(canvas[band])
    gdal.GetDriverByName("PNG").CreateCopy(str(out), memory)
    Path(str(out) + ".aux.xml").unlink(missing_ok=True)
    return out
