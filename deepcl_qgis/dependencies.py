"""Whether the Python packages the engine needs can be used, and how to install them.

The plugin must load without them (QGIS users install it before they have PyTorch), so nothing
here imports torch at module level; the check runs the import once, when an algorithm needs it."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import platform
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Sequence, Set, Tuple

# Module name → what a user installs to get it.
REQUIRED = {"torch": "torch", "numpy": "numpy", "osgeo.gdal": "GDAL Python bindings"}
# The oldest versions the engine works with, as pyproject.toml states them (torch>=2.1): an older
# torch imports, then fails where it reads the model file, with a message that blames the file.
MINIMUM_VERSIONS = {"torch": (2, 1)}
# Always QGIS's copies, never those of the plugin's folder, which serves torch and what it requires
# first (add_owned_packages_to_path): what QGIS's compiled modules are built against, and setuptools,
# which torch requires for building extensions only and much of Python's packaging relies on.
KEPT_FROM_QGIS = ("numpy", "osgeo", "osgeo_utils", "qgis", "PyQt5", "PyQt6", "sip", "setuptools", "pkg_resources",
                  "_distutils_hack")
NOT_INSTALLED = "is not installed"


@dataclass(frozen=True)
class UnusablePackage:
    """A required package that cannot serve: what a user installs, why, and the folder of the
    copy that failed (empty when there is none)."""

    package: str
    reason: str  # NOT_INSTALLED, "fails to import (OSError: …)" or "1.12.1 is older than …"
    location: str = ""

    def describe(self) -> str:
        return f"{self.package} {self.reason}" + (f" (at {self.location})" if self.location else "")


@lru_cache(maxsize=None)
def unusable_dependencies() -> Tuple[UnusablePackage, ...]:
    """The required packages that cannot be used, and why: a real import (a broken CUDA or DLL
    install is as unusable as an absent package) and the version the engine needs."""
    unusable = []
    for module, package in REQUIRED.items():
        reason = _why_unusable(module)
        if reason:
            location = package_location(module) if reason != NOT_INSTALLED else None
            unusable.append(UnusablePackage(package, reason, str(location or "")))
    return tuple(unusable)


def unusable_summary(unusable: Sequence[UnusablePackage]) -> str:
    """Each package that cannot be used and why, in one line ("" for none)."""
    return "; ".join(problem.describe() for problem in unusable)


def missing_dependencies() -> Tuple[str, ...]:
    """Names of the required packages that cannot be used (see :func:`unusable_dependencies`)."""
    return tuple(problem.package for problem in unusable_dependencies())


def _why_unusable(module: str) -> str:
    try:
        imported = importlib.import_module(module)
    except Exception as error:  # ImportError, OSError from native libraries (WinError 126 …), and the like
        if isinstance(error, ModuleNotFoundError) and error.name == module.split(".")[0]:
            return NOT_INSTALLED
        return f"fails to import ({type(error).__name__}: {' '.join(str(error).split())})"
    minimum = MINIMUM_VERSIONS.get(module)
    version = str(getattr(imported, "__version__", ""))
    if minimum and _version_numbers(version) < minimum:
        return f"{version} is older than the {'.'.join(map(str, minimum))} DeepCL needs"
    return ""


def _version_numbers(version: str) -> Tuple[int, ...]:
    """(2, 13) for "2.13.0+cpu"."""
    return tuple(int(number) for number in re.findall(r"\d+", version)[:2])


def package_location(module: str) -> Optional[Path]:
    """The folder (or file) of ``module``'s top-level package as imports find it (the one imported
    where it is), or None where there is none. Imports nothing itself."""
    try:
        spec = importlib.util.find_spec(module.split(".")[0])
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return None
    return Path(spec.origin).parent if spec.submodule_search_locations else Path(spec.origin)


def install_hint(unusable: Sequence[UnusablePackage]) -> str:
    """A message that says which packages cannot be used and why, and gives the command that
    installs PyTorch here."""
    names = ", ".join(problem.package for problem in unusable)
    return (f"DeepCL needs the Python package(s) {names}, which the Python of QGIS cannot use: "
            f"{unusable_summary(unusable)}.\n"
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
    # `pip install --user` into their system Python ("externally-managed-environment"). --upgrade
    # replaces a broken or old copy already there, which pip --target would otherwise keep.
    return (f"{shlex.quote(python_executable())} -m pip install --upgrade "
            f"--target {shlex.quote(str(owned_packages_folder()))} torch {cpu_wheels}")


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


class _OwnedFirstFinder(importlib.abc.MetaPathFinder):
    """Finds torch and the packages it requires in one folder before the rest of ``sys.path`` (not
    those of :data:`KEPT_FROM_QGIS`); other packages there are left to ``sys.path``, so that other
    plugins keep QGIS's copies of what they import."""

    def __init__(self, folder: Path) -> None:
        self.folder = str(folder)
        self.served: Optional[FrozenSet[str]] = None  # read when first needed, not at every QGIS start

    def refresh(self) -> None:
        """Read again what the folder holds (after an install)."""
        self.served = None

    def find_spec(self, name: str, path: Optional[Sequence[str]] = None,
                  target: object = None) -> Optional[importlib.machinery.ModuleSpec]:
        if path is not None:
            return None  # submodules follow their package's own __path__
        if self.served is None:
            folder = Path(self.folder)
            if not (folder / name).is_dir() and not (folder / f"{name}.py").is_file():
                return None  # nothing of the folder's is imported yet: it is read at the first that is
            self.served = torch_packages(folder)
        if name in self.served:
            return importlib.machinery.PathFinder.find_spec(name, [self.folder])
        return None


