"""Tiles cut from full-width strips of an image, each row of the file's blocks decoded once.

Tile rows overlap, and a file's blocks need not line up with them. A JPEG 2000 block (Sentinel-2
products, many orthophotos) is often 1024 rows high, so tile rows 704 rows apart touched each row of
blocks two or three times, and decoded it anew each time once GDAL's cache had been dropped to keep
memory flat. A strip reads whole rows of blocks, top to bottom, once, into one buffer, and keeps only
the rows that later tiles still need."""
from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal

from .gdal_utils import thread_config
from .raster_io import decoded_block_size, read_window, window_dtype


class RowStrip:
    """Windows of ``bands`` of ``dataset`` (as :func:`~deepcl_core.raster_io.read_window` gives them,
    integers kept) for a reader that asks for them row by row, never above an earlier window's top,
    all of one height. ``drop_blocks``: datasets whose GDAL cache is dropped after each read (the
    image, and the file behind it when it is warped), so memory does not grow with the image; empty
    when the whole pair stays decoded (small images). ``decode_threads``: GDAL's threads for the
    blocks of one read (:func:`read_rows`)."""

    def __init__(self, dataset: gdal.Dataset, bands: Sequence[int], role: str,
                 drop_blocks: Sequence[gdal.Dataset] = (), decode_threads: int = 1) -> None:
        self.dataset, self.bands, self.role = dataset, tuple(bands), role
        self.drop_blocks, self.decode_threads = tuple(drop_blocks), decode_threads
        self.block_rows = max(1, decoded_block_size(dataset, self.bands[0])[1])
        self.top = 0  # image row of the buffer's first row
        self.rows = 0  # rows of the buffer that hold image rows
        # (bands, capacity, width) and (capacity, width): a window's rows and the rest of their blocks
        self._pixels: Optional[np.ndarray] = None
        self._valid: Optional[np.ndarray] = None

    @property
    def bottom(self) -> int:
        return self.top + self.rows

    def window(self, x: int, y: int, width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
        """Pixels (bands, height, width) and validity (height, width): views into the strip, valid
        until the next call."""
        if y < self.top:
            raise ValueError(f"rows above {self.top} were let go; windows must come in row order (asked for {y})")
        if self._pixels is None:
            capacity = min(self.dataset.RasterYSize, height + self.block_rows)
            self._pixels = np.empty((len(self.bands), capacity, self.dataset.RasterXSize),
                                    window_dtype(self.dataset, self.bands, keep_integers=True))
            self._valid = np.empty((capacity, self.dataset.RasterXSize), bool)
        self._let_go_above(y)
        if y + height > self.bottom:
            self._read_down_to(y + height)
        rows = slice(y - self.top, y - self.top + height)
        return self._pixels[:, rows, x:x + width], self._valid[rows, x:x + width]

    def _let_go_above(self, y: int) -> None:
        """Move the rows from ``y`` on to the buffer's top."""
        kept = max(0, self.bottom - y)
        if kept and y > self.top:
            start = y - self.top
            self._pixels[:, :kept] = self._pixels[:, start:start + kept]  # numpy copies overlapping rows safely
            self._valid[:kept] = self._valid[start:start + kept]
        self.top, self.rows = y, kept

    def _read_down_to(self, needed: int) -> None:
        """Rows from the strip's bottom to the end of the row of blocks holding row ``needed - 1``."""
        start = self.bottom
        end = min(self.dataset.RasterYSize, -(-needed // self.block_rows) * self.block_rows,
                  self.top + self._valid.shape[0])
        rows = slice(self.rows, self.rows + end - start)
        read_rows(self.dataset, self.bands, start, end - start, self.role, self.drop_blocks, self.decode_threads,
                  out=(self._pixels[:, rows], self._valid[rows]))
        self.rows += end - start


class SharedRowStrip:
    """Rows of one image for several reader threads (beside a GPU), each row of blocks read once:
    by the first thread whose tile needs it, with that thread's own handle (GDAL datasets are not
    shared between threads), while other threads read other rows, or wait for it. Windows are copies, so a thread
    normalises its tile while the rows above are let go: :meth:`let_go_above`, called by the
    consumer, who takes tiles in order, once every tile above a row has been taken."""

    def __init__(self, dataset: gdal.Dataset, bands: Sequence[int], role: str, decode_threads: int = 1) -> None:
        """``dataset``: any handle of the image (its size and blocks; windows are read through each
        thread's own). ``decode_threads``: GDAL's threads for the blocks of one row of blocks."""
        self.width, self.height = dataset.RasterXSize, dataset.RasterYSize
        self.block_rows = max(1, decoded_block_size(dataset, bands[0])[1])
        self.bands, self.role, self.decode_threads = tuple(bands), role, decode_threads
        self._lock = threading.Lock()
        self._rows: Dict[int, Future] = {}  # row of blocks → Future of its (pixels, valid)

    def window(self, dataset: gdal.Dataset, drop_blocks: Sequence[gdal.Dataset], x: int, y: int, width: int,
               height: int) -> Tuple[np.ndarray, np.ndarray]:
        """Pixels (bands, height, width) and validity (height, width) of a window, read through
        ``dataset`` (the calling thread's handle; ``drop_blocks``: its datasets whose GDAL cache is
        dropped after each row of blocks it reads)."""
        needed = range(y // self.block_rows, (y + height - 1) // self.block_rows + 1)
        while True:  # one row at a time, so that threads needing the same rows read them side by side
            with self._lock:
                index = next((i for i in needed if i not in self._rows), None)
                if index is None:
                    rows = {i: self._rows[i] for i in needed}
                    break
                row = self._rows[index] = Future()
            self._read(index, dataset, drop_blocks, row)
        pixels = valid = None
        for index, row in rows.items():
            row_pixels, row_valid = row.result()
            if pixels is None:
                pixels = np.empty((len(self.bands), height, width), row_pixels.dtype)
                valid = np.empty((height, width), bool)
            start = index * self.block_rows
            first, end = max(y, start), min(y + height, start + row_valid.shape[0])
            pixels[:, first - y:end - y] = row_pixels[:, first - start:end - start, x:x + width]
            valid[first - y:end - y] = row_valid[first - start:end - start, x:x + width]
        return pixels, valid

    def _read(self, index: int, dataset: gdal.Dataset, drop_blocks: Sequence[gdal.Dataset], row: Future) -> None:
        start = index * self.block_rows
        try:
            row.set_result(read_rows(dataset, self.bands, start, min(self.block_rows, self.height - start), self.role,
                                     drop_blocks, self.decode_threads))
        except BaseException as exc:  # the threads waiting for this row get the error too
            row.set_exception(exc)
            raise

    def let_go_above(self, y: int) -> None:
        """Forget the rows of blocks that lie wholly above image row ``y``."""
        with self._lock:
            for index in [i for i in self._rows if (i + 1) * self.block_rows <= y]:
                del self._rows[index]


def read_rows(dataset: gdal.Dataset, bands: Sequence[int], start: int, count: int, role: str,
              drop_blocks: Sequence[gdal.Dataset], decode_threads: int,
              out: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``count`` whole rows from ``start`` (:func:`~deepcl_core.raster_io.read_window`, integers
    kept), their blocks decoded in ``decode_threads`` threads (GDAL decodes the blocks of one read
    side by side: GeoTIFF from GDAL 3.6, JPEG 2000 on every core by default), then GDAL's copy of
    ``drop_blocks`` dropped: every block of those rows is read."""
    try:
        with thread_config({"GDAL_NUM_THREADS": str(max(1, decode_threads))}):
            return read_window(dataset, bands, 0, start, dataset.RasterXSize, count, role, keep_integers=True, out=out)
    finally:
        for each in drop_blocks:
            each.FlushCache()
