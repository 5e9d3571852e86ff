"""Band names a model is trained for, checked against what real images say of their bands: DSIFN's
RGB PNGs (colour interpretation red, green, blue), a copy that says nothing of its bands, OSCD's
pixels as Landsat stacks (Collection 2 SR_B1…SR_B7 of Landsat 4-7 and 8/9, a Landsat 8 Level-1 B1…B11)
and as a Sentinel-2 product, and small in-memory datasets for what metadata and file names say."""
from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import pytest
from osgeo import gdal

from deepcl_core.band_choice import band_choice_warnings, choose_bands, landsat_number, unnamed_bands_warning
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


# Which of OSCD's red (0), green (1), blue (2), near infrared (3) each band of a Landsat stack holds (None: the
# mean of red, green and blue, as a panchromatic band). Landsat 4-7 Collection 2: SR_B1 blue, SR_B2 green,
# SR_B3 red, SR_B4 near infrared, then SR_B5 to SR_B7 (near infrared standing in for shortwave infrared and
# thermal). Landsat 8/9: B1 coastal (blue standing in), B2 blue, B3 green, B4 red, B5 near infrared, B6 and B7
# (shortwave infrared), B8 panchromatic, B9 cirrus (blue), B10 and B11 thermal; Collection 2 SR_B1 to SR_B7.
LANDSAT_4_7 = (2, 1, 0, 3, 3, 3, 3)
LANDSAT_8_LEVEL_1 = (2, 2, 1, 0, 3, 3, 3, None, 2, 3, 3)
LANDSAT_8_SR = LANDSAT_8_LEVEL_1[:7]


def landsat_stack(source: Path, target: Path, spacecraft: Optional[str] = None,
                  layout: Sequence[Optional[int]] = LANDSAT_4_7, code: str = "SR_B") -> Path:
    """OSCD's red, green, blue, near infrared (``source``) stored as a Landsat stack of ``layout``
    (by default Landsat 4-7's Collection 2), each band described as ``code`` and its number (SR_B4),
    with SPACECRAFT_ID ``spacecraft``."""
    original = gdal.Open(str(source))
    pixels = original.ReadAsArray()
    stack = gdal.GetDriverByName("GTiff").Create(str(target), original.RasterXSize, original.RasterYSize,
                                                 len(layout), gdal.GDT_UInt16)
    stack.SetGeoTransform(original.GetGeoTransform())
    stack.SetProjection(original.GetProjection())
    for index, band in enumerate(layout, start=1):
        stack.GetRasterBand(index).WriteArray(pixels[:3].mean(axis=0).astype(np.uint16) if band is None
                                              else pixels[band])
        stack.GetRasterBand(index).SetDescription(f"{code}{index}")
    if spacecraft:
        stack.SetMetadataItem("SPACECRAFT_ID", spacecraft)
    stack = None
    return target


def landsat_pair(data_dir: Path, folder: Path, spacecraft: Optional[str] = None,
                 layout: Sequence[Optional[int]] = LANDSAT_4_7) -> PairFiles:
    folder.mkdir(parents=True)
    for role in ("before", "after"):
        landsat_stack(data_dir / "oscd" / "bercy" / f"{role}.tif", folder / f"{role}.tif", spacecraft, layout)
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
    assert band_choice_warnings(stack, [3, 2, 1], ["red", "green", "blue"], "before") == []
    # Told the satellite, the file's names do contradict bands chosen as Landsat 8's
    subprocess.run(["gdal_edit.py", "-mo", "SPACECRAFT_ID=LANDSAT_7", str(pair.before)], check=True)
    assert band_choice_warnings(gdal.Open(str(pair.before)), [4, 3, 2], ["red", "green", "blue"], "before") == [
        'band 4 of the before image is named "SR_B4" (near infrared) but is used as red; band 3 is named "SR_B3" '
        '(red) but is used as green; band 2 is named "SR_B2" (green) but is used as blue: the model takes red, '
        "green, blue in this order, which the file says are bands 3, 2, 1: choose those, unless the file names "
        "its bands wrongly"]


def test_bands_chosen_by_hand_on_a_sentinel_2_product_are_checked_against_their_names(data_dir, tmp_path):
    """Band 4 of a Sentinel-2 product's 10 m subdataset is B8, near infrared: chosen as red (bands
    4, 3, 2, as for Landsat 8), the run says so; bands 1, 2, 3 (B4, B3, B2) agree and pass silently."""
    from core_test_helpers import crop
    from sentinel2_product import write_product

    image = crop(data_dir / "oscd" / "bercy" / "before.tif", tmp_path / "bercy.tif", 100, 100, 128, 128)
    product = write_product(image, tmp_path / "product", 32631, "20160120T105212")
    dataset = open_image(product.subdataset, "before")
    [warning] = band_choice_warnings(dataset, [4, 3, 2], ["red", "green", "blue"], "before")
    assert warning.startswith('band 4 of the before image is named "B8'), warning
    assert '(near infrared) but is used as red; band 3 is named "B2' in warning, warning
    assert band_choice_warnings(dataset, [1, 2, 3], ["red", "green", "blue"], "before") == []


