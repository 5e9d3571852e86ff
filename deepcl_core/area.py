"""Ground area of pixels and geometries in square metres, for projected and geographic CRSs."""
from __future__ import annotations

from typing import Optional

import numpy as np
from osgeo import ogr, osr

from .errors import InputError
from .raster_io import Grid, open_raster


def _srs(wkt: str) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def equal_area_transform(grid: Grid) -> Optional[osr.CoordinateTransformation]:
    """Grid CRS → a Lambert azimuthal equal-area projection centred on the grid (exact areas for
    geographic CRSs); None when the CRS is already projected or missing."""
    if not grid.crs_wkt:
        return None
    source = _srs(grid.crs_wkt)
    if not source.IsGeographic():
        return None
    x0, y0, x1, y1 = grid.bounds()
    target = osr.SpatialReference()
    target.SetLAEA((y0 + y1) / 2, (x0 + x1) / 2, 0, 0)
    target.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return osr.CoordinateTransformation(source, target)


def pixel_area_by_row(grid: Grid) -> Optional[np.ndarray]:
    """Area in m² of one pixel in each row (constant along a row on a north-up grid), or None
    when the image is not georeferenced."""
    if not grid.crs_wkt:
        return None
    x0, dx, _, y0, _, dy = grid.geotransform
    to_equal_area = equal_area_transform(grid)
    if to_equal_area is None:
        metres = _srs(grid.crs_wkt).GetLinearUnits()
        return np.full(grid.height, abs(dx * dy) * metres ** 2)
    centre_x = x0 + dx * grid.width / 2
    areas = np.empty(grid.height)
    for row in range(grid.height):
        top = y0 + dy * row
        ring = [(centre_x, top), (centre_x + dx, top), (centre_x + dx, top + dy), (centre_x, top + dy)]
        areas[row] = _polygon_area(ring, to_equal_area)
    return areas


def ground_pixel_size(grid: Grid) -> Optional[float]:
    """Side in metres of a square of the area of the grid's centre pixel; None without georeference."""
    if not grid.crs_wkt:
        return None
    x0, dx, rx, y0, ry, dy = grid.geotransform
    centre_row = Grid(grid.width, 1, (x0, dx, rx, y0 + dy * (grid.height // 2), ry, dy), grid.crs_wkt)
    return float(np.sqrt(pixel_area_by_row(centre_row)[0]))


# Pixels this many times larger in one image than in the other are worth a warning: the pairs the
# model learned from were of one resolution, and an image resampled that far looks blurred or blocky.
PIXEL_SIZE_RATIO_WARNED = 3.0


def pixel_size_warning(before: Optional[float], after: Optional[float]) -> Optional[str]:
    """Why the result may suffer when the two images' ground pixels (:func:`ground_pixel_size`, in
    metres) differ by :data:`PIXEL_SIZE_RATIO_WARNED` times or more; None otherwise or without
    georeference."""
    sizes = {"before": before, "after": after}
    if None in sizes.values():
        return None
    coarse, fine = sorted(sizes, key=sizes.get, reverse=True)
    ratio = sizes[coarse] / sizes[fine]
    if ratio < PIXEL_SIZE_RATIO_WARNED:
        return None
    return (f"the {coarse} image's pixels are {ratio:.1f} times as large as the {fine} image's "
            f"({sizes[coarse]:.3g} m against {sizes[fine]:.3g} m): the after image is resampled onto the "
            "before grid, so change smaller than the larger pixels cannot be found and the difference in "
            "sharpness may show as change; images of similar resolution give better results")


def file_pixel_size(path: str) -> Optional[float]:
    """:func:`ground_pixel_size` of the raster at ``path``; None when GDAL cannot open it."""
    try:
        return ground_pixel_size(Grid.of(open_raster(path, "image")))
    except InputError:
        return None


def _polygon_area(ring, transform: osr.CoordinateTransformation) -> float:
    polygon = ogr.Geometry(ogr.wkbPolygon)
    linear = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in ring + ring[:1]:
        linear.AddPoint_2D(x, y)
    polygon.AddGeometry(linear)
    polygon.Transform(transform)
    return polygon.GetArea()


def geometry_area_m2(geometry: ogr.Geometry, grid: Grid) -> Optional[float]:
    """Area of a geometry given in the grid's CRS, in m²; None without a CRS."""
    if not grid.crs_wkt:
        return None
    to_equal_area = equal_area_transform(grid)
    if to_equal_area is None:
        return geometry.GetArea() * _srs(grid.crs_wkt).GetLinearUnits() ** 2
    projected = geometry.Clone()
    projected.Transform(to_equal_area)
    return projected.GetArea()
