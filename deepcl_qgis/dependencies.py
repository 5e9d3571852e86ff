"""Whether the Python packages the engine needs can be imported, and how to install them.

The plugin must load without them (QGIS users install it before they have PyTorch), so nothing
here imports torch at module level; the check runs the import once, when an algorithm needs it."""
from __future__ import annotations

import importlib
import os
import platform
import shlex
import shutil
import sys
from functools import lru_cache
from pathlib import Path
from typing import Optional, Tuple

# Module name → what a user installs to get it.
REQUIRED = {"torch": "torch", "numpy": "numpy", "osgeo.gdal": "GDAL Python bindings"}


@lru_cache(maxsize=None)
def missing_dependencies() -> Tuple[str, ...]:
    """Names of the required packages that fail to import (a real import: a broken CUDA or DLL
    install is as missing as an absent package)."""
    missing = []
    for module, package in REQUIRED.items():
        try:
            importlib.import_module(module)
        except Exception:  # ImportError, OSError from native libraries, and the like
            missing.append(package)
    return tuple(missing)


def install_hint(missing: Tuple[str, ...]) -> str:
    """A message that names what is missing and gives the command that installs it here."""
    names = ", ".join(missing)
    return (f"DeepCL needs the Python package(s) {names}, which the Python of QGIS cannot import. "
            f"Install PyTorch (CPU build, about 200 MB) for this Python, then restart QGIS:\n"
            f"    {_pip_command()}\n"
            "For an NVIDIA GPU, pick the CUDA build at https://pytorch.org/get-started/locally/ instead.\n"
            "Or let the plugin do it: Raster ▸ DeepCL ▸ DeepCL panel ▸ Install PyTorch…")


def _pip_command() -> str:
    cpu_wheels = "--index-url https://download.pytorch.org/whl/cpu"
    if platform.system() == "Windows":
        # The OSGeo4W shell puts the Python of QGIS first on PATH.
        return f"python -m pip install torch {cpu_wheels}   (in the OSGeo4W Shell)"
    # Into the plugin's own folder, as its installer does: Debian 12 and Ubuntu 23.04 on refuse
    # `pip install --user` into their system Python ("externally-managed-environment")
    return (f"{shlex.quote(python_executable())} -m pip install --target {shlex.quote(str(owned_packages_folder()))} "
            f"torch {cpu_wheels}")


def python_executable() -> str:
    """The interpreter of the Python QGIS runs, for pip. ``sys.executable`` is often the qgis
    binary itself, which cannot run ``-m pip``, or the first python3 on PATH, which may be another
    Python (a pyenv or conda shim) whose wheels QGIS's cannot import: the interpreter of this
    Python's own installation, of its version, comes first."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for folder in (Path(sys.exec_prefix) / "bin", Path(sys.exec_prefix), Path(sys.base_exec_prefix) / "bin"):
        for name in (f"python{version}", "python3", "python.exe", "python3.exe"):
            if (folder / name).is_file():
                return str(folder / name)
    if Path(sys.executable).name.lower().startswith("python"):
        return sys.executable
    return shutil.which(f"python{version}") or shutil.which("python3") or "python3"


def owned_packages_folder() -> Path:
    """The folder the plugin installs PyTorch into: in the QGIS profile, one per Python version
    (wheels are built for one), never QGIS's own site-packages. ``DEEPCL_DEPS_DIR`` overrides it."""
    override = os.environ.get("DEEPCL_DEPS_DIR")
    if override:
        return Path(override)
    from qgis.core import QgsApplication  # here, so that the module imports without QGIS too

    version = f"py{sys.version_info.major}.{sys.version_info.minor}"
    return Path(QgsApplication.qgisSettingsDirPath()) / "python" / "deepcl_deps" / version


def add_owned_packages_to_path(folder: Optional[Path] = None) -> bool:
    """Put the plugin's own package folder on ``sys.path`` (when it exists) and forget the cached
    import check. Appended, not prepended: numpy and GDAL of QGIS must win over any copies there.
    True when the folder is on the path afterwards."""
    folder = Path(folder) if folder is not None else owned_packages_folder()
    if not folder.is_dir():
        return False
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
        importlib.invalidate_caches()
        missing_dependencies.cache_clear()
    return True


def dependency_problem() -> str:
    """An empty string when everything imports, else the message to show the user."""
    missing = missing_dependencies()
    return install_hint(missing) if missing else ""
