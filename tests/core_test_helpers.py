"""Helpers that engine tests import by name (a module of its own: ``conftest`` is ambiguous
between the test folders)."""
from __future__ import annotations

import gc
import os
import re
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Set

import numpy as np
import pytest
from osgeo import gdal

from deepcl_core.detect import DetectOutputs
from deepcl_core.model import NetworkConfig

TINY_CONFIG = NetworkConfig(encoder="simple_cnn", decoder_channels=(32, 32, 16, 16, 8))


def crop(source: Path, target: Path, xoff: int, yoff: int, width: int, height: int, keep_crs: bool = True) -> Path:
    """A window of ``source`` as a GeoTIFF (keeps georeference, band descriptions and types); without
    ``keep_crs`` the file keeps its geotransform only (a CRS to be set in QGIS, say)."""
    result = gdal.Translate(str(target), str(source), srcWin=[xoff, yoff, width, height], format="GTiff")
    assert result is not None, f"cannot crop {source}"
    if not keep_crs:
        result.SetSpatialRef(None)
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


class _RangeRequests(BaseHTTPRequestHandler):
    """Files of ``self.server.root`` over HTTP with byte ranges, as GDAL's /vsicurl/ reads them
    (the standard library's server ignores ranges)."""

    def do_HEAD(self) -> None:  # noqa: N802 (http.server API)
        self._serve(with_body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(with_body=True)

    def _serve(self, with_body: bool) -> None:
        path = self.server.root / self.path.split("?")[0].lstrip("/")  # a signed URL's query, as servers read it
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        asked = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if asked:
            start, end = int(asked[1]), min(int(asked[2] or len(data) - 1), len(data) - 1)
            data_sent = data[start:end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            data_sent = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(data_sent)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if with_body:
            self.wfile.write(data_sent)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def http_server(root: Path) -> Iterator[str]:
    """A local HTTP server for the files of ``root``; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RangeRequests)
    server.root = root
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# METHOD's misregistration: a shift of up to 2 px, and a small rotation, here moving no pixel over 1 px
SHIFT_PX, ROTATION_PX = 2.0, 1.0


def coordinates(height: int, width: int) -> np.ndarray:
    """An image whose bands are each pixel's own x and y: a warp's output is where each pixel came from
    (bilinear sampling of a linear ramp is exact)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([xx, yy])


def displacement(image: np.ndarray, warped: np.ndarray) -> np.ndarray:
    return np.hypot(warped[0] - image[0], warped[1] - image[1])


def outputs_in(folder: Path, distance: bool = True, polygons: bool = False) -> DetectOutputs:
    """A detection's outputs in ``folder`` (made): change, confidence and, as asked, distance and polygons."""
    folder.mkdir(parents=True, exist_ok=True)
    return DetectOutputs(change=folder / "change.tif", confidence=folder / "confidence.tif",
                         distance=folder / "distance.tif" if distance else None,
                         polygons=folder / "changes.gpkg" if polygons else None)
