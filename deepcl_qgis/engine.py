"""Which copy of the engine the plugin uses.

Installed from the zip, the plugin carries its own ``deepcl_core`` (a subpackage of the plugin, so
it never clashes with another copy on ``sys.path``); run from the source tree, it uses the
repository's ``deepcl_core``. Modules are imported on demand because most of them need torch,
which may be missing when the plugin loads."""
from __future__ import annotations

import importlib
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator, TypeVar

Function = TypeVar("Function", bound=Callable)

_BUNDLED_CORE = Path(__file__).resolve().parent / "deepcl_core"


def core_package() -> str:
    """Dotted name of the engine package in use."""
    return f"{__package__}.deepcl_core" if (_BUNDLED_CORE / "__init__.py").is_file() else "deepcl_core"


def core_module(name: str) -> ModuleType:
    """``deepcl_core.<name>`` from the copy in use, e.g. ``core_module("detect")``."""
    return importlib.import_module(f"{core_package()}.{name}")


def as_sentence(text: str) -> str:
    """One of the engine's messages, which begin in lower case as a command line's do, beginning with a
    capital, as it stands alone in QGIS beside the plugin's own; not where it begins with a file name
    (model.pt …)."""
    first = text.split(" ", 1)[0]
    return text if "." in first or "/" in first else text[:1].upper() + text[1:]


def gdal_return_values(function: Function) -> Function:
    """The engine's :func:`~deepcl_core.gdal_utils.gdal_return_values`, for the plugin's own GDAL
    calls, which check return values as the engine's do (importing it needs no torch)."""
    return core_module("gdal_utils").gdal_return_values(function)


@contextmanager
def engine_errors_as(wrap: Callable[[str], Exception]) -> Iterator[None]:
    """The engine's errors raised in the block (:func:`is_engine_error`) raised again as ``wrap(message)``,
    without their traceback; others as they are."""
    try:
        yield
    except Exception as exc:
        if not is_engine_error(exc):
            raise
        raise wrap(str(exc)) from None


def is_engine_error(error: BaseException) -> bool:
    """Whether ``error`` is one of the engine's (a ``DeepCLError``: worded for the user). Matched by
    the class's name and module, not by identity: QGIS's reload of a plugin forgets only the modules
    it saw imported, and engine modules imported on demand (:func:`core_module`) stay, raising the
    classes of an earlier load."""
    return any(cls.__name__ == "DeepCLError" and cls.__module__.endswith("deepcl_core.errors")
               for cls in type(error).__mro__)
