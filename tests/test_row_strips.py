"""Tiles cut from strips of whole rows of blocks, read in turn with the network (RowStrip) or by
several reader threads (SharedRowStrip): the windows GDAL would give, every row of the file read
once, GDAL's copy dropped when asked, errors passed on."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
from osgeo import gdal

from deepcl_core import row_strips
from deepcl_core.errors import InputError
from deepcl_core.grid import align_after_to_before
from deepcl_core.raster_io import open_raster, read_window
from deepcl_core.row_strips import RowStrip, SharedRowStrip
from deepcl_core.tiling import TileGrid


def tiled_copy(source: Path, target: Path, block: int) -> Path:
    """``source`` as a GeoTIFF in ``block``² tiles, whose rows do not line up with the tile rows."""
    gdal.Translate(str(target), str(source), creationOptions=["TILED=YES", f"BLOCKXSIZE={block}",
                                                              f"BLOCKYSIZE={block}"])
    return target


def rows_read(monkeypatch) -> List[Tuple[int, int]]:
    """(first, end) image rows of every read the strips make, from now on."""
    reads = []

    def recording(dataset, bands, x, y, width, height, *args, **kwargs):
        assert (x, width) == (0, dataset.RasterXSize)  # whole rows
        reads.append((y, y + height))
        return read_window(dataset, bands, x, y, width, height, *args, **kwargs)
    monkeypatch.setattr(row_strips, "read_window", recording)
    return reads


def test_windows_are_those_gdal_gives_and_each_row_is_read_once(data_dir, tmp_path, monkeypatch):
    """A real aerial image in 48² blocks, tiles of 40 rows 32 apart: the strip gives exactly the
    windows read one by one, and reads rows in whole rows of blocks, each once, top to bottom."""
    path = tiled_copy(data_dir / "sztaki" / "archieve" / "before.png", tmp_path / "tiled.tif", 48)
    dataset = open_raster(path, "before")
    reads = rows_read(monkeypatch)
    strip = RowStrip(dataset, [1, 2, 3], "before")
    tiles = TileGrid(dataset.RasterXSize, dataset.RasterYSize, 40, 8)
    for x, y in tiles.positions():
        pixels, valid = strip.window(x, y, tiles.tile_width, tiles.tile_height)
        expected, expected_valid = read_window(dataset, [1, 2, 3], x, y, tiles.tile_width, tiles.tile_height,
                                               "before", keep_integers=True)
        np.testing.assert_array_equal(pixels, expected)
        np.testing.assert_array_equal(valid, expected_valid)
    assert reads[0][0] == 0 and reads[-1][1] == dataset.RasterYSize
    assert all(end == start for (_, end), (start, _) in zip(reads, reads[1:]))  # no row twice, none skipped
    assert all(start % 48 == 0 for start, _ in reads)


def test_a_warped_image_with_nodata_gives_its_windows_and_drops_gdals_copy(oscd_mismatch_pair):
    """The OSCD after image warped onto the before grid (validity read from its alpha band): the same
    windows, and GDAL's block cache back where it was after each read when the strip drops blocks."""
    before = open_raster(oscd_mismatch_pair[0], "before")
    source = open_raster(oscd_mismatch_pair[1], "after")
    warped = align_after_to_before(before, source)
    assert warped is not source
    cached = gdal.GetCacheUsed()
    strip = RowStrip(warped, [1, 2, 3], "after", drop_blocks=[warped, source])
    tiles = TileGrid(warped.RasterXSize, warped.RasterYSize, 64, 16)
    try:
        for x, y in tiles.positions():
            pixels, valid = strip.window(x, y, tiles.tile_width, tiles.tile_height)
            assert gdal.GetCacheUsed() == cached
            expected, expected_valid = read_window(warped, [1, 2, 3], x, y, tiles.tile_width, tiles.tile_height,
                                                   "after", keep_integers=True)
            np.testing.assert_array_equal(pixels, expected)
            np.testing.assert_array_equal(valid, expected_valid)
            for dataset in (warped, source):  # the comparison's own read is no part of the strip's
                dataset.FlushCache()
    finally:  # a failure's traceback must not keep the warped image past the file it reads
        del strip, warped


def test_windows_above_the_rows_let_go_are_refused(levir_pair):
    strip = RowStrip(open_raster(levir_pair[0], "before"), [1, 2, 3], "before")
    strip.window(0, 100, 64, 64)
    with pytest.raises(ValueError, match="row order"):
        strip.window(0, 50, 64, 64)


def test_shared_rows_give_each_thread_its_windows_and_are_read_once(data_dir, tmp_path, monkeypatch):
    """Four reader threads, each with its own handle, read the tiles of a real image in 48² blocks
    in order, as beside a GPU: each gets exactly the windows GDAL gives, every row of blocks is read
    once, and rows above a taken tile are let go."""
    path = tiled_copy(data_dir / "sztaki" / "archieve" / "before.png", tmp_path / "tiled.tif", 48)
    first = open_raster(path, "before")
    reads = rows_read(monkeypatch)
    strip = SharedRowStrip(first, [1, 2, 3], "before")
    tiles = TileGrid(first.RasterXSize, first.RasterYSize, 40, 8)
    handles = threading.local()

    def read(position):
        if not hasattr(handles, "dataset"):
            handles.dataset = open_raster(path, "before")
        return strip.window(handles.dataset, [handles.dataset], *position, tiles.tile_width, tiles.tile_height)
    positions = list(tiles.positions())
    with ThreadPoolExecutor(4) as pool:
        for (x, y), (pixels, valid) in zip(positions, pool.map(read, positions)):
            expected, expected_valid = read_window(first, [1, 2, 3], x, y, tiles.tile_width, tiles.tile_height,
                                                   "before", keep_integers=True)
            np.testing.assert_array_equal(pixels, expected)
            np.testing.assert_array_equal(valid, expected_valid)
    assert sorted(reads) == [(start, min(start + 48, first.RasterYSize)) for start in range(0, first.RasterYSize, 48)]
    strip.let_go_above(700)
    assert sorted(strip._rows) == list(range(700 // 48, -(-first.RasterYSize // 48)))  # rows of blocks from 672


def test_a_failed_read_reaches_every_thread_waiting_for_its_row(levir_pair, monkeypatch):
    """A row of blocks that cannot be read fails the tile of the thread that read it and those of
    the threads waiting for it (a PNG's blocks are single rows: the first thread reads row 0 and
    fails; the second needs row 0 alone and waits), instead of leaving them waiting."""
    started = threading.Event()

    def failing(*args, **kwargs):
        started.set()
        time.sleep(0.2)  # the other thread asks for the row meanwhile
        raise InputError("cannot read the before image at pixel (0, 0): damaged")
    monkeypatch.setattr(row_strips, "read_window", failing)
    strip = SharedRowStrip(open_raster(levir_pair[0], "before"), [1, 2, 3], "before")
    handles = [open_raster(levir_pair[0], "before") for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        reading = pool.submit(strip.window, handles[0], [], 0, 0, 64, 64)
        started.wait(5)
        waiting = pool.submit(strip.window, handles[1], [], 64, 0, 64, 1)
        for future in (reading, waiting):
            with pytest.raises(InputError, match="damaged"):
                future.result(timeout=10)
    assert waiting.exception() is reading.exception()
    # The error's traceback holds this test's frame and the handles: let go now, not after GDAL at exit.
    reading.exception().__traceback__ = None
