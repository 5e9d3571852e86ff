"""GDAL calls that fail with a clear :class:`DeepCLError` instead of a ``None`` or a console
message. GDAL's exception mode is process-wide state, so it is left alone; errors are collected
through a handler pushed on GDAL's (thread-local) handler stack instead."""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional

from osgeo import gdal


class GdalErrors:
    """Messages GDAL reported while the context was active."""

    def __init__(self) -> None:
        self.messages: List[str] = []

    def __call__(self, err_class: int, err_no: int, message: str) -> None:
        if err_class >= gdal.CE_Failure:
            self.messages.append(" ".join(str(message).split()))

    def last(self, default: str = "") -> str:
        return self.messages[-1] if self.messages else default


@contextlib.contextmanager
def collect_gdal_errors() -> Iterator[GdalErrors]:
    errors = GdalErrors()
    gdal.PushErrorHandler(errors)
    try:
        yield errors
    finally:
        gdal.PopErrorHandler()


def is_alpha(band: gdal.Band) -> bool:
    return band.GetColorInterpretation() == gdal.GCI_AlphaBand


def alpha_band(dataset: gdal.Dataset) -> Optional[gdal.Band]:
    """The last band when it is an alpha band. GDAL derives band masks from alpha only for 2- and
    4-band datasets, so e.g. a 4-band image warped with an alpha band (5 bands) needs this."""
    if dataset.RasterCount < 2:
        return None
    last = dataset.GetRasterBand(dataset.RasterCount)
    return last if is_alpha(last) else None


@contextlib.contextmanager
def thread_config(options: Dict[str, str]) -> Iterator[None]:
    """GDAL configuration ``options`` for this thread only (QGIS may run two detections at once),
    restored afterwards."""
    previous = {key: gdal.GetThreadLocalConfigOption(key, None) for key in options}
    for key, value in options.items():
        gdal.SetThreadLocalConfigOption(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            gdal.SetThreadLocalConfigOption(key, value)
