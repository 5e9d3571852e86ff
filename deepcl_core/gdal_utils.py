"""GDAL calls that fail with a clear :class:`DeepCLError` instead of a ``None`` or a console
message: errors are collected through a handler pushed on GDAL's (thread-local) handler stack, and
return values checked, with GDAL's exceptions off while the engine runs (:func:`gdal_return_values`)."""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Callable, Dict, Iterator, List, Optional, TypeVar

from osgeo import gdal, ogr, osr

Function = TypeVar("Function", bound=Callable)
_EXCEPTION_MODULES = (gdal, ogr, osr)
_RUNS_LOCK = threading.Lock()
_RUNS = [0]  # engine calls running, in any thread
_EXCEPTIONS_BEFORE: List[bool] = []  # each module's mode when the first of them began


def gdal_return_values(function: Function) -> Function:
    """Decorator for the engine's entry points: GDAL's exceptions are off while they run (their
    reader threads too) and come back as the caller had them. The engine checks GDAL's return
    values and words the errors itself; a host program that called ``gdal.UseExceptions()`` (GDAL 4's
    default) got bare RuntimeErrors instead of its InputErrors. The mode is the process's: while an
    engine call runs, other code of the process gets GDAL's return values too."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with _RUNS_LOCK:
            if _RUNS[0] == 0:
                _EXCEPTIONS_BEFORE[:] = [bool(module.GetUseExceptions()) for module in _EXCEPTION_MODULES]
                for module in _EXCEPTION_MODULES:
                    module.DontUseExceptions()
            _RUNS[0] += 1
        try:
            return function(*args, **kwargs)
        finally:
            with _RUNS_LOCK:
                _RUNS[0] -= 1
                if _RUNS[0] == 0:
                    for module, used in zip(_EXCEPTION_MODULES, _EXCEPTIONS_BEFORE):
                        if used:
                            module.UseExceptions()
    return wrapper  # type: ignore[return-value]


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
