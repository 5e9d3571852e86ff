"""Grids: a raster's size, geotransform and CRS, and putting the after image on the before grid
(a GDAL warped VRT, nothing copied) once the two are known to overlap."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal, osr

from .errors import InputError
from .gdal_utils import collect_gdal_errors
from .raster_io import has_geotransform, is_georeferenced

# GDAL reports (0, 1, 0, 0, 0, 1) for an image without georeference, y growing downwards; QGIS
# draws such an image in pixel units with y = -row, and polygons digitised over it (or written for
# it) use those coordinates.
GDAL_DEFAULT_GEOTRANSFORM = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
QGIS_PIXEL_GEOTRANSFORM = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def map_geotransform(geotransform: Sequence[float]) -> Tuple[float, ...]:
    """The geotransform under which QGIS shows a raster: its own, or QGIS's pixel convention."""
    geotransform = tuple(float(v) for v in geotransform)
    return QGIS_PIXEL_GEOTRANSFORM if geotransform == GDAL_DEFAULT_GEOTRANSFORM else geotransform


@dataclass(frozen=True)
class Grid:
    """Size, geotransform and CRS (WKT, empty when not georeferenced) of a raster."""

    width: int
    height: int
    geotransform: Tuple[float, ...]
    crs_wkt: str

    @classmethod
    def of(cls, dataset: gdal.Dataset) -> "Grid":
        return cls(dataset.RasterXSize, dataset.RasterYSize, tuple(dataset.GetGeoTransform()),
                   dataset.GetProjection() or "")

    def bounds(self) -> Tuple[float, float, float, float]:
        """The box around the grid's four corners (a rotated or sheared grid's too)."""
        x0, dx, rx, y0, ry, dy = self.geotransform
        corners = [(x0 + dx * col + rx * row, y0 + ry * col + dy * row)
                   for col in (0, self.width) for row in (0, self.height)]
        xs, ys = [x for x, _ in corners], [y for _, y in corners]
        return min(xs), min(ys), max(xs), max(ys)

    def same_as(self, other: "Grid") -> bool:
        if (self.width, self.height) != (other.width, other.height):
            return False
        if not all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
                   for a, b in zip(self.geotransform, other.geotransform)):
            return False
        return _same_crs(self.crs_wkt, other.crs_wkt)

    def lies_on(self, target: "Grid", tolerance_px: float) -> bool:
        """Whether this grid's pixels are ``target``'s: same size and CRS, and its corners within
        ``tolerance_px`` of the target's (in target pixels, so any CRS unit and a drift of the pixel
        size across the image count alike)."""
        if (self.width, self.height) != (target.width, target.height) or not _same_crs(self.crs_wkt, target.crs_wkt):
            return False
        to_target = gdal.InvGeoTransform(target.geotransform)
        if to_target is None:  # a degenerate geotransform; warping it will say what is wrong
            return False
        for column, row in ((0, 0), (self.width, 0), (0, self.height), (self.width, self.height)):
            x, y = gdal.ApplyGeoTransform(list(self.geotransform), column, row)
            target_column, target_row = gdal.ApplyGeoTransform(to_target, x, y)
            if abs(target_column - column) > tolerance_px or abs(target_row - row) > tolerance_px:
                return False
        return True


def _same_crs(wkt_a: str, wkt_b: str) -> bool:
    if not wkt_a or not wkt_b:
        return wkt_a == wkt_b
    a, b = osr.SpatialReference(), osr.SpatialReference()
    a.ImportFromWkt(wkt_a)
    b.ImportFromWkt(wkt_b)
    return bool(a.IsSame(b))


