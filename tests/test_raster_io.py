"""Reading windows and samples: detection keeps 8- and 16-bit integers as they are (no float
conversion in GDAL); the values, the image statistics and what the network gets from them are those
of a float32 read."""
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
from osgeo import gdal

from deepcl_core import raster_io
from deepcl_core.grid import align_after_to_before
from deepcl_core.normalization import ImageStretch, NormalizationSpec, normalize, percentiles
from deepcl_core.raster_io import open_raster, read_sample, read_window, sample_windows


def _both_reads(dataset, bands, window):
    as_float = read_window(dataset, bands, *window, "image")
    kept = read_window(dataset, bands, *window, "image", keep_integers=True)
    return as_float, kept


@pytest.mark.parametrize("fixture, bands, dtype", [("levir_pair", [1, 2, 3], np.uint8),
                                                   ("oscd_mismatch_pair", [3, 2, 1], np.uint16)])
def test_integer_bands_are_kept_and_normalise_alike(request, fixture, bands, dtype):
    before, _ = request.getfixturevalue(fixture)
    dataset = open_raster(before, "before")
    (pixels, valid), (kept, kept_valid) = _both_reads(dataset, bands, (5, 7, 120, 100))
    assert pixels.dtype == np.float32 and kept.dtype == dtype
    np.testing.assert_array_equal(kept, pixels)
    np.testing.assert_array_equal(kept_valid, valid)
    spec = NormalizationSpec()
    stretch = ImageStretch.from_sample(pixels.reshape(len(bands), 1, -1), valid.reshape(1, -1), spec)
    np.testing.assert_array_equal(normalize(kept, stretch, spec, valid), normalize(pixels, stretch, spec, valid))


def test_warped_after_image_is_kept_in_its_type(oscd_mismatch_pair):
    """The after image on the before grid (a GDAL warp) reads the same either way."""
    before, after = oscd_mismatch_pair
    aligned = align_after_to_before(open_raster(before, "before"), open_raster(after, "after"))
    (pixels, valid), (kept, kept_valid) = _both_reads(aligned, [3, 2, 1], (0, 0, 64, 48))
    assert kept.dtype == np.uint16
    np.testing.assert_array_equal(kept, pixels)
    np.testing.assert_array_equal(kept_valid, valid)


def test_float_and_32_bit_bands_come_as_float32(write_raster):
    values = np.arange(2 * 6 * 5, dtype=np.float32).reshape(2, 6, 5) / 7
    values[0, 1, 1] = np.nan
    floating = open_raster(write_raster("float.tif", values), "image")
    pixels, valid = read_window(floating, [1, 2], 0, 0, 5, 6, "image", keep_integers=True)
    assert pixels.dtype == np.float32 and not valid[1, 1] and valid.sum() == 29
    np.testing.assert_array_equal(pixels[1], values[1])
    wide = open_raster(write_raster("int32.tif", np.full((1, 6, 5), 70000, np.int32)), "image")
    pixels, _ = read_window(wide, [1], 0, 0, 5, 6, "image", keep_integers=True)
    assert pixels.dtype == np.float32 and (pixels == 70000).all()


@pytest.mark.parametrize("fixture, bands, dtype", [("levir_pair", [1, 2, 3], np.uint8),
                                                   ("oscd_mismatch_pair", [3, 2, 1], np.uint16)])
def test_statistics_of_an_integer_sample_are_those_of_its_float32_read(request, fixture, bands, dtype):
    """The percentiles of 8- and 16-bit samples come from a histogram: the stretch is the one
    ``np.percentile`` gives on the same values read as float32, bit for bit."""
    for image in request.getfixturevalue(fixture):
        sample, valid = read_sample(open_raster(image, "image"), bands, "image")
        assert sample.dtype == dtype
        spec = NormalizationSpec()
        from_integers = ImageStretch.from_sample(sample, valid, spec)
        from_floats = ImageStretch.from_sample(sample.astype(np.float32), valid, spec)
        np.testing.assert_array_equal(from_integers.low, from_floats.low)
        np.testing.assert_array_equal(from_integers.high, from_floats.high)
        assert (from_integers.high > from_integers.low).all()


@pytest.mark.parametrize("values", [np.array([7], np.uint8), np.array([3, 3, 3, 3], np.uint16),
                                    np.array([0, 255], np.uint8), np.array([65535, 0, 1, 40000, 2], np.uint16),
                                    np.random.default_rng(0).integers(0, 4096, 10007).astype(np.uint16)])
def test_percentiles_of_integers_equal_numpys(values):
    percents = (0.0, 2.0, 37.5, 98.0, 100.0)
    np.testing.assert_array_equal(np.float32(percentiles(values, percents)),
                                  np.float32(np.percentile(values.astype(np.float32), percents)))


