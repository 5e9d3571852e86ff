"""A training pair made from QGIS layers: the before and after rasters and a polygon layer of
changed areas become a pair folder (before.vrt, after.vrt, label.tif) that the engine's pair
finder reads like any other. The label is burnt onto the before grid: 1 inside changed polygons,
0 elsewhere inside the area of interest (or everywhere without one), nodata outside it."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
from osgeo import gdal

from qgis.core import QgsProcessingException

from .engine import core_module
from .rasterize import burn_polygons, qgis_geotransform

LABEL_NODATA = 255


def write_pair_folder(before: str, after: str, changed: Sequence[bytes], area_of_interest: Optional[Iterable[bytes]],
                      folder: Path) -> Path:
    """Write the pair into ``folder`` (created) and return it. Polygons are WKB in the before CRS."""
    folder.mkdir(parents=True, exist_ok=True)
    raster_io = core_module("raster_io")
    images = {}
    for name, source in (("before", before), ("after", after)):
        # A VRT points at the original file: nothing is copied. Of the image as detection opens it:
        # a Sentinel-2 product's unreached corners and Level-2A clouds are nodata (its alpha band),
        # not pixels of no change.
        try:
            image = images[name] = raster_io.open_raster(source, name)
        except core_module("errors").DeepCLError as exc:
            raise QgsProcessingException(str(exc)) from None
        if gdal.Translate(str(folder / f"{name}.vrt"), image, options=gdal.TranslateOptions(format="VRT")) is None:
            raise QgsProcessingException(f"GDAL could not read the {name} image {source}: {gdal.GetLastErrorMsg()}")
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
    if area_of_interest is not None:
        inside = burn_polygons(*size, geotransform, area_of_interest).astype(bool)
        label = np.where(inside, label, LABEL_NODATA).astype(np.uint8)
        if not (label == 1).any():  # the polygons lie on the image, all outside the area mapped completely
            raise QgsProcessingException("No changed-area polygon lies inside the area of interest; draw the area "
                                         "of interest around the changed areas, or leave it empty.")
    _write_label(label, template, folder / "label.tif")
    return folder


def _write_label(label: np.ndarray, template: gdal.Dataset, path: Path) -> None:
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), template.RasterXSize, template.RasterYSize, 1,
                                                   gdal.GDT_Byte, options=["COMPRESS=DEFLATE", "TILED=YES"])
    dataset.SetGeoTransform(list(template.GetGeoTransform()))
    if template.GetProjection():
        dataset.SetProjection(template.GetProjection())
    band = dataset.GetRasterBand(1)
    band.SetNoDataValue(LABEL_NODATA)
    band.WriteArray(label)
    dataset = None  # closing flushes the file
