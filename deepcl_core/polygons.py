"""Change polygons: the changed pixels as a GeoPackage, each polygon with its area and its mean
confidence, smaller ones than ``min_area`` dropped."""
from __future__ import annotations

import struct
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
from osgeo import gdal, ogr, osr

from .area import equal_area_transform, geometry_area_m2
from .errors import Cancelled, OutputError
from .gdal_utils import collect_gdal_errors
from .grid import Grid, map_geotransform
from .outputs import BLOCK_SIZE

LAYER_NAME = "changes"
STRIP_ROWS = BLOCK_SIZE  # rows of the confidence map read at once for the polygons' means: its tiles' height


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
        with collect_gdal_errors() as errors:  # cancel polled each time GDAL reports its progress
            status = gdal.Polygonize(band, band.GetMaskBand(), layer, 0, [],
                                     callback=lambda *_: 0 if cancel() else 1)
        if status != 0:
            if cancel():
                raise Cancelled()
            raise OutputError(f"polygonising the change map failed: {errors.last('unknown error')}")
        kept = _annotate(layer, gdal.Open(str(confidence_file)), grid, min_area, cancel)
        # The extent stored is the one before nodata areas and small polygons were deleted: the
        # whole map's, which "Zoom to layer" went to
        vector.ExecuteSQL(f"RECOMPUTE EXTENT ON {LAYER_NAME}")
        if grid.crs_wkt:
            _keep_crs(vector, grid.crs_wkt)
        return kept
    finally:  # closed here, not by the traceback's frames: the unfinished file is deleted after
        layer = vector = None


