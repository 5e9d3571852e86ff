"""Where the plugin's resources are: inside the plugin folder once installed from the zip,
next to the package (the repository's ``resources/``) in the source tree."""
from __future__ import annotations

from pathlib import Path

from qgis.PyQt.QtGui import QIcon

_PACKAGE = Path(__file__).resolve().parent


def resources_dir() -> Path:
    bundled = _PACKAGE / "resources"
    return bundled if bundled.is_dir() else _PACKAGE.parent / "resources"


def bundled_model_path() -> Path:
    """The model used when the user picks none; the same file the engine's default points at."""
    return resources_dir() / "models" / "deepcl_default.pt"


def style_path(name: str) -> Path:
    return resources_dir() / "styles" / f"{name}.qml"


def icon(name: str) -> QIcon:
    return QIcon(str(resources_dir() / "icons" / f"{name}.svg"))
