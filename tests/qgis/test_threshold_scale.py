"""The panel's threshold slider scale: round values, fine where 10 m imagery's thresholds lie."""
from __future__ import annotations

import pytest

from deepcl_core.training.calibration import CANDIDATES
from deepcl_qgis.threshold_scale import THRESHOLDS, label, position_of, threshold_at


def test_the_scale_rises_through_round_values_inside_0_and_1():
    assert all(a < b for a, b in zip(THRESHOLDS, THRESHOLDS[1:]))
    assert 0.0 < THRESHOLDS[0] and THRESHOLDS[-1] < 1.0
    assert all(abs(t * 1000 - round(t * 1000)) < 1e-9 for t in THRESHOLDS)


def test_every_threshold_calibration_can_choose_is_on_the_scale():
    """A model's calibrated threshold is shown and used exactly, not rounded to a neighbour."""
    assert [threshold_at(position_of(t)) for t in CANDIDATES] == list(CANDIDATES)


@pytest.mark.parametrize("threshold, below, above", [(0.01, 0.009, 0.011), (0.07, 0.065, 0.075), (0.3, 0.29, 0.31)])
def test_one_step_moves_a_small_threshold_by_a_small_share(threshold, below, above):
    """Around the bundled model's 10 m threshold (0.01) a step is 10 %, not the 100 % of steps of 0.01."""
    position = position_of(threshold)
    assert (threshold_at(position - 1), threshold_at(position + 1)) == (below, above)


def test_positions_past_the_ends_and_far_values_clamp():
    assert threshold_at(-5) == THRESHOLDS[0] and threshold_at(10_000) == THRESHOLDS[-1]
    assert position_of(0.0) == 0 and position_of(1.0) == len(THRESHOLDS) - 1
    assert threshold_at(position_of(0.2349)) == 0.23


@pytest.mark.parametrize("threshold, text", [(0.3, "0.30"), (0.07, "0.07"), (0.025, "0.025"), (0.004, "0.004"),
                                             (0.99, "0.99"), (0.00042, "0.00042"), (0.0005, "0.0005")])
def test_labels_show_as_few_decimals_as_needed_and_at_least_two(threshold, text):
    assert label(threshold) == text


def test_processing_accepts_every_threshold_the_slider_offers(deepcl_provider):
    """The panel runs deepcl:detectchanges with the slider's threshold: a step Processing refused
    (its range began at 0.01, the slider's at 0.001) failed the run with "Incorrect parameter value"."""
    from qgis.core import QgsApplication

    parameter = QgsApplication.processingRegistry().algorithmById("deepcl:detectchanges").parameterDefinition(
        "THRESHOLD")
    assert all(parameter.checkValueIsAcceptable(threshold) for threshold in THRESHOLDS)
    assert not parameter.checkValueIsAcceptable(0.0) and not parameter.checkValueIsAcceptable(1.0)
