"""Band names a model is trained for, checked against what real images say of their bands: DSIFN's
RGB PNGs (colour interpretation red, green, blue), a copy that says nothing of its bands, OSCD's
pixels as a Landsat Collection 2 stack (SR_B1…SR_B7) and as a Sentinel-2 product."""
from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from osgeo import gdal

from deepcl_core.band_choice import band_choice_warnings, choose_bands, named_bands_warning, unnamed_bands_warning
from deepcl_core.errors import InputError
from deepcl_core.normalization import NormalizationSpec
from deepcl_core.raster_io import open_image
from deepcl_core.training.pairs import PairFiles, find_pairs, load_pair


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


def landsat_stack(source: Path, target: Path, spacecraft: Optional[str] = None) -> Path:
    """OSCD's red, green, blue, near infrared (``source``) stored as a Landsat 4-7 Collection 2 stack:
    SR_B1 blue, SR_B2 green, SR_B3 red, SR_B4 near infrared, then SR_B5 to SR_B7 (near infrared
    again, standing in for shortwave infrared and thermal), with SPACECRAFT_ID ``spacecraft``."""
    original = gdal.Open(str(source))
    pixels = original.ReadAsArray()
    stack = gdal.GetDriverByName("GTiff").Create(str(target), original.RasterXSize, original.RasterYSize, 7,
                                                 gdal.GDT_UInt16)
    stack.SetGeoTransform(original.GetGeoTransform())
    stack.SetProjection(original.GetProjection())
    for index, band in enumerate([2, 1, 0, 3, 3, 3, 3], start=1):
        stack.GetRasterBand(index).WriteArray(pixels[band])
        stack.GetRasterBand(index).SetDescription(f"SR_B{index}")
    if spacecraft:
        stack.SetMetadataItem("SPACECRAFT_ID", spacecraft)
    stack = None
    return target


def landsat_pair(data_dir: Path, folder: Path, spacecraft: Optional[str] = None) -> PairFiles:
    folder.mkdir(parents=True)
    for role in ("before", "after"):
        landsat_stack(data_dir / "oscd" / "bercy" / f"{role}.tif", folder / f"{role}.tif", spacecraft)
    (folder / "label.tif").symlink_to(data_dir / "oscd" / "bercy" / "label.tif")
    return find_pairs([folder])[0]


def test_landsat_codes_are_read_as_the_satellite_the_file_names(data_dir, tmp_path, caplog):
    """SR_B1…SR_B7 of Landsat 4, 5 or 7 were read with Sentinel-2 / Landsat 8 meanings: bands 4, 3, 2
    (near infrared, red, green) as red, green, blue, without a word. Where the file says its satellite
    (SPACECRAFT_ID, as a scene's metadata has it, or a product ID as its name) its codes are read as
    that satellite's: training on the stack reads the pixels it reads from OSCD's named bands."""
    bands = ["red", "green", "blue"]
    original = load_pair(find_pairs([data_dir / "oscd" / "bercy"])[0], bands, NormalizationSpec())
    with caplog.at_level(logging.WARNING, logger="deepcl_core.training.pairs"):
        landsat_5 = load_pair(landsat_pair(data_dir, tmp_path / "l5" / "bercy", "LANDSAT_5"), bands,
                              NormalizationSpec())
    assert caplog.records == []
    np.testing.assert_array_equal(landsat_5.before, original.before)
    np.testing.assert_array_equal(landsat_5.after, original.after)
    stack = gdal.Open(str(landsat_stack(data_dir / "oscd" / "bercy" / "before.tif", tmp_path / "l8.tif", "LANDSAT_8")))
    assert choose_bands(stack, None, bands, "before") == (4, 3, 2)
    assert band_choice_warnings(stack, None, bands, "before") == []
    named = landsat_stack(data_dir / "oscd" / "bercy" / "before.tif",
                          tmp_path / "LT05_L2SP_199026_20100709_20200823_02_T1_SR.tif")
    assert choose_bands(gdal.Open(str(named)), None, bands + ["nir"], "before") == (3, 2, 1, 4)


