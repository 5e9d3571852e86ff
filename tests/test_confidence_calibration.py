"""The confidence made a probability: the Platt fit and the reliability measures on hand-made
values, then the scaling in a model file and in detection with the bundled model on real pairs."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from osgeo import gdal

from deepcl_core.confidence_calibration import (LogitHistogram, PlattScaling, fit_platt_scaling,
                                                pooled_reliability, reliability)
from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes, resolve_model
from deepcl_core.errors import ModelFileError
from deepcl_core.model_file import load_model, save_model

# Calibration is numerical work users run: an overflow or a division by zero is a defect, not noise.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _histogram(score, changed):
    histogram = LogitHistogram()
    histogram.add(np.asarray(score, np.float32), np.asarray(changed), np.ones(len(score), bool))
    return histogram


def test_the_fit_finds_the_scaling_the_labels_were_drawn_with():
    rng = np.random.default_rng(1)
    logit = rng.normal(-3.0, 2.0, 200_000)
    changed = rng.random(logit.size) < _sigmoid(0.6 * logit + 1.2)
    scaling, note = fit_platt_scaling(_histogram(_sigmoid(logit), changed))
    assert note.startswith("fitted by maximum likelihood")
    assert scaling.slope == pytest.approx(0.6, abs=0.02) and scaling.intercept == pytest.approx(1.2, abs=0.05)
    histogram = _histogram(_sigmoid(logit), changed)
    assert histogram.log_loss(scaling) < histogram.log_loss(PlattScaling())


def test_few_or_separated_pixels_give_a_moderate_slope():
    """Two changed pixels at 0.9 and two unchanged at 0.1: the likelihood of the raw labels grows
    without end as the slope does (every confidence pushed to 0 or 1); Platt's smoothed targets
    (3/4 and 1/4 here) keep it where a sigmoid through them lies."""
    scaling, _ = fit_platt_scaling(_histogram([0.9, 0.9, 0.1, 0.1], [1, 1, 0, 0]))
    assert scaling.probability(0.9) == pytest.approx(0.75, abs=0.01) and scaling.probability(0.1) == pytest.approx(
        0.25, abs=0.01)


def test_scores_that_are_not_numbers_are_left_out():
    with_nan = _histogram([0.9, np.nan, 0.1, 0.8, 0.2], [1, 1, 0, 1, 0])
    assert with_nan.changed.sum() == 2 and with_nan.unchanged.sum() == 2
    assert reliability(np.array([0.9, np.nan, 0.1]), np.array([1, 1, 0]))["bins"] == reliability(
        np.array([0.9, 0.1]), np.array([1, 0]))["bins"]


def test_no_fit_without_both_classes_or_against_the_scores_order():
    assert fit_platt_scaling(_histogram([0.1, 0.9], [0, 0]))[0] == PlattScaling()
    # Pixels scoring high are the unchanged ones: the best slope is negative, which would reverse the map.
    scaling, note = fit_platt_scaling(_histogram([0.9, 0.8, 0.2, 0.1] * 50, [0, 0, 1, 1] * 50))
    assert scaling == PlattScaling() and "reverse" in note


def test_a_probability_maps_as_the_scaled_logit_does():
    scaling = PlattScaling(1.5, 4.5)
    scores = np.array([0.001, 0.01, 0.2, 0.5, 0.97], np.float32)
    mapped = scaling.scale_probability(torch.from_numpy(scores)).numpy()
    expected = _sigmoid(1.5 * np.log(scores / (1 - scores)) + 4.5)
    np.testing.assert_allclose(mapped, expected, rtol=1e-5)
    assert [scaling.probability(s) for s in scores] == pytest.approx(expected, rel=1e-6)
    assert PlattScaling().probability(0.2) == 0.2  # the identity leaves the score alone


def test_far_from_the_threshold_probabilities_keep_their_size_without_warnings():
    """A steep scaling takes logits far out: a pixel 40 logits below is 4e-18, not 0, and 10,000
    logits away is 0 or 1 without exp's overflow warning (an error in this module)."""
    score = 1.0 / (1.0 + np.e)  # the network's logit -1
    assert PlattScaling(40.0, 0.0).probability(score) == pytest.approx(1.0 / (1.0 + np.exp(40.0)), rel=1e-9, abs=0)
    assert PlattScaling(1e4, 0.0).probability(score) == 0.0 and PlattScaling(-1e4, 0.0).probability(score) == 1.0


def test_reliability_by_hand():
    confidence = np.array([0.05, 0.05, 0.15, 0.95, 0.95, 0.95, 0.95])
    label = np.array([0, 1, 0, 1, 1, 1, 0])
    fit = reliability(confidence, label)
    # Bins: [0, 0.1) two pixels, mean 0.05, half changed; [0.1, 0.2) one, 0.15, none; [0.9, 1] four, 0.95, 3/4.
    assert fit["bins"] == [[0.0, 2, pytest.approx(0.05), 0.5], [0.1, 1, pytest.approx(0.15), 0.0],
                           [0.9, 4, pytest.approx(0.95), 0.75]]
    assert fit["ece"] == pytest.approx((2 * 0.45 + 1 * 0.15 + 4 * 0.2) / 7)
    assert fit["brier"] == pytest.approx((0.05 ** 2 + 0.95 ** 2 + 0.15 ** 2 + 3 * 0.05 ** 2 + 0.95 ** 2) / 7)
    # Several parts pooled from their bins: as if their pixels were measured at once.
    pooled = pooled_reliability([reliability(confidence[:3], label[:3]), reliability(confidence[3:], label[3:])])
    assert pooled == {"brier": pytest.approx(fit["brier"]), "ece": pytest.approx(fit["ece"]),
                      "bins": [[lower, count, pytest.approx(mean), pytest.approx(share)]
                               for lower, count, mean, share in fit["bins"]]}


