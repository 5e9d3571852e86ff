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
    with pytest.raises(InputError, match="bands are red, green, blue, without nir"):
        load_pair(pair, ["nir"], NormalizationSpec())


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
