"""Change polygons: the changed pixels as a GeoPackage, each polygon with its area and its mean
confidence, smaller ones than ``min_area`` dropped."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from osgeo import gdal, ogr, osr

from .area import equal_area_transform, geometry_area_m2
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
        kept = _annotate(layer, gdal.Open(str(confidence_file)), grid, min_area, cancel)
        if grid.crs_wkt:
            _keep_crs(vector, grid.crs_wkt)
        return kept
    finally:  # closed here, not by the traceback's frames: the unfinished file is deleted after
        layer = vector = None


def _polygon_layer(vector: ogr.DataSource, grid: Grid) -> ogr.Layer:
    layer = vector.CreateLayer(LAYER_NAME, _layer_srs(grid.crs_wkt), ogr.wkbPolygon)
    for name, kind in (("change", ogr.OFTInteger), ("area_m2", ogr.OFTReal), ("area_px", ogr.OFTReal),
                       ("confidence", ogr.OFTReal)):
        layer.CreateField(ogr.FieldDefn(name, kind))
    return layer


def _layer_srs(crs_wkt: str) -> osr.SpatialReference:
    """The grid's CRS; without one, the GeoPackage's "Undefined Cartesian SRS" (srs_id -1), the
    driver's name for which this is. ``None`` gave srs_id 0, "Undefined geographic SRS", whose
    coordinates QGIS takes for degrees and reprojects, while it draws the change map, which has no
    CRS, in pixels as they are."""
    srs = osr.SpatialReference()
    if crs_wkt:
        srs.ImportFromWkt(crs_wkt)
    else:
        srs.SetLocalCS("Undefined cartesian SRS")
    return srs


def _keep_crs(vector: ogr.DataSource, crs_wkt: str) -> None:
    """Store the grid's CRS as it is where the driver stored another. GDAL's GeoPackage driver
    names a CRS without an authority after AutoIdentifyEPSG, which takes a UTM projection on
    WGS 84 in US survey feet (as GDAL reads it from a GeoTIFF) for EPSG:32631, in metres: QGIS drew
    the polygons hundreds of km from the maps. Nothing in the CRS can be left out to stop the
    guess (it identifies WGS 84 by its datum's name), so the layer is given a row of its own,
    as the driver writes for a CRS without a code."""
    srs = _layer_srs(crs_wkt)
    if _same_srs(_as_stored(srs), srs):
        return
    srs_id = max(100000, _sql_value(vector, "SELECT MAX(srs_id) + 1 FROM gpkg_spatial_ref_sys"))
    definition = srs.ExportToWkt().replace("'", "''")
    name = str(srs.GetName() or "unknown").replace("'", "''")
    with collect_gdal_errors() as errors:
        for statement in (f"INSERT INTO gpkg_spatial_ref_sys (srs_name, srs_id, organization, "
                          f"organization_coordsys_id, definition) VALUES ('{name}', {srs_id}, 'NONE', {srs_id}, "
                          f"'{definition}')",
                          f"UPDATE gpkg_contents SET srs_id = {srs_id} WHERE table_name = '{LAYER_NAME}'",
                          f"UPDATE gpkg_geometry_columns SET srs_id = {srs_id} WHERE table_name = '{LAYER_NAME}'",
                          f"UPDATE {LAYER_NAME} SET geom = SetSRID(geom, {srs_id})"):  # the geometries name it too
            vector.ExecuteSQL(statement)
    if errors.messages:
        raise OutputError(f"cannot store the CRS of the change polygons: {errors.last()}")


def _as_stored(srs: osr.SpatialReference) -> Optional[osr.SpatialReference]:
    """The CRS of a layer created with ``srs`` once its GeoPackage is read again, tried in memory
    (the layer CreateLayer returns reports ``srs`` as given, whatever the driver wrote)."""
    path = f"/vsimem/deepcl_crs_{uuid.uuid4().hex}.gpkg"
    probe = None
    try:
        with collect_gdal_errors():
            probe = ogr.GetDriverByName("GPKG").CreateDataSource(path)
            if probe is None or probe.CreateLayer(LAYER_NAME, srs, ogr.wkbPolygon) is None:
                return None
            probe = None  # closed, so that the file is written before it is read
            probe = ogr.Open(path)
            stored = probe.GetLayer(0).GetSpatialRef() if probe is not None else None
            return stored.Clone() if stored is not None else None
    finally:
        probe = None
        gdal.Unlink(path)


def _same_srs(stored: Optional[osr.SpatialReference], wanted: osr.SpatialReference) -> bool:
    # A layer's SRS has the traditional x = east axis mapping, which is no difference of CRS.
    return stored is not None and bool(stored.IsSame(wanted, ["IGNORE_DATA_AXIS_TO_SRS_AXIS_MAPPING=YES"]))


def _sql_value(vector: ogr.DataSource, query: str) -> int:
    rows = vector.ExecuteSQL(query)
    try:
        return int(rows.GetNextFeature().GetField(0))
    finally:
        vector.ReleaseResultSet(rows)


def _annotate(layer: ogr.Layer, confidence: gdal.Dataset, grid: Grid, min_area: float,
              cancel: Callable[[], bool]) -> int:
    pixel_area = abs(grid.geotransform[1] * grid.geotransform[5]) or 1.0
    to_equal_area = equal_area_transform(grid)  # once: building it takes far longer than a measure
    layer.StartTransaction()
    doomed, kept = [], 0
    for feature in layer:
        if cancel():
            raise Cancelled()
        geometry = feature.GetGeometryRef()
        area_px = geometry.GetArea() / pixel_area
        area_m2 = geometry_area_m2(geometry, grid, to_equal_area)
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
