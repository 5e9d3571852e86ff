"""A new change map from the confidence map at another threshold, without the network: a pixel
is changed (1) where its confidence is at least the threshold, 255 where confidence is nodata.
Written as the engine writes its change map, with overviews when the confidence map has them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from osgeo import gdal

from ..engine import core_module, gdal_return_values


@dataclass
class ChangeCounts:
    changed_pixels: int
    valid_pixels: int
    changed_area_m2: Optional[float]  # None without georeference

    @property
    def changed_percent(self) -> float:
        return 100.0 * self.changed_pixels / self.valid_pixels if self.valid_pixels else 0.0


@gdal_return_values
def reclassify(confidence: Path, change: Path, threshold: float,
               cancel: Callable[[], bool] = lambda: False) -> ChangeCounts:
    """Write ``change`` (a new GeoTIFF on the confidence grid, compressed as the confidence map,
    put in place only once complete) and count what changed. ``cancel`` is polled between blocks
    of rows; when true, the engine's ``Cancelled`` is raised and nothing is written."""
    source = gdal.Open(str(confidence))
    if source is None:
        raise OSError(f"cannot read the confidence map {confidence}")
    outputs = core_module("outputs")  # the engine's change-map writer, as detection writes it
    grid = core_module("grid").Grid.of(source)
    band = source.GetRasterBand(1)
    nodata = band.GetNoDataValue()
    areas = core_module("area").pixel_area_by_row(grid)  # m² per row; None without a CRS
    compression = source.GetMetadata("IMAGE_STRUCTURE").get("COMPRESSION", "").lower()
    # What made the run's maps, and the threshold this map is of (a map passed on says so without the panel)
    made_by = tuple({**source.GetMetadata(), "DEEPCL_THRESHOLD": str(threshold)}.items())  # the slider's: 0.45
    writer = outputs.RasterOutputs(
        [outputs.RasterSpec(change, gdal.GDT_Byte, outputs.CHANGE_NODATA, outputs.CHANGE_DESCRIPTION, made_by)], grid,
        compression=compression if compression in outputs.COMPRESSIONS else outputs.DEFAULT_COMPRESSION)
    changed = valid = 0
    changed_m2 = 0.0
    try:
        for top in range(0, grid.height, outputs.BLOCK_SIZE):
            if cancel():
                raise core_module("errors").Cancelled()
            rows = min(outputs.BLOCK_SIZE, grid.height - top)
            values = band.ReadAsArray(0, top, grid.width, rows)
            if values is None:  # e.g. a map cut short by a full disk, or replaced meanwhile
                raise OSError(f"cannot read the confidence map {confidence}: {gdal.GetLastErrorMsg()}")
            is_valid = np.isfinite(values) if nodata is None else (values != nodata) & np.isfinite(values)
            is_changed = is_valid & (values >= threshold)
            writer.write(change, np.where(is_valid, is_changed, outputs.CHANGE_NODATA).astype(np.uint8), top)
            changed += int(is_changed.sum())
            valid += int(is_valid.sum())
            if areas is not None:
                changed_m2 += float(is_changed.sum(axis=1) @ areas[top:top + rows])
        writer.close()
        if band.GetOverviewCount():
            writer.build_overviews(cancel)
        writer.commit()
    finally:
        writer.abort()  # nothing left to take back once committed
    return ChangeCounts(changed, valid, changed_m2 if areas is not None else None)
