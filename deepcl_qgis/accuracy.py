"""Accuracy of a change map against a reference on the change map's grid: the reference is a
label raster (read as the engine reads a pair's label: colours as drawn, any band non-zero = changed;
warped to the change grid when its grid differs) or polygons of changed areas (burnt onto the change
grid; everything else counts as unchanged)."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional

import numpy as np
from osgeo import gdal, ogr

from qgis.core import QgsProcessingException

from .engine import as_sentence, core_module, engine_errors_as
from .rasterize import as_dataset, burn_polygons, qgis_geotransform

ROWS_PER_BLOCK = 512  # bounded memory on large maps


def open_change_map(path: str) -> gdal.Dataset:
    dataset = gdal.Open(path)
    if dataset is None:
        raise QgsProcessingException(f"The change map {path} is not a raster GDAL can read.")
    with _engine_errors():  # another tool's map may declare its 0 nodata, as labels may
        return core_module("raster_io").zero_means_no_change(dataset, f"the change map {path}")


def reference_on_grid(change: gdal.Dataset, reference_path: str) -> Any:
    """The label raster on the change map's grid, as the engine's ``LabelReader`` that reads it strip by
    strip: with the values, refusals and warnings of ``deepcl evaluate``'s labels."""
    reference = gdal.Open(reference_path)
    if reference is None:
        raise QgsProcessingException(f"The reference raster {reference_path} is not a raster GDAL can read.")
    return _as_label(reference, change, Path(reference_path))


def rasterize_polygons(change: gdal.Dataset, wkb_geometries: Iterable[bytes]) -> Any:
    """The reference on the change grid: 1 inside the polygons (in the change map's CRS), 0 elsewhere."""
    burnt = burn_polygons(change.RasterXSize, change.RasterYSize, qgis_geotransform(change), wkb_geometries)
    # 0/1 on the change grid without nodata: no refusal or warning of the reader can name its "file"
    return _as_label(as_dataset(burnt, change), change, Path("reference polygons"))


def _as_label(reference: gdal.Dataset, change: gdal.Dataset, path: Path) -> Any:
    with _engine_errors():
        return core_module("training.pairs").LabelReader(reference, change, path, "the reference", "the change map",
                                                         "reference", noun="reference")


def _engine_errors() -> "contextlib.AbstractContextManager[None]":
    """The engine's errors as Processing errors, in sentences as the algorithms give them."""
    return engine_errors_as(lambda message: QgsProcessingException(as_sentence(message)))


def polygons_meet_map(change: gdal.Dataset, wkb_geometries: Iterable[bytes]) -> bool:
    """Whether the polygons' bounding box (in the change map's CRS) meets the change map's extent:
    polygons of another area, or in another CRS than the one they were taken for, do not."""
    grid = core_module("grid")
    boxes = [ogr.CreateGeometryFromWkb(wkb).GetEnvelope() for wkb in wkb_geometries]  # (x min, x max, y min, y max)
    if not boxes:
        return False
    union = (min(b[0] for b in boxes), min(b[2] for b in boxes), max(b[1] for b in boxes), max(b[3] for b in boxes))
    where = grid.Grid(change.RasterXSize, change.RasterYSize, tuple(qgis_geotransform(change)), "")
    return grid.bounds_overlap(where.bounds(), union)


def confusion(change: gdal.Dataset, reference: Any,
              cancelled: Callable[[], bool] = lambda: False,
              progress: Optional[Callable[[float], None]] = None,
              confidence: Optional[gdal.Dataset] = None) -> Dict[str, float]:
    """Pooled confusion counts and metrics over the pixels valid in both rasters; with the run's
    ``confidence`` map, also its Brier score and expected calibration error ("brier", "ece") over
    the pixels valid in all three, as ``deepcl evaluate`` measures them. ``reference``: as
    :func:`reference_on_grid` or :func:`rasterize_polygons` gives it; its warnings are logged once
    every row is read, as the engine's of a label."""
    metrics = core_module("metrics")
    calibration = core_module("confidence_calibration")
    total = metrics.Confusion()
    reliabilities = []
    change_band = change.GetRasterBand(1)
    height, width = change.RasterYSize, change.RasterXSize
    for top in range(0, height, ROWS_PER_BLOCK):
        if cancelled():
            raise QgsProcessingException("Cancelled by the user.")
        rows = min(ROWS_PER_BLOCK, height - top)
        predicted, valid = _read_with_validity(change_band, top, width, rows)
        if (valid & (predicted != 0) & (predicted != 1) & (predicted != 255)).any():
            raise QgsProcessingException(
                "The change map holds values other than 0 and 1 (or 255): give a map of classes, e.g. the "
                "change layer of 'Detect changes', not its confidence.")
        with _engine_errors():  # a reference that is not binary, or cannot be read
            actual, reference_valid = reference.read(top, rows)
        # A 0/255 map of another tool counts its 255 as change; our maps' 255 is their nodata, already invalid
        total = total + metrics.Confusion.of(predicted > 0, actual, valid & reference_valid)
        if confidence is not None:
            scores, scores_valid = _read_with_validity(confidence.GetRasterBand(1), top, width, rows)
            both = valid & reference_valid & scores_valid
            reliabilities.append(calibration.reliability(scores[both], actual[both]))
        if progress:
            progress((top + rows) / height)
    reference.warn()  # before a refusal of no pixel in common, which they may explain (all nodata)
    if total.total == 0:
        raise QgsProcessingException("The change map and the reference have no valid pixel in common "
                                     "(do they cover the same area?): there is nothing to compare.")
    pooled = calibration.pooled_reliability(reliabilities) if confidence is not None else {}
    return {**total.metrics(undefined=None), **{key: pooled[key] for key in ("brier", "ece") if key in pooled}}


def _read_with_validity(band: gdal.Band, top: int, width: int, rows: int):
    values = band.ReadAsArray(0, top, width, rows)
    if values is None:
        raise QgsProcessingException(f"Could not read rows {top}–{top + rows}: {gdal.GetLastErrorMsg()}")
    valid = np.ones(values.shape, bool)
    if band.GetMaskFlags() != gdal.GMF_ALL_VALID:
        valid &= band.GetMaskBand().ReadAsArray(0, top, width, rows) > 0
    return values, valid
