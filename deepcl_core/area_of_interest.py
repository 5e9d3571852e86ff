"""Restricting detection to an area of interest: an extent, polygons of a mask layer, or both.

The inputs are cut, not the outputs: the before image is cropped to the area's pixel window in a
GDAL VRT (nothing copied, its pixels and their grid unchanged), and the after image with it when
both lie on one grid (otherwise it is put on the cropped grid as any after image is). A mask then
becomes an alpha band (a warped VRT with a cutline, on the same grid), so that pixels outside the
polygons are nodata: they come out as nodata and do not count in the changed area. The
normalisation statistics are those of the area, as if the user had cut the images first."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

from osgeo import gdal, ogr

from .errors import InputError
from .gdal_utils import collect_gdal_errors
from .grid import Bounds, Grid, bounds_overlap, check_north_up, map_geotransform, transformed_bounds, warp_to_grid
from .raster_io import Window, has_geotransform, is_georeferenced, open_dataset


@dataclass(frozen=True)
class AreaOfInterest:
    """Where to detect. ``extent``: x min, y min, x max, y max in the before image's CRS (for an
    image without georeference, in the pixel units QGIS shows it in: x = column, y = -row).
    ``mask``: a vector dataset of polygons in any CRS (``mask_layer``: which of its layers; the
    first when None)."""

    extent: Optional[Bounds] = None
    mask: Optional[Union[str, os.PathLike]] = None  # kept as str: GDAL's name for it
    mask_layer: Optional[str] = None

    def __post_init__(self) -> None:
        if self.mask is not None:
            object.__setattr__(self, "mask", os.fspath(self.mask))
        if self.extent is not None:
            if len(self.extent) != 4:
                raise InputError(f"an extent is four numbers, x min, y min, x max, y max; got {self.extent}")
            x0, y0, x1, y1 = self.extent
            if not all(math.isfinite(v) for v in self.extent) or x0 >= x1 or y0 >= y1:
                raise InputError(f"an extent is x min, y min, x max, y max with min < max; got {self.extent}")

    def warnings(self) -> List[str]:
        """What the run should say of the area: a mask without a CRS is taken to be in the before image's."""
        if self.mask is None:
            return []
        source, layer = _mask_layer(self.mask, self.mask_layer)  # the layer lives as long as its source
        if layer.GetSpatialRef() is not None:
            return []
        return [f"the mask {self.mask} has no CRS: its coordinates are taken to be in the before image's"]

    def window(self, before: gdal.Dataset) -> Window:
        """The pixels of ``before`` the area touches."""
        area = self.extent
        if self.mask is not None:
            masked = _mask_bounds(self.mask, self.mask_layer, before)
            area = masked if area is None else intersection(area, masked)
        if area is None:
            return 0, 0, before.RasterXSize, before.RasterYSize
        return pixel_window(before, area)

    def restrict(self, before: gdal.Dataset, after: gdal.Dataset,
                 window: Optional[Window] = None) -> Tuple[gdal.Dataset, gdal.Dataset, Window]:
        """``before`` and ``after`` cut to the area (see the module's words), and the window cut
        (``window``, when given, is this area's :meth:`window` of ``before``, found before)."""
        window = window or self.window(before)
        cropped = crop(before, window)
        if Grid.of(after).same_as(Grid.of(before)):
            after = crop(after, window)
        if self.mask is not None:
            cropped = _masked(cropped, self.mask, self.mask_layer)
        return cropped, after, window


def pixel_window(dataset: gdal.Dataset, area: Bounds) -> Window:
    """The pixels of ``dataset`` that ``area`` (in its CRS, or QGIS's pixel units) touches."""
    geotransform = map_geotransform(dataset.GetGeoTransform())
    check_north_up(geotransform, dataset.RasterXSize, dataset.RasterYSize)
    x0, dx, _, y0, _, dy = geotransform
    width, height = dataset.RasterXSize, dataset.RasterYSize
    columns = sorted(((area[0] - x0) / dx, (area[2] - x0) / dx))
    rows = sorted(((area[1] - y0) / dy, (area[3] - y0) / dy))
    # A box drawn along pixel edges stays within them, give or take rounding.
    left, right = max(0, math.floor(columns[0] + 1e-6)), min(width, math.ceil(columns[1] - 1e-6))
    top, bottom = max(0, math.floor(rows[0] + 1e-6)), min(height, math.ceil(rows[1] - 1e-6))
    if right <= left or bottom <= top:
        raise InputError(_outside_message(area, x0, dx, y0, dy, width, height))
    return left, top, right - left, bottom - top