def test_the_scaling_goes_into_the_model_file_and_back(tiny_model, tmp_path):
    bundle = replace(tiny_model, platt_scaling=PlattScaling(0.6, -0.1), thresholds_by_pixel_size=((5.0, 0.07),),
                     platt_scalings_by_pixel_size=((5.0, PlattScaling(1.5, 4.5)),))
    save_model(bundle, tmp_path / "scaled.pt")
    loaded = load_model(tmp_path / "scaled.pt")
    assert loaded.platt_scaling_for(None) == loaded.platt_scaling_for(0.5) == PlattScaling(0.6, -0.1)
    assert loaded.platt_scaling_for(10.0) == PlattScaling(1.5, 4.5)
    # A model file of format 1 has no scaling: its confidence is the network's score, as it always was.
    data = torch.load(tmp_path / "scaled.pt", weights_only=True)
    for key in ("platt_scaling", "platt_scalings_by_pixel_size"):
        del data[key]
    data["format_version"] = 1
    torch.save(data, tmp_path / "format1.pt")
    assert load_model(tmp_path / "format1.pt").platt_scaling_for(10.0).is_identity
    for damage, words in ((dict(platt_scaling=[-0.5, 0.0]), "positive slope"),
                          (dict(platt_scaling=[0.5]), "a slope and an intercept"),
                          (dict(platt_scalings_by_pixel_size=[[20.0, 1.0, 0.0]]), "no threshold for them")):
        torch.save({**data, **damage}, tmp_path / "damaged.pt")
        with pytest.raises(ModelFileError, match=words):
            load_model(tmp_path / "damaged.pt")


def _detect(before, after, folder, bundle, options):
    folder.mkdir()
    outputs = DetectOutputs(change=folder / "change.tif", confidence=folder / "confidence.tif")
    result = detect_changes(before, after, outputs, options, model=bundle)
    change, confidence = (gdal.Open(str(path)) for path in (outputs.change, outputs.confidence))
    description = confidence.GetRasterBand(1).GetDescription()
    return result, change.ReadAsArray(), confidence.ReadAsArray(), description


@pytest.mark.parametrize("pair, suffix, tile", [("levir/val_27_0000_0256", "png", 768), ("oscd/bercy", "tif", 1024)])
def test_detection_writes_the_scaled_score_and_the_same_change(data_dir, tmp_path, pair, suffix, tile):
    """The bundled model with its scaling against the same model without: the confidence is the
    scaled score, pixel by pixel (the 10 m pair enlarged 2×: scaled after the enlargement is averaged
    away, as the scaling was fitted), and the change map at the mapped threshold is the score's at the
    threshold it was chosen at. One tile, so no overlap blends the two differently."""
    folder = data_dir / pair
    before, after = (folder / f"{role}.{suffix}" for role in ("before", "after"))
    bundle = resolve_model(None)
    unscaled = replace(bundle, platt_scaling=PlattScaling(), platt_scalings_by_pixel_size=())
    options = DetectOptions(tile_size=tile, device="cpu")
    scaled_run, change, confidence, description = _detect(before, after, tmp_path / "scaled", bundle, options)
    pixel_size = 10.0 if pair.startswith("oscd") else None
    scaling = bundle.platt_scaling_for(pixel_size)
    assert not scaling.is_identity and scaled_run.confidence_calibrated and scaled_run.tiles == 1
    assert scaled_run.threshold == bundle.threshold_for(pixel_size)
    assert description == "change probability (0-1), calibrated"
    score_threshold = next(c["score_threshold"] for c in [bundle.provenance["threshold_calibration"],
                                                          *bundle.provenance["threshold_calibration"]["by_pixel_size"]]
                           if c["threshold"] == scaled_run.threshold)
    raw_run, raw_change, score, raw_description = _detect(before, after, tmp_path / "raw", unscaled,
                                                          replace(options, threshold=score_threshold))
    assert not raw_run.confidence_calibrated and raw_description == "change score (0-1), not calibrated"
    valid = score >= 0
    np.testing.assert_allclose(confidence[valid], scaling.scale_probability(torch.from_numpy(score[valid])).numpy(),
                               atol=1e-6)
    assert np.array_equal(confidence < 0, ~valid)
    away_from_the_threshold = np.abs(score - score_threshold) > 1e-5  # float32 ties may round either way
    assert np.array_equal(change[away_from_the_threshold], raw_change[away_from_the_threshold])
    assert 0 < raw_run.changed_pixels and abs(scaled_run.changed_pixels - raw_run.changed_pixels) <= \
        int(np.count_nonzero(~away_from_the_threshold))


def test_the_run_says_what_its_threshold_applies_to(data_dir, tmp_path):
    """A threshold typed for a model whose confidence was the network's score (0.01 on 10 m
    imagery) marks far more on a calibrated one: the run's first message names the model's own."""
    folder = data_dir / "oscd" / "bercy"
    bundle = resolve_model(None)
    own = bundle.threshold_for(10.0)

    def first_message(options):
        messages = []
        outputs = DetectOutputs(change=tmp_path / "change.tif", confidence=tmp_path / "confidence.tif")
        detect_changes(folder / "before.tif", folder / "after.tif", outputs, options, model=bundle,
                       progress=lambda fraction, message: messages.append(message))
        return messages[0]

    given = first_message(DetectOptions(threshold=0.01, device="cpu"))
    assert f"threshold 0.01 (given; the model's here: {own:.3g}) on the calibrated confidence" in given
    models_own = first_message(DetectOptions(device="cpu", overwrite=True))
    assert f"threshold {own:.3g} (the model's) on the calibrated confidence" in models_own