def _even_spread(size: int, window: int, per_side: int = 8):
    return [int((size - window) * (g + 0.5) / per_side) for g in range(per_side)]


@pytest.mark.parametrize("width, block, window", [(8192, 256, 128), (5000, 512, 128), (2400, 256, 256), (777, 64, 48)])
def test_sample_windows_lie_in_one_block_each_near_the_even_spread(width, block, window):
    corners = sample_windows(width, width, window, window, (block, block), 8)
    even = _even_spread(width, window)
    assert len(set(corners)) == 8 * 8
    assert corners == [(x, y) for y in sorted({y for _, y in corners}) for x in sorted({x for x, _ in corners})]
    for start, wanted in zip(sorted({x for x, _ in corners}), even):
        assert 0 <= start and start + window <= width
        assert start // block == (start + window - 1) // block, "the window crosses a block edge"
        assert abs(start - wanted) < window


@pytest.mark.parametrize("block", [(8192, 1), (8192, 16), (100, 100), (1024, 1024)])
def test_sample_windows_stay_evenly_spread_where_no_block_holds_a_window(block):
    """Strips (whole rows per block), blocks smaller than a window, and blocks larger than the
    windows' spacing (neighbours share blocks already): nothing to gain by moving."""
    even = _even_spread(8192, 128)
    assert sample_windows(8192, 8192, 128, 128, block, 8) == [(x, y) for y in even for x in even]


def _decoded_by(read):
    """What ``read()`` returns, and the bytes GDAL's block cache holds after it more than before:
    the blocks it decoded."""
    before = gdal.GetCacheUsed()
    result = read()
    return result, gdal.GetCacheUsed() - before


def _sampled_in_tiles(source: Path, folder: Path, block: int, window: int) -> Tuple[int, Tuple, int]:
    """``source`` as a GeoTIFF in ``block``² tiles, sampled with 8 × 8 windows of ``window``² asked
    for (max_side 256): the bytes one block decodes to, the sample and validity, the bytes the
    sample decoded."""
    path = folder / "tiled.tif"
    gdal.Translate(str(path), str(source), creationOptions=["TILED=YES", f"BLOCKXSIZE={block}", f"BLOCKYSIZE={block}"])
    previous = gdal.GetCacheMax()
    gdal.SetCacheMax(256 * 1024 * 1024)  # room for every block read
    try:
        dataset = open_raster(path, "image")
        _, one_block = _decoded_by(lambda: read_window(dataset, [1, 2, 3], 0, 0, block, block, "image"))
        dataset = open_raster(path, "image")  # a fresh handle: nothing of it decoded yet
        sampled, decoded = _decoded_by(lambda: read_sample(dataset, [1, 2, 3], "image", max_side=256,
                                                           windows_per_side=8, window=window))
    finally:
        gdal.SetCacheMax(previous)
    return one_block, sampled, decoded


def test_sample_of_a_tiled_file_decodes_one_block_per_window(data_dir, tmp_path):
    """A real image in 32² tiles, sampled with 24² windows: GDAL decodes one block per window, not
    the up to four of a window across block edges; the sample holds the image's pixels there."""
    source = data_dir / "sztaki" / "archieve" / "before.png"
    image = gdal.Open(str(source)).ReadAsArray()
    one_block, (sample, valid), decoded = _sampled_in_tiles(source, tmp_path, 32, 24)
    assert decoded == 8 * 8 * one_block
    corners = sample_windows(image.shape[2], image.shape[1], 24, 24, (32, 32), 8)
    expected = np.concatenate([image[:, y:y + 24, x:x + 24].reshape(3, -1) for x, y in corners], axis=1)
    np.testing.assert_array_equal(sample[:, 0, :], expected)
    assert valid.all()


def test_sample_of_a_file_of_large_blocks_decodes_fewer_of_them(data_dir, tmp_path, monkeypatch):
    """Blocks large against the windows (JPEG 2000's 1024² against 128²) would each be decoded whole
    for one window: fewer, larger windows then sample as many pixels within the decoding budget.
    Here a real image in 64² tiles, 8 × 8 windows of 16² asked for, and a budget of 4 blocks."""
    monkeypatch.setattr(raster_io, "SAMPLE_DECODED_PIXELS", 4 * 64 * 64)
    one_block, (sample, valid), decoded = _sampled_in_tiles(data_dir / "sztaki" / "archieve" / "before.png",
                                                            tmp_path, 64, 16)
    assert 0 < decoded <= 4 * one_block
    assert sample.shape == (3, 1, 8 * 8 * 16 * 16) and valid.shape == (1, 8 * 8 * 16 * 16)
