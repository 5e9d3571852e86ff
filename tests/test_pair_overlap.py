"""How detection treats two images that do not share all their ground, on a real OSCD pair (bercy,
Sentinel-2, 360×395): both stretched on the pixels valid in both; a pair without such a pixel
refused; images placed by geotransforms without a CRS aligned by those; a geotransform whose
rotation terms are rounding taken as north-up. The tiny fixture model is untrained: these tests pin
contracts, not accuracy."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np
import pytest
import torch
from osgeo import gdal

from deepcl_core.detect import DetectOptions, _open_pair, _statistics_and_network, detect_changes
from deepcl_core.errors import InputError
from deepcl_core.model_file import ModelBundle

import core_test_helpers
from core_test_helpers import crop

FAST = dict(tile_size=128, overlap=32, device="cpu")
NO_COMMON_PIXEL = "no valid pixel in common"


@pytest.fixture(scope="module")
def bercy(data_dir: Path) -> Tuple[Path, Path]:
    city = data_dir / "oscd" / "bercy"
    return city / "before.tif", city / "after.tif"


outputs_in = partial(core_test_helpers.outputs_in, distance=False)


def edited_copy(source: Path, target: Path, edit: Callable[[gdal.Dataset], None],
                options: Optional[gdal.TranslateOptions] = None) -> Path:
    """A GeoTIFF copy of ``source`` (band names kept) changed in place by ``edit``."""
    assert gdal.Translate(str(target), str(source), options=options or gdal.TranslateOptions(format="GTiff"))
    dataset = gdal.Open(str(target), gdal.GA_Update)
    edit(dataset)
    dataset = None
    return target


def nodata_where(region: Tuple[slice, slice]) -> Callable[[gdal.Dataset], None]:
    """An edit that writes 0 into ``region`` (rows, columns) of every band and declares 0 nodata."""
    def edit(dataset: gdal.Dataset) -> None:
        for index in range(1, dataset.RasterCount + 1):
            band = dataset.GetRasterBand(index)
            values = band.ReadAsArray()
            values[region] = 0
            band.WriteArray(values)
            band.SetNoDataValue(0)
    return edit


def without_crs(dataset: gdal.Dataset) -> None:
    dataset.SetProjection("")


def test_both_images_are_stretched_on_the_ground_they_share(bercy, tiny_model: ModelBundle, tmp_path):
    """The after image covers the before image's right half only: each image's stretch is the one
    it gets when the pair is cut to that half first. The before stretched over its whole image
    would stretch ground the after does not show, and the difference would read as change."""
    before, after = bercy
    width, height = gdal.Open(str(before)).RasterXSize, gdal.Open(str(before)).RasterYSize
    half = [width // 2, 0, width - width // 2, height]
    after_half = crop(after, tmp_path / "after_half.tif", *half)
    before_half = crop(before, tmp_path / "before_half.tif", *half)

    def stretches(before_file: Path, after_file: Path):
        pair = _open_pair(str(before_file), str(after_file), DetectOptions(**FAST), tiny_model)
        return _statistics_and_network(pair, tiny_model, torch.device("cpu"), "fp32", [])[0]

    shared, cut_first = stretches(before, after_half), stretches(before_half, after_half)
    for image in range(2):
        np.testing.assert_allclose(shared[image].low, cut_first[image].low)
        np.testing.assert_allclose(shared[image].high, cut_first[image].high)
    whole_before = stretches(before, after)[0]
    assert not np.allclose(whole_before.low, shared[0].low)  # the test would show a difference


@pytest.mark.parametrize("upsampled", [False, True], ids=["whole-image sample", "sampled in windows"])
def test_a_pair_without_a_valid_pixel_in_common_is_refused(bercy, tiny_model, tmp_path, upsampled):
    """The before image has data on its left part only, the after on its right part only: refused,
    and nothing written. A small pair is refused from its sample, before any tile; a pair over 1,024
    pixels is sampled in windows, which can miss a small shared area, so it is refused once its
    tiles show no pixel valid in both."""
    before, after = bercy
    options = gdal.TranslateOptions(format="GTiff", width=1100, height=1200) if upsampled else None
    scale = 1100 / 360 if upsampled else 1
    split = int(round(200 * scale))
    before_left = edited_copy(before, tmp_path / "before_left.tif", nodata_where(np.s_[:, split:]), options)
    after_right = edited_copy(after, tmp_path / "after_right.tif", nodata_where(np.s_[:, :split]), options)
    progress = []
    out = tmp_path / "out"
    with pytest.raises(InputError, match=NO_COMMON_PIXEL):
        detect_changes(before_left, after_right, outputs_in(out), DetectOptions(**FAST), model=tiny_model,
                       progress=lambda fraction, message: progress.append(message))
    assert list(out.iterdir()) == []
    assert any(message.startswith("tile ") for message in progress) == upsampled


def test_images_placed_without_a_crs_are_aligned_by_their_geotransforms(bercy, tiny_model, tmp_path):
    """The after image cut 50 columns in (its geotransform says where), both images' CRS removed:
    the after is put on the before grid by the geotransforms, as QGIS draws the two, and the maps
    are those of the same pair with its CRS. Compared pixel by pixel, the after would lie 50 columns
    off (and here, of another size, be refused)."""
    before, after = bercy
    width, height = gdal.Open(str(after)).RasterXSize, gdal.Open(str(after)).RasterYSize
    after_cut = crop(after, tmp_path / "after_cut.tif", 50, 0, width - 50, height)
    before_plain = edited_copy(before, tmp_path / "before_plain.tif", without_crs)
    after_cut_plain = edited_copy(after_cut, tmp_path / "after_cut_plain.tif", without_crs)
    with_crs = detect_changes(before, after_cut, outputs_in(tmp_path / "crs"), DetectOptions(**FAST), model=tiny_model)
    plain = detect_changes(before_plain, after_cut_plain, outputs_in(tmp_path / "plain"), DetectOptions(**FAST),
                           model=tiny_model)
    assert plain.valid_pixels == with_crs.valid_pixels == (width - 50) * height
    for name in ("change.tif", "confidence.tif"):
        np.testing.assert_array_equal(gdal.Open(str(tmp_path / "plain" / name)).ReadAsArray(),
                                      gdal.Open(str(tmp_path / "crs" / name)).ReadAsArray())
    assert plain.changed_area_m2 is None  # no CRS: no ground area


def test_an_image_without_its_crs_beside_one_with_is_refused_with_the_fix(bercy, tiny_model, tmp_path):
    """The after image's CRS lost (its geotransform kept): refused, naming the before image's CRS
    and the command that assigns it."""
    before, after = bercy
    after_plain = edited_copy(after, tmp_path / "after_plain.tif", without_crs)
    with pytest.raises(InputError, match=r"the after image has no CRS \(the before image's is EPSG:4326\).*"
                                         r"gdal_edit\.py -a_srs"):
        detect_changes(before, after_plain, outputs_in(tmp_path / "out"), DetectOptions(**FAST), model=tiny_model)


def test_rounding_in_rotation_terms_is_not_a_rotation(bercy, tiny_model, tmp_path):
    """Rotation terms of 1e-15, as a reprojection's arithmetic leaves them: the image is north-up,
    and detected as it is without them."""
    before, after = bercy

    def with_rounding(dataset: gdal.Dataset) -> None:
        x0, dx, _, y0, _, dy = dataset.GetGeoTransform()
        dataset.SetGeoTransform((x0, dx, 1e-15, y0, -1e-15, dy))

    rounded = edited_copy(before, tmp_path / "rounded.tif", with_rounding)
    assert gdal.Open(str(rounded)).GetGeoTransform()[2] == 1e-15
    result = detect_changes(rounded, after, outputs_in(tmp_path / "rounded"), DetectOptions(**FAST), model=tiny_model)
    plain = detect_changes(before, after, outputs_in(tmp_path / "plain"), DetectOptions(**FAST), model=tiny_model)
    assert result.changed_pixels == plain.changed_pixels and result.valid_pixels == plain.valid_pixels
