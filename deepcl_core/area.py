"""Ground area of pixels and geometries in square metres, for projected and geographic CRSs."""
from __future__ import annotations

from typing import Optional

import numpy as np
from osgeo import ogr, osr

from .errors import InputError
from .gdal_utils import gdal_return_values
from .grid import Grid
from .raster_io import open_raster


def _srs(wkt: str) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def equal_area_transform(grid: Grid) -> Optional[osr.CoordinateTransformation]:
    """Grid CRS → a Lambert azimuthal equal-area projection centred on the grid, on the CRS's own
    ellipsoid: areas there are ground areas, whether the CRS is geographic or projected (whose
    nominal units are not, e.g. Web Mercator's grow by 1/cos² of latitude). None when the CRS is
    missing or local (no ellipsoid to measure on)."""
    if not grid.crs_wkt:
        return None
    source = _srs(grid.crs_wkt)
    if not (source.IsGeographic() or source.IsProjected()):
        return None
    x0, y0, x1, y1 = grid.bounds()
    lon, lat = (x0 + x1) / 2, (y0 + y1) / 2
    if source.IsProjected():
        geographic = source.CloneGeogCS()
        geographic.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        lon, lat, _ = osr.CoordinateTransformation(source, geographic).TransformPoint(lon, lat)
    target = osr.SpatialReference()
    # The source's own datum: no datum shift to look up, which a WGS 84 default would ask for.
    target.CopyGeogCSFrom(source)
    target.SetLAEA(lat, lon, 0, 0)
    target.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return osr.CoordinateTransformation(source, target)


# Where along a row a projected CRS's pixels are measured, and their weights: 3-point Gauss–Legendre,
# exact for a pixel area that varies along the row as a polynomial of degree 5 or less (UTM's grows
# with the distance from the central meridian), and clear of the edges, where a grid as wide as a
# hemisphere would reach the antipode of the projection's centre.
_ROW_SAMPLES = (0.5 - 0.15 ** 0.5, 0.5, 0.5 + 0.15 ** 0.5)
_ROW_WEIGHTS = (5 / 18, 8 / 18, 5 / 18)


def pixel_area_by_row(grid: Grid) -> Optional[np.ndarray]:
    """Area on the ground in m² of one pixel in each row of a north-up grid, or None when the
    image is not georeferenced. In a projected CRS, whose scale may vary along a row, it is the
    row's mean."""
    if not grid.crs_wkt:
        return None
    x0, dx, _, y0, _, dy = grid.geotransform
    to_equal_area = equal_area_transform(grid)
    if to_equal_area is None:
        metres = _srs(grid.crs_wkt).GetLinearUnits()
        return np.full(grid.height, abs(dx * dy) * metres ** 2)
    # Along a row of a geographic grid every pixel has the same area: one column is enough.
    samples = ((0.5,), (1.0,)) if _srs(grid.crs_wkt).IsGeographic() else (_ROW_SAMPLES, _ROW_WEIGHTS)
    areas = np.zeros(grid.height)
    for fraction, weight in zip(*samples):
        areas += weight * _column_areas(x0 + dx * (grid.width * fraction - 0.5), dx, y0, dy, grid.height,
                                        to_equal_area)
    # A row PROJ cannot measure (past a pole, e.g. a sinusoidal tile's edge) keeps its nominal area
    nominal = abs(dx * dy) * _srs(grid.crs_wkt).GetLinearUnits() ** 2
    return np.where(np.isfinite(areas), areas, nominal)


def _column_areas(left: float, dx: float, y0: float, dy: float, rows: int,
                  transform: osr.CoordinateTransformation) -> np.ndarray:
    """Areas after ``transform`` of the pixels whose left edge is at ``left``, one per row: each
    pixel's corners transformed (rows share them), then half the cross product of its diagonals."""
    ys = y0 + dy * np.arange(rows + 1)
    corners = np.column_stack([np.concatenate([np.full(rows + 1, left), np.full(rows + 1, left + dx)]),
                               np.concatenate([ys, ys])])
    points = np.asarray(transform.TransformPoints(corners))[:, :2]
    west, east = points[:rows + 1], points[rows + 1:]
    # Corners in order west-top, east-top, east-bottom, west-bottom; diagonals are differences of
    # nearby points, so no precision is lost to coordinates of a million metres.
    with np.errstate(invalid="ignore"):  # corners PROJ could not place are inf: NaN rows, handled by the caller
        first, second = east[1:] - west[:-1], west[1:] - east[:-1]
        return 0.5 * np.abs(first[:, 0] * second[:, 1] - first[:, 1] * second[:, 0])


