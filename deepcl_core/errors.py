"""Errors that reach the user as one clear line (exit status 2 on the command line), and what a
failed run leaves behind in the exception that reports it."""
from __future__ import annotations

import functools
import traceback
from typing import Callable, Optional, Set, TypeVar

Function = TypeVar("Function", bound=Callable)


class DeepCLError(Exception):
    """A problem with the user's input or environment, worded so that the user can fix it.

    The message names what is wrong and what to do. Front ends (CLI, Processing) show it as is,
    without a traceback.
    """


class InputError(DeepCLError):
    """A raster, band choice or option that cannot be used."""


class ModelFileError(DeepCLError):
    """A model file that is missing, corrupt, of another format or incompatible."""


class OutputError(DeepCLError):
    """An output that cannot be written."""


class DeviceMemoryError(DeepCLError):
    """The GPU ran out of memory even for the smallest piece of work detection can give it."""


class Cancelled(DeepCLError):
    """The run was cancelled through the cancel callable; no output is left behind."""

    def __init__(self, message: str = "Cancelled by the user; no output was written.") -> None:
        super().__init__(message)


def releases_locals_on_error(function: Function) -> Function:
    """Decorator: when ``function`` raises, the finished frames of the exception's traceback, and of
    the exceptions chained to it, drop their local variables. Whoever keeps the exception (QGIS
    keeps a failed or cancelled Processing run's) would otherwise keep what those frames held: GDAL
    datasets, that is input files left open, closed only when GDAL itself may be gone (at QGIS's exit,
    a double free)."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except BaseException as error:
            release_locals(error)
            raise
    return wrapper  # type: ignore[return-value]


def release_locals(error: BaseException) -> None:
    """The finished frames of ``error``'s traceback, and of the exceptions chained to it, drop their
    local variables (see :func:`releases_locals_on_error`)."""
    _clear_frames(error, set())


def _clear_frames(error: Optional[BaseException], seen: Set[int]) -> None:
    if error is None or id(error) in seen:
        return
    seen.add(id(error))
    traceback.clear_frames(error.__traceback__)  # skips the frames still running (the callers')
    _clear_frames(error.__cause__, seen)
    _clear_frames(error.__context__, seen)
