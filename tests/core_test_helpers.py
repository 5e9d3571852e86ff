"""Helpers that engine tests import by name (a module of its own: ``conftest`` is ambiguous
between the test folders)."""
from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Set

import pytest
from osgeo import gdal

from deepcl_core.model import NetworkConfig

TINY_CONFIG = NetworkConfig(encoder="simple_cnn", decoder_channels=(32, 32, 16, 16, 8))


def crop(source: Path, target: Path, xoff: int, yoff: int, width: int, height: int) -> Path:
    """A window of ``source`` as a GeoTIFF (keeps georeference, band descriptions and types)."""
    result = gdal.Translate(str(target), str(source), srcWin=[xoff, yoff, width, height], format="GTiff")
    assert result is not None, f"cannot crop {source}"
    result = None
    return target


HAS_PROC = Path("/proc/self/fd").is_dir()  # where the files a process holds open can be listed (Linux)
needs_proc = pytest.mark.skipif(not HAS_PROC, reason="needs /proc (Linux)")


def files_open_in_this_process() -> Set[str]:
    """The paths behind this process's file descriptors (Linux), after a garbage collection: only
    the files something still holds count."""
    gc.collect()
    fds = Path("/proc/self/fd")
    paths = set()
    for fd in fds.iterdir():
        try:
            paths.add(os.readlink(fd))
        except OSError:  # closed meanwhile (the descriptor that listed the folder)
            pass
    return paths
