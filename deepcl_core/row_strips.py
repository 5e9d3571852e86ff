"""Tiles cut from full-width strips of an image, each row of the file's blocks decoded once.

Tile rows overlap, and a file's blocks need not line up with them. A JPEG 2000 block (Sentinel-2
products, many orthophotos) is often 1024 rows high, so tile rows 704 rows apart touched each row of
blocks two or three times, and decoded it anew each time once GDAL's cache had been dropped to keep
memory flat. A strip reads whole rows of blocks, top to bottom, once, into one buffer, and keeps only
the rows that later tiles still need."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal

from .raster_io import read_window, window_dtype


class RowStrip:
    """Windows of ``bands`` of ``dataset`` (as :func:`~deepcl_core.raster_io.read_window` gives them,
    integers kept) for a reader that asks for them row by row, never above an earlier window's top,
    all of one height. ``drop_blocks``: datasets whose GDAL cache is dropped after each read (the
    image, and the file behind it when it is warped), so memory does not grow with the image; empty
    when the whole pair stays decoded (small images)."""

    def __init__(self, dataset: gdal.Dataset, bands: Sequence[int], role: str,
                 drop_blocks: Sequence[gdal.Dataset] = ()) -> None:
        self.dataset, self.bands, self.role = dataset, tuple(bands), role
        self.drop_blocks = tuple(drop_blocks)
        self.block_rows = max(1, dataset.GetRasterBand(self.bands[0]).GetBlockSize()[1])
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
        read_window(self.dataset, self.bands, 0, start, self.dataset.RasterXSize, end - start, self.role,
                    keep_integers=True, out=(self._pixels[:, rows], self._valid[rows]))
        for dataset in self.drop_blocks:  # every block of those rows is in the strip now
            dataset.FlushCache()
        self.rows += end - start