def torch_packages(folder: Path) -> FrozenSet[str]:
    """The top-level packages of torch and of what it requires, recursively (extras left out), as
    installed in ``folder`` (their .dist-info there); those of :data:`KEPT_FROM_QGIS` left out."""
    from importlib import metadata  # here: nothing at import time (a module QGIS loads at start)

    packages = set()
    for dist in requirement_closure("torch", metadata.distributions(path=[str(folder)])):
        packages |= set((dist.read_text("top_level.txt") or "").split()) or _top_level_names(dist.files or ())
    return frozenset(packages - set(KEPT_FROM_QGIS))


def requirement_closure(root: str, distributions: Iterable[Any]) -> List[Any]:
    """``root``'s distribution and those it requires, recursively (extras left out), among
    ``distributions`` (importlib.metadata's); requirements not among them are left out."""
    def key(name: str) -> str:  # PEP 503: "typing_extensions" is "typing-extensions"
        return re.sub(r"[-_.]+", "-", name).lower()

    installed = {key(dist.metadata["Name"] or ""): dist for dist in distributions}
    found: Dict[str, Any] = {}
    waiting = [root]
    while waiting:
        name = key(waiting.pop())
        if name in found or name not in installed:
            continue
        found[name] = installed[name]
        waiting += [re.split(r"[\s<>=!~;\[(]", requirement)[0] for requirement in found[name].requires or ()
                    if "extra ==" not in requirement]
    return list(found.values())


def _top_level_names(files: Sequence[Any]) -> Set[str]:
    """The packages and modules a distribution's files hold at the top (for wheels without
    top_level.txt): "torch/__init__.py" is torch, "typing_extensions.py" typing_extensions."""
    names = set()
    for file in files:
        top = Path(str(file)).parts[0]
        if top.endswith(".py"):
            names.add(top[:-3])
        elif "." not in top and top not in ("__pycache__", "bin") and len(Path(str(file)).parts) > 1:
            names.add(top)
    return names


def add_owned_packages_to_path(folder: Optional[Path] = None) -> bool:
    """Let imports use the plugin's own package folder (when it exists) and forget the cached
    check, always: packages may have arrived in a folder already on the path (an earlier failed
    install created it). True when the folder serves imports afterwards.

    Torch and what it requires are served from the folder first (:func:`torch_packages`): pip installs
    there the versions torch needs (sympy, typing_extensions …), and older copies that a Linux
    distribution installs beside QGIS (Debian 12's python3-sympy 1.11) would otherwise win and break
    torch, at import or in the middle of a training; reinstalling into the folder could not mend
    that. It is also the only fix the plugin can offer for a torch of QGIS's Python that is broken
    ("WinError 126 … c10.dll") or too old. numpy and GDAL stay QGIS's own (:data:`KEPT_FROM_QGIS`):
    QGIS's compiled modules are built against them. Other packages in the folder come after QGIS's
    (the folder is appended to ``sys.path``): other plugins keep the copies they had. A package
    imported before the plugin started stays the one in use: a loaded module cannot be unloaded."""
    folder = Path(folder) if folder is not None else owned_packages_folder()
    if not folder.is_dir():
        return False
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    # Compared by class name: a reload of the plugin makes a new class.
    finder = next((finder for finder in sys.meta_path if type(finder).__name__ == _OwnedFirstFinder.__name__
                   and getattr(finder, "folder", None) == str(folder)), None)
    if finder is None:
        sys.meta_path.insert(0, _OwnedFirstFinder(folder))
    else:
        finder.refresh()
    forget_dependency_check()
    return True


def forget_dependency_check() -> None:
    """Make the next check import afresh, e.g. after an install."""
    importlib.invalidate_caches()
    for top in {module.split(".")[0] for module in REQUIRED}:
        if top not in sys.modules:
            # Its import failed, leaving the submodules it had loaded: a copy installed since
            # would take them for its own.
            for name in [name for name in sys.modules if name.startswith(top + ".")]:
                del sys.modules[name]
    unusable_dependencies.cache_clear()


def dependency_problem() -> str:
    """An empty string when everything can be used, else the message to show the user."""
    unusable = unusable_dependencies()
    return install_hint(unusable) if unusable else ""
