"""Change polygons: the changed pixels as a GeoPackage, each polygon with its area and its mean
confidence, smaller ones than ``min_area`` dropped."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from osgeo import gdal, ogr, osr

from .area import geometry_area_m2
from .errors import Cancelled, OutputError
from .gdal_utils import collect_gdal_errors
from .grid import Grid, map_geotransform

LAYER_NAME = "changes"


def write_change_polygons(change_file: Path, confidence_file: Path, grid: Grid, out_path: Path,
                          min_area: float = 0.0, cancel: Callable[[], bool] = lambda: False) -> int:
    """Polygonise the changed pixels (value 1) of ``change_file`` into the new GeoPackage
    ``out_path`` and return how many polygons were kept. ``min_area`` is in m² on georeferenced
    grids, in pixels otherwise. ``out_path`` is a temporary name: detection puts the file in place
    with its maps (:meth:`~deepcl_core.outputs.RasterOutputs.temporary_for`), or deletes it."""
    with collect_gdal_errors() as errors:
        # Seen through a VRT whose nodata is 0, the mask leaves out unchanged pixels, so only
        # changed (1) and nodata (255) areas become polygons; the latter are deleted below.
        change = gdal.Translate("", str(change_file), format="VRT", noData=0)
        vector = ogr.GetDriverByName("GPKG").CreateDataSource(str(out_path))
    if change is None or vector is None:
        raise OutputError(f"cannot write change polygons: {errors.last('unknown error')}")
    change.SetGeoTransform(map_geotransform(grid.geotransform))  # where QGIS draws the raster
    try:
        layer = _polygon_layer(vector, grid)
        band = change.GetRasterBand(1)
        with collect_gdal_errors() as errors:
            status = gdal.Polygonize(band, band.GetMaskBand(), layer, 0, [])
        if status != 0:
            raise OutputError(f"polygonising the change map failed: {errors.last('unknown error')}")
        return _annotate(layer, gdal.Open(str(confidence_file)), grid, min_area, cancel)
    finally:  # closed here, not by the traceback's frames: the unfinished file is deleted after
        layer = vector = None


def _polygon_layer(vector: ogr.DataSource, grid: Grid) -> ogr.Layer:
    srs = None
    if grid.crs_wkt:
        srs = osr.SpatialReference()
        srs.ImportFromWkt(grid.crs_wkt)
    layer = vector.CreateLayer(LAYER_NAME, srs, ogr.wkbPolygon)
    for name, kind in (("change", ogr.OFTInteger), ("area_m2", ogr.OFTReal), ("area_px", ogr.OFTReal),
                       ("confidence", ogr.OFTReal)):
        layer.CreateField(ogr.FieldDefn(name, kind))
    return layer


def _annotate(layer: ogr.Layer, confidence: gdal.Dataset, grid: Grid, min_area: float,
              cancel: Callable[[], bool]) -> int:
    pixel_area = abs(grid.geotransform[1] * grid.geotransform[5]) or 1.0
    layer.StartTransaction()
    doomed, kept = [], 0
    for feature in layer:
        if cancel():
            raise Cancelled()
        geometry = feature.GetGeometryRef()
        area_px = geometry.GetArea() / pixel_area
        area_m2 = geometry_area_m2(geometry, grid)
        size = area_m2 if area_m2 is not None else area_px
        if feature.GetField("change") != 1 or size < min_area:
            doomed.append(feature.GetFID())
            continue
        feature.SetField("area_px", area_px)
        if area_m2 is not None:
            feature.SetField("area_m2", area_m2)
        feature.SetField("confidence", _mean_inside(confidence, geometry, grid))
        layer.SetFeature(feature)
        kept += 1
    for fid in doomed:
        layer.DeleteFeature(fid)
    layer.CommitTransaction()
    return kept


def _mean_inside(raster: gdal.Dataset, geometry: ogr.Geometry, grid: Grid) -> float:
    """Mean of ``raster`` over the pixels of ``geometry``, reading only its bounding window."""
    x0, dx, _, y0, _, dy = map_geotransform(grid.geotransform)
    min_x, max_x, min_y, max_y = geometry.GetEnvelope()
    cols = sorted(((min_x - x0) / dx, (max_x - x0) / dx))
    rows = sorted(((min_y - y0) / dy, (max_y - y0) / dy))
    col0, col1 = max(int(np.floor(cols[0])), 0), min(int(np.ceil(cols[1])), grid.width)
    row0, row1 = max(int(np.floor(rows[0])), 0), min(int(np.ceil(rows[1])), grid.height)
    width, height = max(col1 - col0, 1), max(row1 - row0, 1)
    values = raster.GetRasterBand(1).ReadAsArray(col0, row0, width, height)
    window = gdal.GetDriverByName("MEM").Create("", width, height, 1, gdal.GDT_Byte)
    window.SetGeoTransform((x0 + col0 * dx, dx, 0, y0 + row0 * dy, 0, dy))
    ring = ogr.GetDriverByName("Memory").CreateDataSource("")
    shape = ring.CreateLayer("shape", None, ogr.wkbPolygon)
    feature = ogr.Feature(shape.GetLayerDefn())
    feature.SetGeometry(geometry)
    shape.CreateFeature(feature)
    with collect_gdal_errors():  # the in-memory layer has no CRS: GDAL warns on stderr otherwise
        gdal.RasterizeLayer(window, [1], shape, burn_values=[1])
    inside = window.GetRasterBand(1).ReadAsArray() == 1
    return float(values[inside].mean()) if inside.any() else float("nan")