def ground_pixel_size(grid: Grid) -> Optional[float]:
    """Side in metres of a square of the ground area of a pixel in the grid's centre row; None
    without georeference."""
    if not grid.crs_wkt:
        return None
    x0, dx, rx, y0, ry, dy = grid.geotransform
    if rx or ry:  # a rotated or sheared after image: the north-up grid of square pixels of its pixels' area
        side = abs(dx * dy - rx * ry) ** 0.5
        x0, y0 = x0 + (dx * grid.width + rx * grid.height) / 2, y0 + (ry * grid.width + dy * grid.height) / 2
        grid = Grid(1, 1, (x0 - side / 2, side, 0.0, y0 + side / 2, 0.0, -side), grid.crs_wkt)
        x0, dx, rx, y0, ry, dy = grid.geotransform
    centre_row = Grid(grid.width, 1, (x0, dx, rx, y0 + dy * (grid.height // 2), ry, dy), grid.crs_wkt)
    return float(np.sqrt(pixel_area_by_row(centre_row)[0]))


# Pixels this many times larger in one image than in the other are worth a warning: the pairs the
# model learned from were of one resolution, and an image resampled that far looks blurred or blocky.
# From 1.5 times on the blur of the resampled image already shows as false change (an image of 15 m or
# 20 m pixels beside one of 10 m).
PIXEL_SIZE_RATIO_WARNED = 1.5


def pixel_size_warning(before: Optional[float], after: Optional[float]) -> Optional[str]:
    """Why the result may suffer when the two images' ground pixels (:func:`ground_pixel_size`, in
    metres) differ by :data:`PIXEL_SIZE_RATIO_WARNED` times or more; None otherwise or without
    georeference."""
    sizes = {"before": before, "after": after}
    if None in sizes.values():
        return None
    coarse, fine = sorted(sizes, key=sizes.get, reverse=True)
    ratio = sizes[coarse] / sizes[fine]
    # As the warning shows it: measured on the ground, 15 m pixels beside 10 m may come a hair under 1.5 times
    if round(ratio, 1) < PIXEL_SIZE_RATIO_WARNED:
        return None
    return (f"the {coarse} image's pixels are {ratio:.1f} times as large as the {fine} image's "
            f"({sizes[coarse]:.3g} m against {sizes[fine]:.3g} m): the after image is resampled onto the "
            "before grid, so change smaller than the larger pixels cannot be found and the difference in "
            "sharpness may show as change; images of similar resolution give better results")


@gdal_return_values
def file_pixel_size(path: str) -> Optional[float]:
    """:func:`ground_pixel_size` of the raster at ``path``; None when GDAL cannot open it."""
    try:
        return ground_pixel_size(Grid.of(open_raster(path, "image")))
    except InputError:
        return None


def geometry_area_m2(geometry: ogr.Geometry, grid: Grid,
                     to_equal_area: Optional[osr.CoordinateTransformation] = None) -> Optional[float]:
    """Area of a geometry given in the grid's CRS, in m²; None without a CRS. Measuring many
    geometries of one grid, pass its :func:`equal_area_transform`, which takes far longer to build
    than a measure."""
    if not grid.crs_wkt:
        return None
    if to_equal_area is None:
        to_equal_area = equal_area_transform(grid)
    if to_equal_area is None:
        return geometry.GetArea() * _srs(grid.crs_wkt).GetLinearUnits() ** 2
    projected = geometry.Clone()
    projected.Transform(to_equal_area)
    return projected.GetArea()