def test_landsat_8_and_9_near_infrared_is_b5_not_the_panchromatic_b8(data_dir, tmp_path, caplog):
    """Landsat 8/9's near infrared is B5 (B8 is panchromatic), but their codes were read as Sentinel-2's
    (near infrared B8): a Level-1 stack named as Landsat 8's (LC08_L1TP_…, B1…B11) gave red, green, blue,
    near infrared as bands 4, 3, 2, 8 without a word, and SR_B1…SR_B7 named as Landsat 8's were refused
    as "without nir". Both are read as bands 4, 3, 2, 5, and training on a stack that says Landsat 9
    reads the pixels it reads from OSCD's named bands."""
    bands = ["red", "green", "blue", "nir"]
    before = data_dir / "oscd" / "bercy" / "before.tif"
    level_1 = landsat_stack(before, tmp_path / "LC08_L1TP_199026_20160120_20200907_02_T1.tif",
                            layout=LANDSAT_8_LEVEL_1, code="B")
    surface = landsat_stack(before, tmp_path / "LC08_L2SP_199026_20160120_20200907_02_T1_SR.tif", layout=LANDSAT_8_SR)
    for stack in (gdal.Open(str(level_1)), gdal.Open(str(surface))):
        assert choose_bands(stack, None, bands, "before") == (4, 3, 2, 5)
        assert band_choice_warnings(stack, None, bands, "before") == []
    original = load_pair(find_pairs([data_dir / "oscd" / "bercy"])[0], bands, NormalizationSpec())
    with caplog.at_level(logging.WARNING, logger="deepcl_core.training.pairs"):
        landsat_9 = load_pair(landsat_pair(data_dir, tmp_path / "l9" / "bercy", "LANDSAT_9", LANDSAT_8_SR), bands,
                              NormalizationSpec())
    assert caplog.records == []
    np.testing.assert_array_equal(landsat_9.before, original.before)
    np.testing.assert_array_equal(landsat_9.after, original.after)


def test_landsat_codes_of_an_unnamed_satellite_give_landsat_8_s_near_infrared(data_dir, tmp_path):
    """SR_B1…SR_B7 without a word of the satellite, for a model of red, green, blue and near infrared:
    detection refused them ("without nir") though Landsat 8/9's SR_B5 is near infrared. They are read as
    Landsat 8/9's, as for red, green and blue, with the warning naming bands 4, 3, 2, 5 and Landsat
    4-7's 3, 2, 1, 4."""
    from reliability.models import tiny_bundle

    from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes

    bands = ("red", "green", "blue", "nir")
    pair = landsat_pair(data_dir, tmp_path / "bercy", layout=LANDSAT_8_SR)
    outputs = DetectOutputs(change=tmp_path / "change.tif", confidence=tmp_path / "confidence.tif")
    options = DetectOptions(tile_size=128, overlap=32, device="cpu")
    warnings = detect_changes(pair.before, pair.after, outputs, options, model=tiny_bundle(bands)).warnings
    assert [w for w in warnings if "Landsat" in w] == [
        f"the {role} image's bands are named with Landsat codes (SR_Bn), which mean other colours on Landsat 4, 5 "
        "and 7 than on Landsat 8 and 9, and the file does not say which satellite took it: they were read as Landsat "
        "8/9's, bands 4, 3, 2, 5 (SR_B4, SR_B3, SR_B2, SR_B5) as red, green, blue, near infrared; if the image is "
        "from Landsat 4, 5 or 7, its red, green, blue, near infrared are bands 3, 2, 1, 4 (SR_B3, SR_B2, SR_B1, "
        "SR_B4): choose them by hand, or say so in the file (gdal_edit.py -mo SPACECRAFT_ID=LANDSAT_5 FILE) and they "
        "are found by their names" for role in ("before", "after")]


def in_memory(metadata: Optional[Dict[str, str]] = None, name: str = "") -> gdal.Dataset:
    """A one-band in-memory dataset with ``metadata``, described as the file ``name``."""
    dataset = gdal.GetDriverByName("MEM").Create("", 4, 4, 1, gdal.GDT_UInt16)
    dataset.SetMetadata(metadata or {})
    dataset.SetDescription(name)
    return dataset


@pytest.mark.parametrize("metadata, name, number", [
    ({"SPACECRAFT_ID": "LANDSAT_5"}, "", 5),
    ({"LANDSAT_PRODUCT_ID": "LE07_L2SP_199026_20100709_20200823_02_T1"}, "", 7),
    ({}, "/data/LC09_L1TP_199026_20220120_20230407_02_T1.tif", 9),
    ({"SPACECRAFT_ID": "LANDSAT_8"}, "/data/LC08_L1TP_199026_20160120_20200907_02_T1.tif", 8),
    ({"NOTE": "nolandsat5"}, "", None),  # "landsat5" inside a word
    ({"TIFFTAG_IMAGEDESCRIPTION": "Landsat 8 and Landsat 5 composite"}, "", None),  # two satellites
    ({"SPACECRAFT_ID": "LANDSAT_5"}, "/data/LC08_L1TP_199026_20160120_20200907_02_T1.tif", None),
    ({}, "/data/bercy_le07_.tif", None),  # a product ID only opens a file name
])
def test_the_landsat_satellite_is_read_where_metadata_or_file_name_say_it_alone(metadata, name, number):
    """"nolandsat5" read as Landsat 5, "Landsat 8 and Landsat 5 composite" as Landsat 8 (the first
    match won) and the file bercy_le07_.tif as Landsat 7's: nothing or two different satellites are
    no satellite."""
    assert landsat_number(in_memory(metadata, name)) == number
