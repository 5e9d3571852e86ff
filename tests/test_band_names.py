"""Band names a model is trained for, checked against what real images say of their bands: DSIFN's
RGB PNGs (colour interpretation red, green, blue) and a copy that says nothing of its bands."""
from __future__ import annotations

from pathlib import Path

import pytest
from osgeo import gdal

from deepcl_core.band_choice import choose_bands, unnamed_bands_warning
from deepcl_core.errors import InputError
from deepcl_core.normalization import NormalizationSpec
from deepcl_core.raster_io import open_image
from deepcl_core.training.pairs import find_pairs, load_pair


@pytest.fixture(scope="module")
def dsifn_pair(data_dir: Path) -> Path:
    return data_dir / "dsifn" / "3_4"


def test_a_band_the_image_says_it_lacks_is_refused_for_training(dsifn_pair):
    """Training for a near-infrared band on RGB PNGs: refused before training, naming the image's
    bands. The first band (red) was fed under the name nir, and the model said nir."""
    pair = find_pairs([dsifn_pair])[0]
    with pytest.raises(InputError, match="^pair 3_4: .*bands are red, green, blue, without nir"):
        load_pair(pair, ["nir"], NormalizationSpec())
    # Named as evaluation and training name a pair's other refusals (it read "the 3_4: before image has 3")
    with pytest.raises(InputError, match="^pair 3_4: the model needs 4 bands .* but the before image has 3;"):
        load_pair(pair, ["red", "green", "blue", "nir"], NormalizationSpec())


def test_a_band_name_given_twice_is_refused(dsifn_pair):
    """``--bands red red red`` trained a model on red, green and blue that said it took red three times."""
    pair = find_pairs([dsifn_pair])[0]
    with pytest.raises(InputError, match="name red more than once; give each band once"):
        load_pair(pair, ["red", "red", "red"], NormalizationSpec())


def test_a_guess_for_one_band_is_worded_for_one(dsifn_pair, tmp_path):
    """An image whose three bands say nothing of themselves, for a one-band model: the first band is
    taken, and the warning reads "which is nir" (it read "which is  or nir")."""
    plain = tmp_path / "plain.tif"
    gdal.Translate(str(plain), str(dsifn_pair / "before.png"), format="GTiff")
    dataset = gdal.Open(str(plain), gdal.GA_Update)
    for index in range(1, 4):
        dataset.GetRasterBand(index).SetColorInterpretation(gdal.GCI_Undefined)
    dataset = None
    image = open_image(plain, "before")
    assert choose_bands(image, None, ["nir"], "before") == (1,)
    warning = unnamed_bands_warning(image, None, ["nir"], "before")
    assert warning.startswith("the before image's 3 bands do not say which is nir (no description"), warning


def test_training_warns_of_bands_it_guesses_naming_the_pair(data_dir, tmp_path, caplog):
    """OSCD bercy stored blue, green, red, near infrared with nothing said of its bands: training took
    bands 1-3 as red, green and blue without a word (detection warns of the same guess)."""
    import logging
    import subprocess

    import numpy as np

    folder = tmp_path / "bercy"
    folder.mkdir()
    for role in ("before", "after"):  # the pixels alone, bands reordered: nothing named
        source = gdal.Open(str(data_dir / "oscd" / "bercy" / f"{role}.tif"))
        stored = gdal.GetDriverByName("GTiff").Create(str(folder / f"{role}.tif"), source.RasterXSize,
                                                      source.RasterYSize, 4, gdal.GDT_UInt16)
        stored.SetGeoTransform(source.GetGeoTransform())
        stored.SetProjection(source.GetProjection())
        stored.WriteArray(source.ReadAsArray()[[2, 1, 0, 3]])
        stored = None
    (folder / "label.tif").symlink_to(data_dir / "oscd" / "bercy" / "label.tif")
    with caplog.at_level(logging.WARNING, logger="deepcl_core.training.pairs"):
        load_pair(find_pairs([folder])[0], ["red", "green", "blue"], NormalizationSpec())
    assert [r.getMessage() for r in caplog.records] == [
        f"pair bercy: the {role} image's 4 bands do not say which is red, green or blue (no description or colour "
        "interpretation): bands 1, 2, 3 were taken as red, green, blue; if they are in another order, name them in "
        "the files, e.g. gdal_edit.py -colorinterp_3 red -colorinterp_2 green -colorinterp_1 blue FILE for blue, "
        "green, red" for role in ("before", "after")]
    # That command makes the files say it, and the bands are found by their names, without a guess
    for role in ("before", "after"):
        subprocess.run(["gdal_edit.py", "-colorinterp_3", "red", "-colorinterp_2", "green", "-colorinterp_1", "blue",
                        str(folder / f"{role}.tif")], check=True)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="deepcl_core.training.pairs"):
        named = load_pair(find_pairs([folder])[0], ["red", "green", "blue"], NormalizationSpec())
    assert caplog.records == []
    original = load_pair(find_pairs([data_dir / "oscd" / "bercy"])[0], ["red", "green", "blue"], NormalizationSpec())
    np.testing.assert_array_equal(named.before, original.before)