def test_landsat_codes_of_an_unnamed_satellite_are_read_as_landsat_8_s_with_a_warning(data_dir, tiny_model,
                                                                                       tmp_path, caplog):
    """SR_Bn without a word of the satellite: read as Landsat 8/9's (as before, and as most such files
    are today), with a warning in training and in detection that says which bands were taken and what
    Landsat 4-7's would be; bands chosen by hand on such a file are not second-guessed."""
    from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes

    pair = landsat_pair(data_dir, tmp_path / "bercy")
    with caplog.at_level(logging.WARNING, logger="deepcl_core.training.pairs"):
        load_pair(pair, ["red", "green", "blue"], NormalizationSpec())
    assumed = ("image's bands are named with Landsat codes (SR_Bn), which mean other colours on Landsat 4, 5 and 7 "
               "than on Landsat 8 and 9, and the file does not say which satellite took it: they were read as "
               "Landsat 8/9's, bands 4, 3, 2 (SR_B4, SR_B3, SR_B2) as red, green, blue; if the image is from "
               "Landsat 4, 5 or 7, its red, green, blue are bands 3, 2, 1 (SR_B3, SR_B2, SR_B1): ")
    fix = "say so in the file (gdal_edit.py -mo SPACECRAFT_ID=LANDSAT_5 FILE) and they are found by their names"
    assert [r.getMessage() for r in caplog.records] == [f"pair bercy: the {role} {assumed}{fix}"
                                                        for role in ("before", "after")]
    outputs = DetectOutputs(change=tmp_path / "change.tif", confidence=tmp_path / "confidence.tif")
    options = DetectOptions(tile_size=128, overlap=32, device="cpu")
    warnings = detect_changes(pair.before, pair.after, outputs, options, model=tiny_model).warnings
    assert [w for w in warnings if "Landsat" in w] == [f"the {role} {assumed}choose them by hand, or {fix}"
                                                       for role in ("before", "after")]
    stack = gdal.Open(str(pair.before))
    assert named_bands_warning(stack, [3, 2, 1], ["red", "green", "blue"], "before") is None
    # Told the satellite, the file's names do contradict bands chosen as Landsat 8's
    subprocess.run(["gdal_edit.py", "-mo", "SPACECRAFT_ID=LANDSAT_7", str(pair.before)], check=True)
    assert named_bands_warning(gdal.Open(str(pair.before)), [4, 3, 2], ["red", "green", "blue"], "before") == (
        'band 4 of the before image is named "SR_B4" (near infrared) but is used as red; band 3 is named "SR_B3" '
        '(red) but is used as green; band 2 is named "SR_B2" (green) but is used as blue: the model takes red, '
        "green, blue in this order, which the file says are bands 3, 2, 1: choose those, unless the file names "
        "its bands wrongly")


def test_bands_chosen_by_hand_on_a_sentinel_2_product_are_checked_against_their_names(data_dir, tmp_path):
    """Band 4 of a Sentinel-2 product's 10 m subdataset is B8, near infrared: chosen as red (bands
    4, 3, 2, as for Landsat 8), the run says so; bands 1, 2, 3 (B4, B3, B2) agree and pass silently."""
    from core_test_helpers import crop
    from sentinel2_product import write_product

    image = crop(data_dir / "oscd" / "bercy" / "before.tif", tmp_path / "bercy.tif", 100, 100, 128, 128)
    product = write_product(image, tmp_path / "product", 32631, "20160120T105212")
    dataset = open_image(product.subdataset, "before")
    warning = named_bands_warning(dataset, [4, 3, 2], ["red", "green", "blue"], "before")
    assert warning.startswith('band 4 of the before image is named "B8'), warning
    assert '(near infrared) but is used as red; band 3 is named "B2' in warning, warning
    assert named_bands_warning(dataset, [1, 2, 3], ["red", "green", "blue"], "before") is None
