"""GDAL calls that fail with a clear :class:`DeepCLError` instead of a ``None`` or a console
message: errors are collected through a handler pushed on GDAL's (thread-local) handler stack, and
return values checked, with GDAL's exceptions off while the engine runs (:func:`gdal_return_values`)."""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

from osgeo import gdal, ogr, osr

Function = TypeVar("Function", bound=Callable)
Result = TypeVar("Result")
_EXCEPTION_MODULES = (gdal, ogr, osr)
_RUNS_LOCK = threading.Lock()
_RUNS = [0]  # engine calls running, in any thread
_EXCEPTIONS_BEFORE: List = []  # the modules whose exceptions were on when the first call began, in their order


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
                _EXCEPTIONS_BEFORE[:] = _exceptions_off()
            _RUNS[0] += 1
        try:
            return function(*args, **kwargs)
        finally:
            with _RUNS_LOCK:
                _RUNS[0] -= 1
                if _RUNS[0] == 0:
                    for module in _EXCEPTIONS_BEFORE:
                        module.UseExceptions()
    return wrapper  # type: ignore[return-value]


def _exceptions_off() -> List:
    """Turn off the exceptions of each of gdal, ogr and osr that had them on; returns those modules
    in the order they had been turned on. GDAL 3.6's bindings keep one stack of error handlers for
    the three and refuse to take a module's off the stack unless it is on top ("Cannot call
    gdal.DontUseExceptions() at that point"), and the order a host turned them on in is not told:
    the one on top is the one that accepts."""
    remaining = [module for module in _EXCEPTION_MODULES if module.GetUseExceptions()]
    taken_off: List = []
    while remaining:
        for module in remaining:
            try:
                module.DontUseExceptions()
            except RuntimeError:  # not on top of the stack
                continue
            remaining.remove(module)
            taken_off.append(module)
            break
        else:  # none would come off: the stack holds other handlers above them; leave the rest on
            break
    return taken_off[::-1]


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


def interruptible(work: Callable[[Callable[[], bool]], Result]) -> Result:
    """``work(stopped)`` in a worker thread, for a GDAL call with a progress callback, which should
    return false once ``stopped()`` is true. Python raises a signal's KeyboardInterrupt (Ctrl-C; the
    command line's SIGTERM too) in the main thread, at the next Python line it runs: during a GDAL
    call, inside the callback, where GDAL's bindings print its traceback and drop it, and the call
    fails with "User terminated". Here the waiting caller takes the interrupt instead: it sets
    ``stopped()``, waits until GDAL has let go of its files and raises the interrupt again."""
    stop, finished = threading.Event(), threading.Event()
    outcome: List[Tuple[bool, object]] = []

    def run() -> None:
        try:
            outcome.append((True, work(stop.is_set)))
        except BaseException as error:  # raised again in the caller's thread
            outcome.append((False, error))
        finally:
            finished.set()

    # Not a daemon: should an interrupt come inside start(), before the worker is seen running, Python
    # still waits for it at exit instead of ending it inside GDAL, which aborts the process
    # ("terminate called without an active exception")
    worker = threading.Thread(target=run, name="deepcl-gdal")
    try:
        worker.start()
        _wait_for(finished)
    except KeyboardInterrupt:
        stop.set()
        while worker.is_alive() and not finished.is_set():  # GDAL stops at its next progress call
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C changes nothing
                _wait_for(finished)
        raise
    succeeded, value = outcome[0]
    if not succeeded:
        raise value  # type: ignore[misc]
    return value  # type: ignore[return-value]


def _wait_for(event: threading.Event) -> None:
    # Not Thread.join: interrupted, Python 3.11's marks the running thread as ended. In short waits:
    # a signal the kernel hands to another thread sets Python's flag without waking this one.
    while not event.wait(0.1):
        pass
