"""Warnings about how a pair was given, on a real OSCD pair (bercy: Sentinel-2 red, green, blue and
near infrared, named): bands chosen for one image only, bands chosen by hand that the file names as
other colours (and none for a BGR export of DSIFN, which GDAL labels red, green, blue), one image given
twice, and images of pixels 1.5 times as large or more (in detection and in training). The tiny
fixture model is untrained: these tests pin what the run says, not accuracy."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
from osgeo import gdal

from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes
from deepcl_core.normalization import NormalizationSpec
from deepcl_core.training.pairs import find_pairs, load_pair

FAST = dict(tile_size=128, overlap=32, device="cpu")


@pytest.fixture(scope="module")
def bercy(data_dir: Path):
    city = data_dir / "oscd" / "bercy"
    return city / "before.tif", city / "after.tif"


def run(before: Path, after: Path, folder: Path, model, **options) -> list:
    folder.mkdir(exist_ok=True)
    outputs = DetectOutputs(change=folder / "change.tif", confidence=folder / "confidence.tif")
    return detect_changes(before, after, outputs, DetectOptions(**FAST, overwrite=True, **options),
                          model=model).warnings


def test_bands_chosen_for_one_image_only_are_pointed_out(bercy, tiny_model, tmp_path):
    """Near infrared, red, green chosen for the before image; the after's red, green, blue found by
    name: the run says so. Chosen for both, or the same bands found, it does not."""
    warnings = run(*bercy, tmp_path, tiny_model, bands_before=[4, 1, 2])
    assert any("bands were chosen for the before image only ([4, 1, 2]); the after image's bands [1, 2, 3]"
               in warning for warning in warnings), warnings
    for options in (dict(bands_before=[4, 1, 2], bands_after=[4, 1, 2]), dict(bands_before=[1, 2, 3]), {}):
        assert not any("chosen for the" in warning for warning in run(*bercy, tmp_path, tiny_model, **options))


def test_one_image_given_as_both_dates_is_pointed_out(bercy, tiny_model, tmp_path):
    """The before file as the after image too (through a symbolic link, as another name of it): the
    run warns that there is no change to find; the real pair gets no such warning."""
    link = tmp_path / "after.tif"
    link.symlink_to(bercy[0])
    same = "the before and after images hold the same pixels"
    assert any(same in warning for warning in run(bercy[0], link, tmp_path / "out", tiny_model))
    assert not any(same in warning for warning in run(*bercy, tmp_path / "out", tiny_model))


def test_bands_chosen_by_hand_named_as_other_colours_are_pointed_out(bercy, tiny_model, tmp_path):
    """--bands-before 4,3,2 (a Landsat 8 habit) on OSCD's red, green, blue, near infrared fed near
    infrared as red without a word: the run names each band so contradicted, and the bands the file
    names red, green, blue. Bands that agree with their names, or found by name, are taken silently."""
    warnings = run(*bercy, tmp_path, tiny_model, bands_before=[4, 3, 2], bands_after=[4, 3, 2])
    assert [warning for warning in warnings if "but is used as" in warning] == [
        f'band 4 of the {role} image is named "NIR (B08)" (near infrared) but is used as red; band 3 is named '
        '"Blue (B02)" (blue) but is used as green; band 2 is named "Green (B03)" (green) but is used as blue: the '
        "model takes red, green, blue in this order, which the file says are bands 1, 2, 3: choose those, unless "
        "the file names its bands wrongly" for role in ("before", "after")]
    for options in (dict(bands_before=[1, 2, 3], bands_after=[1, 2, 3]), {}):
        assert not any("but is used as" in warning for warning in run(*bercy, tmp_path, tiny_model, **options))


def test_bands_chosen_by_hand_on_a_bgr_export_are_not_doubted_by_colour_interpretation(data_dir, tiny_model,
                                                                                       tmp_path):
    """A 160×160 crop of DSIFN's RGB images stored blue, green, red in 3-band Byte GeoTIFFs, which GDAL
    labels red, green, blue whatever the order: bands 3, 2, 1 chosen by hand, rightly, drew "band 3 of
    the before image is blue by its colour interpretation but is used as red". Only band descriptions
    count as the file naming its bands."""
    images = []
    for role in ("before", "after"):
        pixels = gdal.Open(str(data_dir / "dsifn" / "0_2" / f"{role}.png")).ReadAsArray(0, 0, 160, 160)
        images.append(tmp_path / f"{role}_bgr.tif")
        stored = gdal.GetDriverByName("GTiff").Create(str(images[-1]), 160, 160, 3, gdal.GDT_Byte)
        for index, band in enumerate(pixels[::-1], start=1):  # blue, green, red
            stored.GetRasterBand(index).WriteArray(band)
        stored = None  # written as it closes
        stored = gdal.Open(str(images[-1]))
        assert [stored.GetRasterBand(i).GetColorInterpretation() for i in (1, 2, 3)] == [
            gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand]  # the case: labelled red, green, blue
    warnings = run(*images, tmp_path / "out", tiny_model, bands_before=[3, 2, 1], bands_after=[3, 2, 1])
    assert not [warning for warning in warnings if "is used as" in warning or "colour interpretation" in warning]


def at_pixel_size(source: Path, target: Path, metres: float) -> Path:
    """``source`` (OSCD, EPSG:4326) averaged onto a UTM grid of ``metres`` pixels over one ground area."""
    gdal.Warp(str(target), str(source), dstSRS="EPSG:32631", xRes=metres, yRes=metres,
              outputBounds=(453100, 5408000, 455800, 5412500), resampleAlg="average" if metres > 10 else "nearest")
    return target


@pytest.mark.parametrize("metres", [15, 20])
def test_pixels_one_and_a_half_or_twice_as_large_are_warned_of(data_dir, tiny_model, tmp_path, caplog,
                                                                metres):
    """bercy's after image averaged from 10 m to 15 m and 20 m went without a word (warned from 3 times
    on): detection warns of it, and so does training, naming the pair; the pair at 10 m gets no such
    warning."""
    pair = tmp_path / "bercy"
    pair.mkdir()
    city = data_dir / "oscd" / "bercy"
    before, label = (at_pixel_size(city / f"{role}.tif", pair / f"{role}.tif", 10) for role in ("before", "label"))
    after = at_pixel_size(city / "after.tif", pair / "after.tif", metres)
    expected = (f"the after image's pixels are {metres / 10:.1f} times as large as the before image's ({metres} m "
                "against 10 m): the after image is resampled onto the before grid, so change smaller than the "
                "larger pixels cannot be found and the difference in sharpness may show as change; images of "
                "similar resolution give better results")
    assert [w for w in run(before, after, tmp_path / "out", tiny_model) if "pixels are" in w] == [expected]
    training = "deepcl_core.training.pairs"
    with caplog.at_level(logging.WARNING, logger=training):
        load_pair(find_pairs([pair])[0], ["red", "green", "blue"], NormalizationSpec())
    assert [r.getMessage() for r in caplog.records if r.name == training] == [f"pair bercy: {expected}"]
    at_pixel_size(city / "after.tif", after, 10)
    assert not [w for w in run(before, after, tmp_path / "out", tiny_model) if "pixels are" in w]
