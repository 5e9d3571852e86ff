"""Restricting detection to a processing extent or a mask polygon layer.

The inputs are cut, not the outputs: the before image is cropped to the extent's pixel window in
a GDAL VRT (nothing copied, the grid unchanged), and a mask additionally becomes an alpha band
(a warped VRT with a cutline on the same grid), so the engine sees pixels outside the mask as
nodata: they come out as nodata and do not count in the changed area. The after image follows
the before grid inside the engine."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Tuple

from osgeo import gdal

from qgis.core import QgsProcessingException, QgsRasterLayer, QgsRectangle

Window = Tuple[int, int, int, int]  # x offset, y offset, width, height in pixels


def pixel_window(layer: QgsRasterLayer, extent: QgsRectangle) -> Window:
    """The pixels of ``layer`` that ``extent`` (in the layer's CRS) touches. Works in QGIS's
    layer coordinates, so images without georeference (pixel coordinates) are handled too."""
    full = layer.extent()
    area = full.intersect(extent)
    if area.isEmpty():
        raise QgsProcessingException(
            f"The processing extent does not overlap the before image '{layer.name()}'; "
            "choose an extent inside the image (e.g. 'Use Layer Extent').")
    size_x, size_y = layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()
    x0 = max(0, math.floor((area.xMinimum() - full.xMinimum()) / size_x + 1e-6))
    y0 = max(0, math.floor((full.yMaximum() - area.yMaximum()) / size_y + 1e-6))
    x1 = min(layer.width(), math.ceil((area.xMaximum() - full.xMinimum()) / size_x - 1e-6))
    y1 = min(layer.height(), math.ceil((full.yMaximum() - area.yMinimum()) / size_y - 1e-6))
    if x1 <= x0 or y1 <= y0:
        raise QgsProcessingException("The processing extent is smaller than one pixel of the before image.")
    return x0, y0, x1 - x0, y1 - y0


def crop(source: str, window: Window, target: Path) -> Path:
    """A VRT of ``source`` cut to ``window``."""
    dataset = gdal.Translate(str(target), source, options=gdal.TranslateOptions(format="VRT", srcWin=list(window)))
    if dataset is None:
        raise QgsProcessingException(f"GDAL could not crop {source}: {gdal.GetLastErrorMsg()}")
    dataset = None  # closing writes the VRT
    return target


def same_grid(first: str, second: str) -> bool:
    """Same size, geotransform and CRS: one pixel window fits both images."""
    a, b = gdal.Open(first), gdal.Open(second)
    if a is None or b is None:
        return False
    same_size = (a.RasterXSize, a.RasterYSize) == (b.RasterXSize, b.RasterYSize)
    return same_size and a.GetGeoTransform() == b.GetGeoTransform() and a.GetProjection() == b.GetProjection()


def apply_mask(source: Path, mask_file: str, mask_layer: Optional[str], target: Path) -> Path:
    """A VRT of ``source`` on its own grid whose alpha band is 0 outside the mask polygons.
    GDAL reprojects the cutline from the mask's CRS to the image's."""
    dataset = gdal.Open(str(source))
    if dataset is None or not dataset.GetProjection():
        raise QgsProcessingException("A mask layer needs georeferenced images; use a processing extent "
                                     "instead, or georeference the images first.")
    x0, dx, _, y0, _, dy = dataset.GetGeoTransform()
    width, height = dataset.RasterXSize, dataset.RasterYSize
    bounds = (x0, y0 + dy * height, x0 + dx * width, y0)
    options = gdal.WarpOptions(format="VRT", outputBounds=bounds, width=width, height=height,
                               dstSRS=dataset.GetProjection(), cutlineDSName=mask_file,
                               cutlineLayer=mask_layer, dstAlpha=True, resampleAlg="near")
    warped = gdal.Warp(str(target), dataset, options=options)
    if warped is None:
        raise QgsProcessingException(f"GDAL could not apply the mask layer: {gdal.GetLastErrorMsg()}")
    warped = None  # closing writes the VRT
    return target
