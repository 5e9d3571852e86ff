"""Reading windows and samples: detection keeps 8- and 16-bit integers as they are (no float
conversion in GDAL); the values, the image statistics and what the network gets from them are those
of a float32 read."""
import numpy as np
import pytest

from deepcl_core.normalization import ImageStretch, NormalizationSpec, normalize, percentiles
from deepcl_core.raster_io import align_after_to_before, open_raster, read_sample, read_window


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
