"""The facts a bug report about the plugin needs: versions, devices and the install folder."""
from __future__ import annotations

import platform
from pathlib import Path
import sys
from typing import List, Optional, Tuple

from qgis.core import Qgis

from ..dependencies import missing_dependencies, owned_packages_folder, python_executable
from ..torch_installer import installed_version

DRIVER_ROW = "NVIDIA driver"
ASKING_NVIDIA_SMI = "asking nvidia-smi…"


def driver_text(driver_cuda: Optional[tuple]) -> str:
    """The NVIDIA driver row's value for :class:`nvidia_driver.DriverQuery`'s answer."""
    return (f"supports CUDA {driver_cuda[0]}.{driver_cuda[1]}" if driver_cuda
            else "none found (no nvidia-smi, or it gave no CUDA version in time)")


def diagnostics() -> List[Tuple[str, str]]:
    """(item, value) pairs, in the order a reader wants them; the NVIDIA driver's row says it is
    being asked, and :func:`with_driver` fills it in when nvidia-smi answers."""
    folder, missing = owned_packages_folder(), missing_dependencies()
    rows = [("QGIS", Qgis.QGIS_VERSION), ("Python", f"{sys.version.split()[0]} ({python_executable()})"),
            ("Operating system", platform.platform())]
    rows += _torch_rows(importable="torch" not in missing)
    rows.append((DRIVER_ROW, ASKING_NVIDIA_SMI))
    rows.append(("Plugin package folder", f"{folder} ({'exists' if folder.is_dir() else 'not created yet'})"))
    owned_torch = installed_version("torch", folder)
    rows.append(("PyTorch in that folder", owned_torch or "none"))
    rows.append(("Missing packages", ", ".join(missing) if missing else "none"))
    return rows


def with_driver(rows: List[Tuple[str, str]], driver_cuda: Optional[tuple]) -> List[Tuple[str, str]]:
    """``rows`` with the NVIDIA driver's row saying :class:`nvidia_driver.DriverQuery`'s answer."""
    return [(name, driver_text(driver_cuda) if name == DRIVER_ROW else value) for name, value in rows]


def _torch_rows(importable: bool) -> List[Tuple[str, str]]:
    if not importable:
        return [("PyTorch", "not importable")]
    import torch

    rows = [("PyTorch", f"{torch.__version__} from {Path(torch.__file__).parent.parent}"),
            ("PyTorch CUDA build", torch.version.cuda or "none (CPU build)")]
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
