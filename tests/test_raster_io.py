"""Reading windows: detection keeps 8- and 16-bit integers as they are (no float conversion in
GDAL); the values, and what the network gets from them, are those of a float32 read."""
import numpy as np
import pytest

from deepcl_core.normalization import ImageStretch, NormalizationSpec, normalize
from deepcl_core.raster_io import align_after_to_before, open_raster, read_window


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
