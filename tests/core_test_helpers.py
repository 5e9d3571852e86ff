"""Helpers that engine tests import by name (a module of its own: ``conftest`` is ambiguous
between the test folders)."""
from __future__ import annotations

from pathlib import Path

from osgeo import gdal

from deepcl_core.model import NetworkConfig

TINY_CONFIG = NetworkConfig(encoder="simple_cnn", decoder_channels=(32, 32, 16, 16, 8))


def crop(source: Path, target: Path, xoff: int, yoff: int, width: int, height: int) -> Path:
    """A window of ``source`` as a GeoTIFF (keeps georeference, band descriptions and types)."""
    result = gdal.Translate(str(target), str(source), srcWin=[xoff, yoff, width, height], format="GTiff")
    assert result is not None, f"cannot crop {source}"
    result = None
    return target
