"""GDAL calls that fail with a clear :class:`DeepCLError` instead of a ``None`` or a console
message. GDAL's exception mode is process-wide state, so it is left alone; errors are collected
through a handler pushed on GDAL's (thread-local) handler stack instead."""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List

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