def _polygon_layer(vector: ogr.DataSource, grid: Grid) -> ogr.Layer:
    layer = vector.CreateLayer(LAYER_NAME, _layer_srs(grid.crs_wkt), ogr.wkbPolygon)
    # area_px a whole count (polygons follow pixel edges): as a real, 48.99999999977 failed "area_px >= 49"
    for name, kind in (("change", ogr.OFTInteger), ("area_m2", ogr.OFTReal), ("area_px", ogr.OFTInteger64),
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
    if _stored_as_given(crs_wkt):
        return
    srs = _layer_srs(crs_wkt)
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


@lru_cache(maxsize=16)  # a server or a batch writes the same few CRSs again and again
def _stored_as_given(crs_wkt: str) -> bool:
    """Whether the GeoPackage driver stores the CRS ``crs_wkt`` as it is."""
    srs = _layer_srs(crs_wkt)
    return _same_srs(_as_stored(srs), srs)


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
    doomed: List[int] = []
    kept: List[Tuple[int, int, Optional[float]]] = []  # fid, area in pixels, in m²
    edges = _PixelEdges(grid, STRIP_ROWS)
    for feature in layer:
        if cancel():
            raise Cancelled()
        geometry = feature.GetGeometryRef()
        area_px = round(geometry.GetArea() / pixel_area)  # off a whole number only by the coordinates' rounding
        area_m2 = geometry_area_m2(geometry, grid, to_equal_area)
        size = area_m2 if area_m2 is not None else area_px
        if feature.GetField("change") != 1 or size < min_area:
            doomed.append(feature.GetFID())
            continue
        kept.append((feature.GetFID(), area_px, area_m2))
        edges.add(geometry, len(kept))
    means = _means_inside(confidence, edges, len(kept), grid, cancel)
    for (fid, area_px, area_m2), mean in zip(kept, means):
        feature = layer.GetFeature(fid)
        feature.SetField("area_px", area_px)
        if area_m2 is not None:
            feature.SetField("area_m2", area_m2)
        feature.SetField("confidence", float(mean))
        layer.SetFeature(feature)
    for fid in doomed:
        layer.DeleteFeature(fid)
    layer.CommitTransaction()
    return len(kept)


class _PixelEdges:
    """The vertical edges of polygons that follow pixel edges (as gdal.Polygonize writes them), in
    pixel columns and rows, each weighted so that summing the weights of the edges left of a pixel's
    centre gives the id of the polygon holding the pixel, 0 outside all (polygons do not overlap).
    Rasterising each polygon instead (GDAL's scanline fill) costs its rows × its edges, whatever
    the window: a noisy map's one big polygon with tens of thousands of holes made the step grow
    with the square of the image (``python -m benchmarks.polygons_bench``)."""

    # Rings are converted in batches of about this many points: numpy's overhead per call would
    # dominate done polygon by polygon, and a batch's arrays take some hundred bytes a point (a
    # ring is never split).
    BATCH_POINTS = 1 << 16

    def __init__(self, grid: Grid, strip_rows: int) -> None:
        self.to_pixels = gdal.InvGeoTransform(map_geotransform(grid.geotransform))
        self.strip_rows = strip_rows
        self.parts: List[Tuple[np.ndarray, ...]] = []  # (column, first row, end row, weight) per batch, cut at strips
        self._rings: List[np.ndarray] = []  # x, y, x, y, … of each ring waiting for its batch
        self._roles: List[int] = []  # of each waiting ring: +id for an outer ring, -id for a hole
        self._points = 0

    def add(self, geometry: ogr.Geometry, polygon_id: int) -> None:
        for polygon in _polygons_of(geometry):
            wkb = polygon.ExportToWkb(ogr.wkbNDR)
            offset = 9  # byte order, type, number of rings
            for ring in range(struct.unpack_from("<I", wkb, 5)[0]):
                count = struct.unpack_from("<I", wkb, offset)[0]
                self._rings.append(np.frombuffer(wkb, "<f8", 2 * count, offset + 4))
                self._roles.append(polygon_id if ring == 0 else -polygon_id)
                self._points += count
                offset += 4 + 16 * count
                if self._points >= self.BATCH_POINTS:  # each ring is converted on its own: any can end a batch
                    self._convert()

    def _convert(self) -> None:
        if not self._rings:
            return
        counts = np.array([ring.size // 2 for ring in self._rings])
        points = np.concatenate(self._rings).reshape(-1, 2)
        ring_of, role = np.repeat(np.arange(counts.size), counts), np.array(self._roles, np.int64)
        self._rings, self._roles, self._points = [], [], 0
        a = self.to_pixels
        exact = np.stack((a[0] + a[1] * points[:, 0] + a[2] * points[:, 1],
                          a[3] + a[4] * points[:, 0] + a[5] * points[:, 1]))
        col, row = pixels = np.rint(exact).astype(np.int64)
        off_grid = bool(np.any(np.abs(exact - pixels) > 1e-3))
        same_ring = ring_of[:-1] == ring_of[1:]  # rings are closed: point i to i + 1 within one ring
        start, ring = np.flatnonzero(same_ring), ring_of[:-1][same_ring]
        dc, dr = col[start + 1] - col[start], row[start + 1] - row[start]
        if off_grid or np.any((dc != 0) & (dr != 0)):  # the pixels found would not be the polygons'
            raise OutputError("a change polygon does not follow the pixel edges of the change map")
        # Shoelace: the sign of a ring's area is its orientation, which gives the sign of the winding
        # count inside it; normalised to +id inside the outer ring and -id inside a hole.
        twice_area = np.bincount(ring, weights=col[start] * row[start + 1] - col[start + 1] * row[start],
                                 minlength=counts.size)
        ring_weight = -np.sign(twice_area).astype(np.int64) * role
        vertical = start[dr != 0]
        first, end = row[vertical], row[vertical + 1]
        edges = (col[vertical], np.minimum(first, end), np.maximum(first, end),
                 np.sign(end - first) * ring_weight[ring_of[vertical]])
        self.parts.append(tuple(part.astype(np.int32) for part in self._cut(*edges)))

    def _cut(self, col: np.ndarray, first: np.ndarray, end: np.ndarray,
             weight: np.ndarray) -> Tuple[np.ndarray, ...]:
        """The edges cut where they cross from one strip of rows into the next."""
        strip = first // self.strip_rows
        pieces = (end - 1) // self.strip_rows - strip + 1
        if np.all(pieces == 1):
            return col, first, end, weight
        edge = np.repeat(np.arange(col.size), pieces)
        strip = strip[edge] + (np.arange(edge.size) - np.repeat(np.cumsum(pieces) - pieces, pieces))
        return (col[edge], np.maximum(first[edge], strip * self.strip_rows),
                np.minimum(end[edge], (strip + 1) * self.strip_rows), weight[edge])

    def by_strip(self, strips: int) -> Tuple[Tuple[np.ndarray, ...], np.ndarray]:
        """The edges sorted by strip, and the bounds of each strip's (``bounds[k]:bounds[k + 1]`` for
        strip k); the batches are let go."""
        self._convert()
        edges = [np.concatenate(part) for part in zip(*self.parts)] if self.parts else [np.zeros(0, np.int32)] * 4
        self.parts = []
        strip = edges[1] // self.strip_rows
        order = np.argsort(strip, kind="stable")
        edges = [part[order] for part in edges]
        return tuple(edges), np.searchsorted(strip[order], np.arange(strips + 1))


def _polygons_of(geometry: ogr.Geometry) -> List[ogr.Geometry]:
    """The 2D polygons of ``geometry``: itself as gdal.Polygonize writes it, the parts of others."""
    if geometry.GetGeometryType() == ogr.wkbPolygon:
        return [geometry]
    flat = ogr.ForceToMultiPolygon(geometry.Clone())
    flat.FlattenTo2D()
    return [flat.GetGeometryRef(index) for index in range(flat.GetGeometryCount())]


def _means_inside(raster: gdal.Dataset, edges: _PixelEdges, count: int, grid: Grid,
                  cancel: Callable[[], bool]) -> np.ndarray:
    """Mean of ``raster`` over the pixels of each polygon of ``edges`` (ids 1 to ``count``), in one
    pass over strips of rows: memory grows with a strip, not the image, and cancel is polled per strip."""
    if count == 0:
        return np.zeros(0)
    (col, first, end, weight), bounds = edges.by_strip(-(-grid.height // STRIP_ROWS))
    band = raster.GetRasterBand(1)
    sums, pixels = np.zeros(count + 1), np.zeros(count + 1)
    width = grid.width + 1  # an edge on the right border is left of no pixel
    for strip in range(bounds.size - 1):
        if cancel():
            raise Cancelled()
        top = strip * STRIP_ROWS
        height = min(STRIP_ROWS, grid.height - top)
        piece = slice(bounds[strip], bounds[strip + 1])
        rows = (end[piece] - first[piece]).astype(np.int64)
        if not rows.size:
            continue
        # One entry per row each edge spans, at its column; summed along the rows, they give the ids.
        row = np.repeat(first[piece] - top, rows) + (np.arange(rows.sum()) - np.repeat(np.cumsum(rows) - rows, rows))
        steps = np.bincount(row * width + np.repeat(col[piece], rows), weights=np.repeat(weight[piece], rows),
                            minlength=height * width).reshape(height, width)
        ids = np.rint(np.cumsum(steps, axis=1)[:, :-1]).astype(np.int32)
        inside = ids > 0
        values = band.ReadAsArray(0, top, grid.width, height)[inside].astype(np.float64)
        sums += np.bincount(ids[inside], weights=values, minlength=count + 1)
        pixels += np.bincount(ids[inside], minlength=count + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / pixels)[1:]  # NaN for a polygon without a pixel centre, as before
