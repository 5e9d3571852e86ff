"""The facts a bug report about the plugin needs: versions, devices and the install folder."""
from __future__ import annotations

import configparser
import importlib
import platform
from pathlib import Path
import sys
from typing import List, Optional, Tuple

from qgis.core import Qgis

from ..dependencies import (KEPT_FROM_QGIS, REQUIRED, UnusablePackage, owned_packages_folder, package_location,
                            python_executable, unusable_dependencies)
from ..engine import core_package
from ..paths import resources_dir
from ..torch_installer import installed_version

DRIVER_ROW = "NVIDIA driver"
ASKING_NVIDIA_SMI = "asking nvidia-smi…"
# (row, module) for the packages the engine needs, as :data:`dependencies.REQUIRED` names them.
PACKAGE_ROWS = (("GDAL", "osgeo.gdal"), ("numpy", "numpy"), ("PyTorch", "torch"))


def driver_text(driver_cuda: Optional[tuple]) -> str:
    """The NVIDIA driver row's value for :class:`nvidia_driver.DriverQuery`'s answer."""
    return (f"supports CUDA {driver_cuda[0]}.{driver_cuda[1]}" if driver_cuda
            else "none found (no nvidia-smi, or it gave no CUDA version in time)")


def diagnostics() -> List[Tuple[str, str]]:
    """(item, value) pairs, in the order a reader wants them; the NVIDIA driver's row says it is
    being asked, and :func:`with_driver` fills it in when nvidia-smi answers."""
    folder = owned_packages_folder()
    unusable = {problem.package: problem for problem in unusable_dependencies()}
    rows = [("DeepCL plugin", plugin_version()), ("DeepCL engine", _engine_version()),
            ("QGIS", Qgis.QGIS_VERSION), ("Python", f"{sys.version.split()[0]} ({python_executable()})"),
            ("Operating system", platform.platform())]
    rows += [(name, _package_text(module, unusable.get(REQUIRED[module]), folder)) for name, module in PACKAGE_ROWS]
    if "torch" not in unusable:
        rows += _torch_rows()
    rows.append((DRIVER_ROW, ASKING_NVIDIA_SMI))
    rows.append(("Plugin package folder", f"{folder} ({'exists' if folder.is_dir() else 'not created yet'})"))
    owned_torch = installed_version("torch", folder)
    rows.append(("PyTorch in that folder", owned_torch or "none"))
    rows.append(("Unusable packages", ", ".join(unusable) or "none"))
    return rows


def plugin_version() -> str:
    """The version in the plugin's metadata.txt, which sits beside its resources (the repository's
    root in the source tree, the plugin's folder once installed)."""
    metadata = configparser.ConfigParser(interpolation=None)
    path = resources_dir().parent / "metadata.txt"
    metadata.read(path, encoding="utf-8")
    return f"{metadata.get('general', 'version', fallback='unknown')} ({path.parent})"


def _engine_version() -> str:
    # The copy the plugin runs: its bundled one once installed from the zip, where no top-level
    # deepcl_core need exist (the repository's in the source tree).
    core = importlib.import_module(core_package())
    return f"{core.__version__} from {Path(core.__file__).parent}"


def _package_text(module: str, problem: Optional[UnusablePackage], owned_folder: Path) -> str:
    """The version and folder of the copy in use, or why none can be used. For PyTorch, whether it
    is the plugin's own copy: another one loaded first (e.g. by another plugin) stays in use."""
    if problem is not None:
        return problem.describe()
    location = package_location(module)
    if location is not None and location.parent == owned_folder:
        whose = " (the plugin's own copy)"
    else:
        whose = "" if module.split(".")[0] in KEPT_FROM_QGIS else " (not the plugin's copy)"
    return f"{importlib.import_module(module).__version__} from {location}{whose}"


def with_driver(rows: List[Tuple[str, str]], driver_cuda: Optional[tuple]) -> List[Tuple[str, str]]:
    """``rows`` with the NVIDIA driver's row saying :class:`nvidia_driver.DriverQuery`'s answer."""
    return [(name, driver_text(driver_cuda) if name == DRIVER_ROW else value) for name, value in rows]


def _torch_rows() -> List[Tuple[str, str]]:
    import torch

    rows = [("PyTorch CUDA build", torch.version.cuda or "none (CPU build)")]
    if torch.cuda.is_available():
        devices = [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    else:
        devices = ["cpu"]
    rows.append(("Devices", ", ".join(devices)))
    return rows


def diagnostics_text(rows: List[Tuple[str, str]]) -> str:
    """:func:`diagnostics`' rows as plain text to paste into a bug report."""
    width = max(len(name) for name, _ in rows)
    return "DeepCL diagnostics\n" + "\n".join(f"{name.ljust(width)} : {value}" for name, value in rows)
