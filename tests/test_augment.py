"""Pseudo-change augmentation against METHOD.md: misregistration of sub-pixel to 2 pixels with small
rotations, whatever the size warped (a training crop or a whole scene), and haze that brightens blue
most (real haze scatters short wavelengths most), following the bands' names."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from osgeo import gdal

from deepcl_core.normalization import NormalizationSpec
from deepcl_core.training.augment import PseudoChangeStrength, max_rotation, misregister, radiometric, to_unit
from deepcl_core.training.pairs import find_pairs, load_pairs
from deepcl_core.training.sampler import AugmentConfig, CropSampler

from core_test_helpers import ROTATION_PX, SHIFT_PX, coordinates, displacement

# Haze alone: every other radiometric change off, the veil at its strongest
HAZE_ONLY = PseudoChangeStrength(brightness=0.0, contrast=0.0, gamma=0.0, colour=0.0, haze=(0.3, 0.3))


@pytest.mark.parametrize("height, width", [(256, 256), (128, 128), (800, 800), (600, 1100)])
def test_misregistration_moves_no_pixel_beyond_shift_and_rotation_wherever_applied(height, width):
    """On a 256 crop a ±3° rotation moved corners 9 px (97 % of draws over 2 px) and on an 800² scene up
    to 30 px: "unchanged" pairs held objects moved far. Now at most shift_px + rotation_px anywhere,
    the shift alone within shift_px (a per-axis draw reached 2.83 px on the diagonal)."""
    strength = PseudoChangeStrength()
    image = coordinates(height, width)
    rng = np.random.default_rng(0)
    worst = [displacement(image, misregister(image, rng, strength)).max() for _ in range(30)]
    assert max(worst) <= SHIFT_PX + ROTATION_PX + 1e-3, max(worst)
    shift_only = dataclasses.replace(strength, rotation_deg=0.0)
    shifts = [displacement(image, misregister(image, rng, shift_only))[height // 2, width // 2] for _ in range(60)]
    assert max(shifts) <= SHIFT_PX + 1e-3 and max(shifts) > 1.5, max(shifts)
    assert (strength.shift_px, strength.rotation_px) == (SHIFT_PX, ROTATION_PX)  # recorded in the provenance


@pytest.mark.parametrize("height, width", [(256, 256), (800, 800)])
def test_misregistration_still_rotates_within_rotation_px(height, width):
    """Without a shift, what moves is the rotation: it happens (the field is not a translation), the
    farthest pixels move by up to rotation_px and the centre stays."""
    strength = PseudoChangeStrength(shift_px=0.0)
    image = coordinates(height, width)
    rng = np.random.default_rng(1)
    moved = []
    for _ in range(20):
        field = displacement(image, misregister(image, rng, strength))
        moved.append(field.max())
        assert field[height // 2 - 1:height // 2 + 1, width // 2 - 1:width // 2 + 1].max() < 0.02
    assert max(moved) <= ROTATION_PX + 1e-3, max(moved)
    assert np.mean(np.array(moved) > 0.05) > 0.8 and max(moved) > 0.5 * ROTATION_PX, moved
    assert 0 < max_rotation(height, width, strength) < np.radians(strength.rotation_deg)


def real_rgb(data_dir) -> np.ndarray:
    """A LEVIR-CD before image (red, green, blue PNG) in unit space."""
    dataset = gdal.Open(str(data_dir / "levir" / "test_7_0256_0512" / "before.png"))
    return dataset.ReadAsArray().astype(np.float32) / 255.0


def test_haze_brightens_blue_most_by_the_bands_names(data_dir):
    """The veil was reddish (band 0, red in the bundled order, got the brightest veil). Now by name:
    blue rises most, then green, then red, whatever order the bands come in."""
    image = real_rgb(data_dir)
    hazy = radiometric(image, np.random.default_rng(0), HAZE_ONLY, ("red", "green", "blue"))
    red, green, blue = (hazy - image).mean(axis=(1, 2))
    assert blue > green > red > 0, (red, green, blue)
    reordered = radiometric(image[::-1].copy(), np.random.default_rng(0), HAZE_ONLY, ("blue", "green", "red"))
    first, _, last = (reordered - image[::-1]).mean(axis=(1, 2))
    assert first > last  # band 0 is blue now
    near_infrared = radiometric(image, np.random.default_rng(0), HAZE_ONLY, ("B02", "B03", "NIR (B08)"))
    blue, _, nir = (near_infrared - image).mean(axis=(1, 2))
    assert blue > nir


def test_training_crops_get_the_haze_of_the_training_bands(data_dir):
    """The sampler colours the haze by the training's bands: on a real pair's crop blue rises more than red."""
    spec = NormalizationSpec()
    pair = load_pairs(find_pairs([data_dir / "levir" / "train_36_0512_0512"]), ("red", "green", "blue"), spec)[0]
    config = AugmentConfig(change_crop=0.0, pseudo_change=0.0, synthetic_change=0.0, radiometric=1.0,
                           swap_dates=0.0, zoom=0.0, strength=HAZE_ONLY)
    sampler = CropSampler([pair], 128, spec, config, bands=("red", "green", "blue"))
    rng = np.random.default_rng(2)
    rng.integers(1)  # as sample() draws the pair first
    plain = to_unit(sampler._crop(0, rng)[0], spec)
    hazy = to_unit(sampler.sample(np.random.default_rng(2))[0], spec)
    red, _, blue = (hazy - plain).mean(axis=(1, 2))  # same_geometry turns the crop; band means stay
    assert blue > red > 0, (red, blue)
