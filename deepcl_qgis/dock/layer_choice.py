"""Which two raster layers the panel offers first: the two most recently added, the older
acquisition first when the layer names or metadata tell the dates."""
from __future__ import annotations

import re
from datetime import date
from typing import List, Optional, Sequence, Tuple

from qgis.core import QgsMapLayer, QgsProject, QgsRasterLayer

from ..algorithms.base import raster_file
from ..engine import gdal_return_values

# 2016-09-27, 2016_09_27, 2016:09:27 (TIFF), 20160927 (years 1970–2099), then a lone year.
_FULL_DATE = re.compile(r"(?<!\d)(19[7-9]\d|20\d\d)[-_.:/]?(0[1-9]|1[0-2])[-_.:/]?(0[1-9]|[12]\d|3[01])(?!\d)")
_YEAR = re.compile(r"(?<!\d)(19[7-9]\d|20\d\d)(?!\d)")
RESULT_PROPERTY = "deepcl/result"  # set on the layers the panel loads
# Acquisition dates in GDAL metadata: Sentinel-2 products (PRODUCT_START_TIME), Landsat, TIFF tags
_METADATA_KEYS = ("PRODUCT_START_TIME", "ACQUISITIONDATETIME", "DATE_ACQUIRED", "ACQUISITION_DATE",
                  "TIFFTAG_DATETIME", "DATETIME")
_BEFORE_WORDS = re.compile(r"(?i)(?<![a-z])(before|pre|old|t1|time1|earlier)(?![a-z])")
_AFTER_WORDS = re.compile(r"(?i)(?<![a-z])(after|post|new|t2|time2|later)(?![a-z])")


def date_in_text(text: str) -> Optional[date]:
    """The first full date in ``text``, else 1 July of the first year; None when there is none."""
    match = _FULL_DATE.search(text or "")
    if match:
        try:
            return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        except ValueError:
            pass
    year = _YEAR.search(text or "")
    return date(int(year.group(1)), 7, 1) if year else None


def acquisition_date(layer: QgsRasterLayer) -> Optional[date]:
    """The date the layer's name tells, else its GDAL metadata (acquisition or TIFF date)."""
    found = date_in_text(layer.name())
    if found is not None:
        return found
    provider = layer.dataProvider()
    metadata = _gdal_metadata(layer) if provider is not None and layer.providerType() == "gdal" else {}
    for key in _METADATA_KEYS:
        if key in metadata:
            found = date_in_text(metadata[key])
            if found is not None:
                return found
    return None


@gdal_return_values
def _gdal_metadata(layer: QgsRasterLayer) -> dict:
    from osgeo import gdal  # only for GDAL layers; the metadata QGIS shows is HTML

    # The name as a whole: a product's image in its zip has its part inside the zip apart ("vsiSuffix")
    dataset = gdal.Open(raster_file(layer, "image"))
    return {key.upper(): value for key, value in (dataset.GetMetadata() or {}).items()} if dataset else {}


def role_in_name(layer: QgsMapLayer) -> int:
    """-1 when the name says "before" (pre, t1 …), 1 when it says "after", else 0."""
    name = layer.name()
    if _BEFORE_WORDS.search(name) and not _AFTER_WORDS.search(name):
        return -1
    if _AFTER_WORDS.search(name) and not _BEFORE_WORDS.search(name):
        return 1
    return 0


def order_pair(first: QgsRasterLayer, second: QgsRasterLayer) -> Tuple[QgsRasterLayer, QgsRasterLayer]:
    """(before, after): by dates when both are known, else by before/after words, else as given
    (``first`` is the one added earlier)."""
    first_date, second_date = acquisition_date(first), acquisition_date(second)
    if first_date is not None and second_date is not None and first_date != second_date:
        return (first, second) if first_date < second_date else (second, first)
    if role_in_name(first) > role_in_name(second):
        return second, first
    return first, second


def recent_raster_layers(project: QgsProject) -> List[QgsRasterLayer]:
    """Raster layers, most recently added first: QGIS puts a new layer at the top of the tree."""
    layers = [node.layer() for node in project.layerTreeRoot().findLayers()]
    # The panel's own results are rasters too, but never an input a user means; nor a basemap (XYZ,
    # WMS): only layers GDAL reads can be detected on, as the panel's combos offer.
    return [layer for layer in layers if isinstance(layer, QgsRasterLayer) and layer.isValid()
            and layer.providerType() == "gdal" and not layer.customProperty(RESULT_PROPERTY)]


def preselect(layers: Sequence[QgsRasterLayer]) -> Tuple[Optional[QgsRasterLayer], Optional[QgsRasterLayer]]:
    """(before, after) from layers listed most recent first: the newest, and the newest earlier
    layer that can be its other date, else the one added just before it."""
    if not layers:
        return None, None
    if len(layers) == 1:
        return layers[0], None
    newest = layers[0]
    newest_date = acquisition_date(newest)  # a date may cost opening the file: once
    partner = next((layer for layer in layers[1:] if _counterpart(layer, newest.bandCount(), newest_date)),
                   layers[1])
    return order_pair(partner, newest)


def _counterpart(layer: QgsRasterLayer, bands: int, date_: Optional[date]) -> bool:
    """Whether ``layer`` may be the other date of a layer of ``bands`` bands taken on ``date_``: as
    many bands, and not known to be of that date. Adding Sentinel-2 products with all their images
    (10 m, 20 m, 60 m bands, TCI) gives images of one date side by side: a pair of them is never meant."""
    if layer.bandCount() != bands:
        return False
    other = acquisition_date(layer)
    return None in (date_, other) or other != date_