def _outside_message(area: Bounds, x0: float, dx: float, y0: float, dy: float, width: int, height: int) -> str:
    xs, ys = sorted((x0, x0 + dx * width)), sorted((y0, y0 + dy * height))
    return (f"the area of interest (x {area[0]:.10g} to {area[2]:.10g}, y {area[1]:.10g} to {area[3]:.10g}) "
            f"lies outside the before image, which spans x {xs[0]:.10g} to {xs[1]:.10g}, "
            f"y {ys[0]:.10g} to {ys[1]:.10g} in its CRS; choose an area inside it")


def crop(dataset: gdal.Dataset, window: Window) -> gdal.Dataset:
    """``dataset`` cut to ``window``, as a VRT in memory. An image without georeference gets QGIS's
    pixel units for the cut's place (x = column, y = -row), so outputs sit on it in QGIS."""
    if window == (0, 0, dataset.RasterXSize, dataset.RasterYSize):
        return dataset
    with collect_gdal_errors() as errors:
        cropped = gdal.Translate("", dataset, options=gdal.TranslateOptions(format="VRT", srcWin=list(window)))
    if cropped is None:
        raise InputError(f"GDAL could not cut the image to the area of interest: {errors.last('unknown error')}")
    if not has_geotransform(dataset):
        cropped.SetGeoTransform((float(window[0]), 1.0, 0.0, -float(window[1]), 0.0, -1.0))
    return cropped


def _mask_layer(mask: str, layer_name: Optional[str]) -> Tuple[ogr.DataSource, ogr.Layer]:
    source = open_dataset(mask, "mask", gdal.OF_VECTOR)
    layer = source.GetLayerByName(layer_name) if layer_name else source.GetLayer(0)
    if layer is None:
        names = ", ".join(source.GetLayer(i).GetName() for i in range(source.GetLayerCount()))
        raise InputError(f"mask {mask} has no layer {layer_name!r}" + (f"; its layers: {names}" if names else ""))
    return source, layer


def _mask_bounds(mask: str, layer_name: Optional[str], before: gdal.Dataset) -> Bounds:
    """The box around the mask's polygons, in the before image's CRS."""
    if not is_georeferenced(before):
        raise InputError("a mask needs georeferenced images; give an extent instead, or georeference "
                         "the images first")
    source, layer = _mask_layer(mask, layer_name)
    if not any(feature.GetGeometryRef() is not None for feature in layer):  # features without geometry, too
        raise InputError(f"mask {mask} holds no polygon")
    x0, x1, y0, y1 = layer.GetExtent()
    crs = layer.GetSpatialRef()
    if crs is None:  # see AreaOfInterest.warnings
        return x0, y0, x1, y1
    bounds = transformed_bounds((x0, y0, x1, y1), crs.ExportToWkt(), before.GetProjection())
    if bounds is None:
        raise InputError(f"the mask's polygons cannot be put in the before image's CRS ({mask})")
    return bounds


def intersection(a: Bounds, b: Bounds) -> Bounds:
    """The part of the extent ``a`` that the mask's box ``b`` covers."""
    if not bounds_overlap(a, b):
        raise InputError(f"the extent ({', '.join(f'{v:.10g}' for v in a)}) and the mask's polygons "
                         "do not overlap; choose an extent around them, or no extent")
    return max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])


def _masked(dataset: gdal.Dataset, mask: str, layer_name: Optional[str]) -> gdal.Dataset:
    """``dataset`` on its own grid with an alpha band that is 0 outside the mask's polygons (GDAL
    puts the cutline in the image's CRS)."""
    source, layer = _mask_layer(mask, layer_name)
    if not any(feature.GetGeometryRef() is not None and feature.GetGeometryRef().HasCurveGeometry()
               for feature in layer):
        return warp_to_grid(dataset, Grid.of(dataset), "near", f"the image cut by the mask {mask}",
                            cutlineDSName=mask, cutlineLayer=layer_name)
    # GDAL cuts by straight-sided polygons only ("Cutline not of polygon type" for a circle drawn with
    # QGIS's curve tools): a copy in memory with the curves made straight segments, as QGIS draws them.
    # The warped VRT keeps the cutline itself, so the copy goes once it is made.
    linear = f"/vsimem/deepcl_mask_{os.getpid()}_{id(dataset)}.gpkg"
    try:
        with collect_gdal_errors() as errors:
            copied = gdal.VectorTranslate(linear, source, options=gdal.VectorTranslateOptions(
                format="GPKG", layers=[layer.GetName()], geometryType="CONVERT_TO_LINEAR"))
        if copied is None:
            raise InputError(f"GDAL could not make the curves of the mask {mask} straight: "
                             f"{errors.last('unknown error')}")
        copied = None  # closed: written
        return warp_to_grid(dataset, Grid.of(dataset), "near", f"the image cut by the mask {mask}",
                            cutlineDSName=linear, cutlineLayer=layer.GetName())
    finally:
        gdal.Unlink(linear)
