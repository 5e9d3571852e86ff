"""A new change map from the confidence map at another threshold, without the network: a pixel
is changed (1) where its confidence is at least the threshold, 255 where confidence is nodata.
Written as the engine writes its change map, with overviews when the confidence map has them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from osgeo import gdal

from ..engine import core_module



@dataclass
class ChangeCounts:
    changed_pixels: int
    valid_pixels: int
    changed_area_m2: Optional[float]  # None without georeference

    @property
    def changed_percent(self) -> float:
        return 100.0 * self.changed_pixels / self.valid_pixels if self.valid_pixels else 0.0


def reclassify(confidence: Path, change: Path, threshold: float) -> ChangeCounts:
    """Write ``change`` (a new GeoTIFF on the confidence grid) and count what changed."""
    source = gdal.Open(str(confidence))
    if source is None:
        raise OSError(f"cannot read the confidence map {confidence}")
    outputs = core_module("outputs")  # the engine's conventions for a change map
    compression = outputs.usable_compression()
    band = source.GetRasterBand(1)
    nodata = band.GetNoDataValue()
    areas = _pixel_areas(source)
    target = _create_like(source, change, outputs, compression)
    out_band = target.GetRasterBand(1)
    changed = valid = 0
    changed_m2 = 0.0
    for top in range(0, source.RasterYSize, outputs.BLOCK_SIZE):
        rows = min(outputs.BLOCK_SIZE, source.RasterYSize - top)
        values = band.ReadAsArray(0, top, source.RasterXSize, rows)
        is_valid = np.isfinite(values) if nodata is None else (values != nodata) & np.isfinite(values)
        is_changed = is_valid & (values >= threshold)
        out_band.WriteArray(np.where(is_valid, is_changed, outputs.CHANGE_NODATA).astype(np.uint8), 0, top)
        changed += int(is_changed.sum())
        valid += int(is_valid.sum())
        if areas is not None:
            changed_m2 += float(is_changed.sum(axis=1) @ areas[top:top + rows])
    target.FlushCache()
    out_band = target = None  # closes the file (a band keeps its dataset open)
    if band.GetOverviewCount():
        outputs.add_overviews(change, gdal.GDT_Byte, compression)
    return ChangeCounts(changed, valid, changed_m2 if areas is not None else None)


def _create_like(source: gdal.Dataset, path: Path, outputs: Any, compression: str) -> gdal.Dataset:
    options = outputs.creation_options(compression, "2")
    target = gdal.GetDriverByName("GTiff").Create(str(path), source.RasterXSize, source.RasterYSize, 1,
                                                  gdal.GDT_Byte, options)
    if target is None:
        raise OSError(f"cannot write {path}")
    target.SetGeoTransform(source.GetGeoTransform())
    target.SetProjection(source.GetProjection())
    band = target.GetRasterBand(1)
    band.SetNoDataValue(outputs.CHANGE_NODATA)
    band.SetDescription(outputs.CHANGE_DESCRIPTION)
    return target


def _pixel_areas(source: gdal.Dataset) -> Optional[np.ndarray]:
    """m² of one pixel per row, from the engine (exact for geographic CRSs); None without a CRS."""
    grid = core_module("grid").Grid.of(source)
    return core_module("area").pixel_area_by_row(grid)
