"""A training pair made from QGIS layers: the before and after rasters and a polygon layer of
changed areas become a pair folder (before.vrt, after.vrt, label.tif) that the engine's pair
finder reads like any other. The label is burnt onto the before grid: 1 inside changed polygons,
0 elsewhere inside the area of interest (or everywhere without one), nodata outside it; with an area
of interest the pair is the window of the before grid around it."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal

from qgis.core import QgsProcessingException

from .engine import core_module
from .rasterize import burn_polygons, qgis_geotransform

LABEL_NODATA = 255


def write_pair_folder(before: str, after: str, changed: Sequence[bytes], area_of_interest: Optional[Iterable[bytes]],
                      folder: Path, min_side: int = 0) -> Path:
    """Write the pair into ``folder`` (created) and return it. Polygons are WKB in the before CRS.
    With an area of interest the pair is the window around it (at least ``min_side`` pixels on a
    side, the training crop's): the rest of a large scene is all nodata in the label, and training
    would read it into memory and spend half its random crops on it."""
    folder.mkdir(parents=True, exist_ok=True)
    raster_io = core_module("raster_io")
    images = {}
    for name, source in (("before", before), ("after", after)):
        # Of the image as detection opens it: a Sentinel-2 product's unreached corners and Level-2A
        # clouds are nodata (its alpha band), not pixels of no change.
        try:
            images[name] = raster_io.open_raster(source, name)
        except core_module("errors").DeepCLError as exc:
            raise QgsProcessingException(str(exc)) from None
    if not changed:
        raise QgsProcessingException("The changed-area layer holds no polygon (none is selected, with “Selected "
                                     "features only”?); digitise the changed areas over the before image.")
    if area_of_interest is not None:
        area_of_interest = list(area_of_interest)
        if not area_of_interest:  # it was told no changed-area polygon lay inside it
            raise QgsProcessingException("The area-of-interest layer holds no polygon (none is selected, with "
                                         "“Selected features only”?); draw the area mapped completely, or leave "
                                         "it empty.")
    template = images["before"]  # the label on its grid: an image placed by GCPs is warped north-up
    size, geotransform = (template.RasterXSize, template.RasterYSize), qgis_geotransform(template)
    label = burn_polygons(*size, geotransform, changed)
    if not label.any():
        raise QgsProcessingException("No changed-area polygon covers the before image; digitise the changed "
                                     "areas over the before image (or check the layer's CRS).")
    window = (0, 0, *size)
    if area_of_interest is not None:
        inside = burn_polygons(*size, geotransform, area_of_interest).astype(bool)
        label = np.where(inside, label, LABEL_NODATA).astype(np.uint8)
        if not (label == 1).any():  # the polygons lie on the image, all outside the area mapped completely
            raise QgsProcessingException("No changed-area polygon lies inside the area of interest; draw the area "
                                         "of interest around the changed areas, or leave it empty.")
        window = _window_around(inside, min_side)
    column, row, width, height = window
    grid = core_module("grid").Grid
    after_on_before_grid = grid.of(images["after"]).same_as(grid.of(template))
    for (name, image), source in zip(images.items(), (before, after)):
        # A VRT points at the original file: nothing is copied. The after image is cut to the window
        # where it shares the before grid; on another grid the engine warps it onto the window's.
        cut = name == "before" or after_on_before_grid
        options = gdal.TranslateOptions(format="VRT", srcWin=list(window) if cut else None)
        if gdal.Translate(str(folder / f"{name}.vrt"), image, options=options) is None:
            raise QgsProcessingException(f"GDAL could not read the {name} image {source}: {gdal.GetLastErrorMsg()}")
    _write_label(label[row:row + height, column:column + width], template, window, folder / "label.tif")
    return folder


def _window_around(inside: np.ndarray, min_side: int) -> Tuple[int, int, int, int]:
    """(column, row, width, height) of the pixels ``inside``, widened about its centre to at least
    ``min_side`` on each side where the image allows."""
    rows, columns = np.nonzero(inside.any(axis=1))[0], np.nonzero(inside.any(axis=0))[0]
    spans = []
    for first, last, length in ((columns[0], columns[-1] + 1, inside.shape[1]), (rows[0], rows[-1] + 1,
                                                                                 inside.shape[0])):
        side = min(max(last - first, min_side), length)
        start = min(max((first + last - side) // 2, 0), length - side)
        spans.append((int(start), int(side)))
    (column, width), (row, height) = spans
    return column, row, width, height


def _write_label(label: np.ndarray, template: gdal.Dataset, window: Tuple[int, int, int, int], path: Path) -> None:
    """``label``, the ``window`` (column, row, width, height) of ``template``'s grid."""
    column, row, width, height = window
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), width, height, 1, gdal.GDT_Byte,
                                                   options=["COMPRESS=DEFLATE", "TILED=YES"])
    x0, dx, rx, y0, ry, dy = template.GetGeoTransform()
    dataset.SetGeoTransform([x0 + column * dx + row * rx, dx, rx, y0 + column * ry + row * dy, ry, dy])
    if template.GetProjection():
        dataset.SetProjection(template.GetProjection())
    band = dataset.GetRasterBand(1)
    band.SetNoDataValue(LABEL_NODATA)
    band.WriteArray(label)
    dataset = None  # closing flushes the file
