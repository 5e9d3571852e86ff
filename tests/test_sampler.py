"""Training crops: the zoom augmentation resizes a window of the pair to the crop and keeps the
two dates, the label and the validity registered."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from deepcl_core.normalization import NormalizationSpec
from deepcl_core.training.pairs import find_pairs, load_pairs
from deepcl_core.training.sampler import AugmentConfig, CropSampler, resize_crop

NO_AUGMENTATION = AugmentConfig(change_crop=0.0, pseudo_change=0.0, synthetic_change=0.0, radiometric=0.0,
                                swap_dates=0.0, zoom=0.0)


@pytest.fixture(scope="module")
def levir_pair(data_dir):
    files = find_pairs([data_dir / "levir" / "train_36_0512_0512"])
    return load_pairs(files, ("red", "green", "blue"), NormalizationSpec())[0]


def test_resize_crop_scales_the_label_and_keeps_validity_conservative():
    rng = np.random.default_rng(0)
    before, after = rng.random((2, 3, 100, 100), dtype=np.float32)
    label = np.zeros((100, 100), np.uint8)
    label[10:50, 20:60] = 1  # 40 x 40 changed pixels
    valid = np.ones((100, 100), bool)
    valid[:, 90:] = False
    b, a, lab, val = resize_crop(before, after, label, valid, 200)
    assert b.shape == a.shape == (3, 200, 200) and lab.shape == val.shape == (200, 200)
    assert lab.dtype == np.uint8 and set(np.unique(lab)) == {0, 1}
    assert lab.sum() == 80 * 80  # twice the side: four times the area, edges on pixel boundaries
    assert lab[20:100, 40:120].all()
    assert val[:, :179].all() and not val[:, 181:].any()  # the last valid column blends with invalid ones
    shrunk = resize_crop(before, after, label, valid, 50)[2]
    assert shrunk.sum() == 20 * 20


def test_unzoomed_crop_is_a_window_of_the_pair(levir_pair):
    sampler = CropSampler([levir_pair], 128, NormalizationSpec(), NO_AUGMENTATION)
    before, after, label, valid = sampler._crop(0, np.random.default_rng(3))
    matches = [(y, x) for y in range(256 - 127) for x in range(256 - 127)
               if np.array_equal(levir_pair.label[y:y + 128, x:x + 128], label)
               and np.array_equal(levir_pair.before[:, y:y + 128, x:x + 128], before)]
    assert len(matches) == 1
    y, x = matches[0]
    assert np.array_equal(levir_pair.after[:, y:y + 128, x:x + 128], after)


@pytest.mark.parametrize("seed", range(6))
def test_zoomed_crops_have_the_crop_size_and_keep_dates_and_label_registered(levir_pair, seed):
    # A copy of the pair whose after image is its before image and whose label is the before
    # image's bright pixels: any misregistration of the zoom shows as a difference.
    bright = levir_pair.before[0] > np.median(levir_pair.before[0])
    pair = dataclasses.replace(levir_pair, after=levir_pair.before.copy(), label=bright.astype(np.uint8))
    config = AugmentConfig(change_crop=1.0, pseudo_change=0.0, synthetic_change=0.0, radiometric=0.0,
                           swap_dates=0.0, zoom=1.0)
    sampler = CropSampler([pair], 128, NormalizationSpec(), config)
    side = sampler._window_side(pair, np.random.default_rng(seed))
    assert 64 <= side <= 256 and side != 128
    before, after, label, valid = sampler._crop(0, np.random.default_rng(seed))  # the same side drawn
    assert before.shape == after.shape == (3, 128, 128) and label.shape == valid.shape == (128, 128)
    assert valid.all()  # the window never leaves this 256² pair
    assert np.array_equal(before, after)
    threshold = np.median(levir_pair.before[0])
    agreement = np.mean((before[0] > threshold) == (label == 1))
    assert agreement > 0.93, agreement  # resampling blurs edges only
    shifted = np.mean((before[0, :, 3:] > threshold) == (label[:, :-3] == 1))
    assert shifted < agreement
