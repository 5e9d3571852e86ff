"""The panel's last choices, kept between QGIS sessions in QgsSettings."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Optional

from qgis.core import QgsSettings

from ..engine import core_module

PREFIX = "deepcl/panel/"
# 2: thresholds apply to a calibrated model's confidence, not the network's score; a threshold kept
# by an earlier version (e.g. 0.01, the old 10 m default) would mark far too much, so it is dropped.
SETTINGS_VERSION = 2


@dataclass
class PanelChoices:
    """Everything the panel remembers; layers by their source so they are found again in a
    reopened project (layer ids change between projects)."""

    before_source: str = ""
    after_source: str = ""
    bands_before: str = ""  # the bands checked for those layers ("4,3,2"); empty: found by the engine
    bands_after: str = ""
    model_path: str = ""  # empty: the bundled model
    threshold: float = -1.0  # below 0: the chosen model's own threshold
    device: str = "auto"
    area: str = "whole"  # form.WHOLE_IMAGE, form.MAP_VIEW or form.POLYGONS
    area_layer_source: str = ""  # the polygon layer for form.POLYGONS
    tile_size: int = field(default_factory=lambda: core_module("tiling").DEFAULT_TILE)
    overlap: int = field(default_factory=lambda: core_module("tiling").DEFAULT_OVERLAP)
    batch_size: int = 0  # 0: the device's default
    polygons: bool = False
    min_area: float = 0.0
    output_folder: str = ""  # empty: a temporary folder


def load_choices(settings: Optional[QgsSettings] = None) -> PanelChoices:
    settings = settings or QgsSettings()
    defaults = PanelChoices()
    values = {}
    for item in fields(PanelChoices):
        default = getattr(defaults, item.name)
        values[item.name] = _typed(settings.value(PREFIX + item.name, default), default)
    if _typed(settings.value(PREFIX + "version", 1), 1) < SETTINGS_VERSION:
        values["threshold"] = defaults.threshold
    return PanelChoices(**values)


def save_choices(choices: PanelChoices, settings: Optional[QgsSettings] = None) -> None:
    settings = settings or QgsSettings()
    for name, value in asdict(choices).items():
        settings.setValue(PREFIX + name, value)
    settings.setValue(PREFIX + "version", SETTINGS_VERSION)


def _typed(value: object, default: object) -> object:
    """QSettings returns strings from .ini files ('true', '0.5'); give back the default's type,
    or the default when the stored value is unreadable."""
    try:
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("true", "1", "yes")
        return type(default)(value)
    except (TypeError, ValueError):
        return default
