"""The experiments table (`make experiments`, scripts/experiments.py) as assembled from the runs'
results: a figure a run lacks is left out of the seed mean, not averaged in as 0."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "experiments.py"


@pytest.fixture(scope="module")
def experiments():
    spec = importlib.util.spec_from_file_location("experiments_script", SCRIPT)
    module = sys.modules["experiments_script"] = importlib.util.module_from_spec(spec)  # its dataclasses look it up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["experiments_script"]


def run(variant: str, seed: int, f1: float, validation_f1, auc=0.8, per_dataset=None, coarse=()) -> dict:
    return {"variant": variant, "seed": seed, "threshold": 0.5, "validation_f1": validation_f1,
            "pooled": {"f1": f1, "iou": f1 / (2 - f1), "auc_distance": auc}, "pseudo_change_fpr": 0.01,
            "per_dataset_f1": per_dataset or {"dsifn": f1, "levir": f1, "oscd": f1, "sztaki": f1},
            "thresholds_by_pixel_size": [[5.0, 0.07]] if coarse else [], "input_scales_by_pixel_size": list(coarse)}


def test_a_figure_a_run_lacks_is_left_out_of_the_mean(experiments):
    """A model without validation metrics (the bundled model's provenance has none) pulled the
    validation F1 mean down as a 0, and a data set a run did not score did the same."""
    results = [run("DeepCL, MobileNetV2", 0, 0.6, 0.7), run("DeepCL, MobileNetV2", 1, 0.6, None),
               run("DeepCL, MobileNetV2", 2, 0.6, 0.7, per_dataset={"dsifn": 0.6}),
               run("BCE+Dice only, MobileNetV2", 0, 0.5, 0.6), run("BCE+Dice only, MobileNetV2", 1, 0.5, 0.6)]
    row = next(r for r in experiments.summary_rows(results) if r[0] == "DeepCL, MobileNetV2")
    assert row[1] == "3" and row[2] == "0.700 ± 0.000"  # validation F1 of the two runs that have it
    assert row[5] == "0.600 ± 0.000"  # LEVIR, scored by two of the three runs
    line = next(line for line in experiments.comparison_lines(results) if "MobileNetV2:" in line
                and "BCE" in line)
    assert "validation F1 +0.100" in line and "held-out F1 +0.100" in line


def test_the_header_names_the_coarse_pixels_settings_the_runs_were_judged_at(experiments):
    """Models calibrated on a Sentinel-2 validation pair judge OSCD at a threshold and enlargement
    of their own, which the header left unsaid."""
    assert experiments._coarse_settings([run("DeepCL, MobileNetV2", 0, 0.6, 0.7)]) == ""
    coarse = experiments._coarse_settings([run("DeepCL, MobileNetV2", 0, 0.6, 0.7, coarse=[[5.0, 2]])])
    assert coarse == "; for pixels of 5 m or coarser 0.07, the images enlarged 2×"