def align_after_to_before(before: gdal.Dataset, after: gdal.Dataset) -> gdal.Dataset:
    """The after image on the before grid. Identical grids are used as they are; otherwise GDAL
    warps the after image (other CRS, pixel size or extent) into a VRT with an alpha band that
    marks where it has data. Nothing is copied: pixels are resampled as windows are read.

    Two images placed by geotransforms without a CRS (a world file, a CRS lost on the way) are
    aligned by those, as QGIS draws them; two without any georeference, pixel by pixel."""
    before_crs, after_crs = bool(before.GetProjection()), bool(after.GetProjection())
    if before_crs != after_crs:
        raise InputError(_one_crs_message(*((before, "before", after, "after") if before_crs
                                            else (after, "after", before, "before"))))
    if not before_crs and not (has_geotransform(before) and has_geotransform(after)):
        if (before.RasterXSize, before.RasterYSize) != (after.RasterXSize, after.RasterYSize):
            raise InputError(
                f"neither image is georeferenced and their sizes differ (before {before.RasterXSize}×"
                f"{before.RasterYSize}, after {after.RasterXSize}×{after.RasterYSize}); georeference them "
                "or give images of one size covering the same area")
        return after
    target = Grid.of(before)
    check_north_up(target.geotransform, target.width, target.height)
    if Grid.of(after).same_as(target):
        return after
    for dataset, role in ((before, "before"), (after, "after")):
        if not has_geotransform(dataset):  # GDAL would place it at (0, 0), 1 unit a pixel
            raise InputError(f"the {role} image has a CRS but no geotransform, and the images' grids differ: "
                             "nothing places its pixels on the ground; georeference it (QGIS Georeferencer)")
    _check_overlap(target, after)
    return warp_to_grid(after, target, "bilinear", "the after image")


def _one_crs_message(with_crs: gdal.Dataset, with_role: str, without: gdal.Dataset, without_role: str) -> str:
    if has_geotransform(without):  # placed, its CRS lost or never written: the fix is one command
        return (f"the {without_role} image has no CRS (the {with_role} image's is "
                f"{_crs_name(with_crs.GetProjection())}), so the two cannot be aligned; assign its CRS, "
                f"e.g. gdal_edit.py -a_srs EPSG:… FILE, or in QGIS Layer Properties ▸ Source ▸ Assigned "
                f"Coordinate Reference System, then export it (Export ▸ Save As…)")
    return (f"only the {with_role} image is georeferenced, so the two cannot be aligned; georeference the "
            f"{without_role} image too (e.g. with the QGIS Georeferencer), or give two without georeference")


def _crs_name(wkt: str) -> str:
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    code = srs.GetAuthorityCode(None)
    return f"{srs.GetAuthorityName(None)}:{code}" if code else (srs.GetName() or "unnamed")


# A rotation term whose effect across the whole image is below this fraction of a pixel is rounding
# in the writing tool (1e-15 from a reprojection), not a rotated image.
ROTATION_TOLERANCE_PX = 1e-3


def check_north_up(geotransform: Sequence[float], width: int, height: int) -> None:
    """Raise when the before image's ``geotransform`` (of a ``width`` × ``height`` image) has
    rotation terms: the outputs lie on its grid, row by row, and an area of interest is cut from it
    in rows and columns."""
    _, dx, rx, _, ry, dy = geotransform
    if abs(rx) * height > ROTATION_TOLERANCE_PX * abs(dx) or abs(ry) * width > ROTATION_TOLERANCE_PX * abs(dy):
        raise InputError("the before image is rotated (its geotransform has rotation terms); "
                         "warp it to a north-up grid first (Raster ▸ Projections ▸ Warp)")


def warp_to_grid(dataset: gdal.Dataset, target: Grid, resampling: str, what: str, **options: Any) -> gdal.Dataset:
    """``dataset`` resampled onto ``target`` as a VRT (nothing copied), with an alpha band that
    marks where it has data; ``options``: more of ``gdal.WarpOptions`` (a cutline)."""
    _, dx, _, _, _, dy = target.geotransform
    if dx < 0 or dy > 0:  # GDAL warps onto north-up grids only: the rows would come upside down
        raise InputError(f"{what} cannot be put on the before image's grid, which is stored "
                         f"{'south-up' if dy > 0 else 'east to west'} (its geotransform's pixel size is {dx:g} × "
                         f"{dy:g}); warp the before image to a north-up grid first (Raster ▸ Projections ▸ Warp, "
                         "or gdalwarp)")
    nodata = [dataset.GetRasterBand(index).GetNoDataValue() for index in range(1, dataset.RasterCount + 1)]
    if all(value is not None for value in nodata):
        # Each band keeps its nodata: a pixel one chosen band lacks is no data (read_window), where
        # the alpha marks only pixels every band lacks, and the others' zeros would be read as ground
        # As gdalwarp's text ("nan" too): GDAL's Python options take str() of a list, read as "[255.0," = 0
        options = {"dstNodata": " ".join(repr(value) for value in nodata), "warpOptions": ["INIT_DEST=NO_DATA"],
                   **options}
    with collect_gdal_errors() as errors:
        warped = gdal.Warp("", dataset, options=gdal.WarpOptions(
            format="VRT", dstSRS=target.crs_wkt or None, outputBounds=target.bounds(), width=target.width,
            height=target.height, resampleAlg=resampling, dstAlpha=True, **options))
    if warped is None:
        raise InputError(f"GDAL could not put {what} on the before grid: {errors.last('unknown error')}")
    return warped


