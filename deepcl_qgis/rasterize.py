"""Burning polygons onto a raster grid (labels from digitised changed areas, areas of interest)."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from osgeo import gdal, ogr, osr

from .engine import core_module


def qgis_geotransform(dataset: gdal.Dataset) -> Sequence[float]:
    """The geotransform QGIS uses for ``dataset`` (the engine's rule, shared with its polygons)."""
    return core_module("grid").map_geotransform(dataset.GetGeoTransform())


def burn_polygons(width: int, height: int, geotransform: Sequence[float],
                  wkb_geometries: Iterable[bytes]) -> np.ndarray:
    """(height, width) uint8: 1 where a pixel centre lies in one of the polygons (given in the
    grid's coordinates; curves by straight segments), else 0."""
    # One CRS for both, standing for the grid's own: without any GDAL warned on every call
    # ("Failed to fetch spatial reference on layer polygons …")
    grid_crs = osr.SpatialReference()
    grid_crs.SetLocalCS("the grid's coordinates")
    target = gdal.GetDriverByName("MEM").Create("", width, height, 1, gdal.GDT_Byte)
    target.SetGeoTransform(list(geotransform))
    target.SetSpatialRef(grid_crs)
    source = ogr.GetDriverByName("Memory").CreateDataSource("polygons")
    layer = source.CreateLayer("polygons", srs=grid_crs, geom_type=ogr.wkbUnknown)
    for wkb in wkb_geometries:
        geometry = ogr.CreateGeometryFromWkb(wkb)
        if geometry.HasCurveGeometry():  # GDAL burns no arcs: a circle drawn with QGIS's curve tools was left out
            geometry = geometry.GetLinearGeometry()
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(geometry)
        layer.CreateFeature(feature)
    gdal.RasterizeLayer(target, [1], layer, burn_values=[1])
    return target.GetRasterBand(1).ReadAsArray()


def as_dataset(values: np.ndarray, template: gdal.Dataset) -> gdal.Dataset:
    """An in-memory single-band raster of ``values`` on ``template``'s grid."""
    dataset = gdal.GetDriverByName("MEM").Create("", template.RasterXSize, template.RasterYSize, 1, gdal.GDT_Byte)
    dataset.SetGeoTransform(list(template.GetGeoTransform()))
    if template.GetProjection():
        dataset.SetProjection(template.GetProjection())
    dataset.GetRasterBand(1).WriteArray(values)
    return dataset
