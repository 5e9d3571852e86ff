"""Warnings about how a pair was given, on a real OSCD pair (bercy: Sentinel-2 red, green, blue and
near infrared, named): bands chosen for one image only, and one image given twice. The tiny fixture
model is untrained: these tests pin what the run says, not accuracy."""
from __future__ import annotations

from pathlib import Path

import pytest

from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes

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