def _check_overlap(target: Grid, after: gdal.Dataset) -> None:
    """Raise when the after image's footprint, in the before CRS, misses the before image."""
    footprint = Grid.of(after).bounds()
    if target.crs_wkt:
        footprint = transformed_bounds(footprint, after.GetProjection(), target.crs_wkt)
    if footprint is None or not bounds_overlap(footprint, target.bounds()):
        raise InputError("the before and after images do not overlap; choose two images of the same area")


Bounds = Tuple[float, float, float, float]  # x min, y min, x max, y max


def transformed_bounds(bounds: Bounds, source_wkt: str, target_wkt: str) -> Optional[Bounds]:
    """The box around ``bounds`` (in ``source_wkt``) in ``target_wkt``, from 20 points along each
    edge (a box's corners alone miss the bulge of its edges in another projection); None when no
    point can be transformed."""
    source, target = osr.SpatialReference(), osr.SpatialReference()
    source.ImportFromWkt(source_wkt)
    target.ImportFromWkt(target_wkt)
    for srs in (source, target):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    transform = osr.CoordinateTransformation(source, target)
    x0, y0, x1, y1 = bounds
    edge = np.linspace(0.0, 1.0, 21)
    xs = np.concatenate([x0 + (x1 - x0) * edge, np.full(21, x1), x1 - (x1 - x0) * edge, np.full(21, x0)])
    ys = np.concatenate([np.full(21, y0), y0 + (y1 - y0) * edge, np.full(21, y1), y1 - (y1 - y0) * edge])
    with collect_gdal_errors():
        points = np.array([transform.TransformPoint(float(x), float(y))[:2] for x, y in zip(xs, ys)])
    points = points[np.isfinite(points).all(axis=1)]
    if not len(points):
        return None
    return points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()


def bounds_overlap(a: Bounds, b: Bounds) -> bool:
    """Whether two boxes share an area (not only an edge)."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# How far (in target pixels) a label's grid may lie from the target grid and still be read as it
# is: rounding in a geotransform written by another tool, far below what warping would change.
LABEL_GRID_TOLERANCE_PX = 0.01


def label_on_grid(label: gdal.Dataset, target: gdal.Dataset, label_what: str, target_what: str) -> gdal.Dataset:
    """A label (classes) on ``target``'s grid. One that lies on it already is taken as it is, and so
    is one of the target's size when either lacks georeference; any other georeferenced label is
    resampled to it (nearest neighbour keeps its classes), e.g. a window of the same size cut
    elsewhere, which read as it is would score every pixel against another place."""
    size = (target.RasterXSize, target.RasterYSize)
    both_georeferenced = is_georeferenced(label) and is_georeferenced(target)
    if (label.RasterXSize, label.RasterYSize) == size and (
            not both_georeferenced or Grid.of(label).lies_on(Grid.of(target), LABEL_GRID_TOLERANCE_PX)):
        return label
    if not both_georeferenced:
        raise InputError(f"{label_what} is {label.RasterXSize}×{label.RasterYSize} but {target_what} is "
                         f"{size[0]}×{size[1]}, and without georeferencing the two cannot be aligned; give "
                         f"{label_what} on the grid of {target_what}")
    return warp_to_grid(label, Grid.of(target), "near", label_what)
