"""The model's decision threshold chosen on labelled pairs: the rule on hand-made scores, then
training and ``deepcl calibrate`` on real pairs writing the chosen threshold into the model file."""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from deepcl_core.cli import main
from deepcl_core.confidence_calibration import PlattScaling
from deepcl_core.detect import resolve_model
from deepcl_core.metrics import Confusion
from deepcl_core.model_file import load_model, save_model
from deepcl_core.training.calibration import (CANDIDATES, COARSE_PIXEL_M, INPUT_SCALES, ScoresNotFinite,
                                             best_threshold, check_scores_finite, confusions_by_threshold)

from test_training import DATA, LEVIR, VAL_DIRS

# Calibration is numerical work users run: an overflow or a division by zero is a defect, not noise.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def test_the_threshold_of_highest_pooled_f1_is_chosen():
    # Changed pixels score 0.3, unchanged 0.1: every t in (0.1, 0.3] separates them (F1 = 1), and of
    # those 0.3 lies nearest the training boundary 0.5.
    probability = np.array([[0.3, 0.3, 0.1, 0.1], [0.1, 0.1, 0.1, 0.3]], np.float32)
    label = (probability >= 0.3).astype(np.uint8)
    valid = np.ones_like(label, bool)
    confusions = confusions_by_threshold(probability, label, valid)
    assert confusions[0.3] == Confusion(tp=3, fp=0, fn=0, tn=5)
    assert confusions[0.5] == Confusion(tp=0, fp=0, fn=3, tn=5)
    assert best_threshold(confusions) == 0.3


def test_a_best_threshold_below_0_01_is_found():
    """Faint change (changed pixels at 0.006, unchanged at 0.001, as on 10 m imagery): only a
    candidate under 0.01 separates them."""
    probability = np.array([0.006, 0.006, 0.001, 0.001, 0.001], np.float32)
    label = (probability > 0.002).astype(np.uint8)
    confusions = confusions_by_threshold(probability, label, np.ones(5, bool))
    assert best_threshold(confusions) == 0.005 and confusions[0.005].metrics()["f1"] == 1.0


def test_invalid_pixels_do_not_count():
    # Valid: changed at 0.95, unchanged at 0.1, so every t in (0.1, 0.95] is perfect and 0.5 is chosen.
    # Counting the invalid unchanged pixels at 0.9 would push the choice to 0.95.
    probability = np.array([0.95, 0.95, 0.1, 0.1, 0.9, 0.9], np.float32)
    label = np.array([1, 1, 0, 0, 0, 0], np.uint8)
    valid = np.array([True, True, True, True, False, False])
    assert best_threshold(confusions_by_threshold(probability, label, valid)) == 0.5
    assert best_threshold(confusions_by_threshold(probability, label, np.ones(6, bool))) == 0.95


@pytest.mark.skipif(not LEVIR.is_dir(), reason="real data not found")
def test_training_stores_the_threshold_chosen_on_validation(tmp_path):
    from test_training import small_options
    from deepcl_core.training import train

    result = train(small_options(tmp_path / "model.pt", epochs=1))
    bundle = load_model(result.out)
    calibration = bundle.provenance["threshold_calibration"]
    assert calibration["score_threshold"] in CANDIDATES
    # The model's threshold is that score's calibrated probability, under the scaling it got.
    assert bundle.platt_scaling == PlattScaling(*calibration["platt_scaling"])
    assert bundle.threshold == result.threshold == calibration["threshold"]
    assert bundle.threshold == pytest.approx(bundle.platt_scaling.probability(calibration["score_threshold"]))
    assert calibration["pairs"] == ["val_27_0000_0256"] and calibration["f1"] >= calibration["f1_at_0.5"]
    # The epoch was judged at the threshold the model got: the same weights, pairs and candidates.
    selection = bundle.provenance["selection_metrics"]
    assert selection["per_pair"]["val_27_0000_0256"]["score_threshold"] == calibration["score_threshold"]
    assert selection["pooled"]["f1"] == pytest.approx(calibration["f1"])
    # The model as written, measured again: the same pixels pass its threshold on its confidence.
    validation = bundle.provenance["validation_metrics"]
    assert validation["per_pair"]["val_27_0000_0256"]["threshold"] == bundle.threshold
    assert validation["pooled"]["f1"] == pytest.approx(calibration["f1"]) == result.best_metrics["f1"]
    unchanged = train(small_options(tmp_path / "plain.pt", epochs=1, calibrate=False))
    assert load_model(unchanged.out).threshold == 0.5 and load_model(unchanged.out).platt_scaling.is_identity
    unchanged_validation = load_model(unchanged.out).provenance["selection_metrics"]
    assert unchanged_validation["per_pair"]["val_27_0000_0256"]["score_threshold"] == 0.5
    assert load_model(unchanged.out).provenance["validation_metrics"]["pooled"] == unchanged_validation["pooled"]


@pytest.mark.skipif(not LEVIR.is_dir(), reason="real data not found")
def test_cli_calibrate_rewrites_only_the_threshold(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "calibrated.pt"
    assert main(["calibrate", "--model", str(tiny_model_path), "--out", str(out), "--device", "cpu",
                 *map(str, VAL_DIRS)]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    before, after = load_model(tiny_model_path), load_model(out)
    assert after.threshold == printed["threshold"] and printed["previous_threshold"] == before.threshold
    # Progress as train and evaluate give it (it was silent until the JSON: minutes on Sentinel-2 scenes)
    progress = [re.fullmatch(r"calibrate: +[\d.]+% +[\d.]+s (.*)", line) for line in captured.err.splitlines()]
    assert [line[1] for line in progress if line] == ["pair val_27_0000_0256", "done"]
    assert after.provenance["threshold_calibration"]["pairs"] == ["val_27_0000_0256"]
    assert all(np.array_equal(before.state_dict[k], after.state_dict[k]) for k in before.state_dict)


def test_cli_calibrate_writes_only_pt_model_files(tiny_model_path, tmp_path, capsys):
    """As training: a name without .pt ("models/" becomes "models") was written as the model."""
    assert main(["calibrate", "--model", str(tiny_model_path), "--out", str(tmp_path / "calibrated.txt"),
                 "--device", "cpu", *map(str, VAL_DIRS)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"deepcl: error: --out {tmp_path / 'calibrated.txt'} is not a model file name; give one ending in .pt, such "
        f"as {tmp_path / 'calibrated.pt'}, or {tmp_path / 'calibrated.txt' / 'model.pt'} to write into the folder "
        f"{tmp_path / 'calibrated.txt'}")
    assert list(tmp_path.iterdir()) == []


def test_cli_calibrate_without_pairs_exits_2(tiny_model_path, tmp_path, capsys):
    assert main(["calibrate", "--model", str(tiny_model_path), "--out", str(tmp_path / "x.pt"),
                 str(tmp_path)]) == 2
    assert "no labelled pairs" in capsys.readouterr().err


@pytest.mark.skipif(not (DATA / "oscd" / "bercy").is_dir(), reason="real data not found")
def test_coarse_pairs_get_their_own_threshold(tiny_model_path, tmp_path, capsys):
    """Sentinel-2 pairs (10 m) choose the coarse threshold alone, the PNG pair (no georeference) the
    model's own: each equals what calibrating on its pairs alone chooses."""
    sentinel, levir = DATA / "oscd" / "bercy", VAL_DIRS[0]

    def calibrate(name, *folders):
        assert main(["calibrate", "--model", str(tiny_model_path), "--out", str(tmp_path / name),
                     "--device", "cpu", *map(str, folders)]) == 0
        return json.loads(capsys.readouterr().out), load_model(tmp_path / name)

    mixed, mixed_model = calibrate("mixed.pt", sentinel, levir)
    alone_coarse, coarse_model = calibrate("coarse.pt", sentinel)
    alone_fine, fine_model = calibrate("fine.pt", levir)
    [coarse] = mixed["by_pixel_size"]
    assert (coarse["min_pixel_size_m"], coarse["pairs"]) == (COARSE_PIXEL_M, ["bercy"])
    assert mixed["pairs"] == ["val_27_0000_0256"] and mixed["threshold"] == alone_fine["threshold"]
    assert coarse["threshold"] == alone_coarse["by_pixel_size"][0]["threshold"]
    assert mixed_model.thresholds_by_pixel_size == ((COARSE_PIXEL_M, coarse["threshold"]),)
    # Each class gets the scaling fitted on its own pairs, the coarse one at its enlargement.
    assert mixed_model.platt_scalings_by_pixel_size == ((COARSE_PIXEL_M, PlattScaling(*coarse["platt_scaling"])),)
    assert mixed_model.platt_scaling == fine_model.platt_scaling == PlattScaling(*alone_fine["platt_scaling"])
    assert coarse["threshold"] == pytest.approx(PlattScaling(*coarse["platt_scaling"]).probability(
        coarse["score_threshold"]))
    # The enlargement is chosen with the threshold: the one of the highest F1, and the cheapest of equals.
    best = max(coarse["f1_by_input_scale"].values())
    assert coarse["f1"] == best and coarse["f1_by_input_scale"][str(coarse["input_scale"])] == best
    assert coarse["input_scale"] == min(int(k) for k, f1 in coarse["f1_by_input_scale"].items() if f1 == best)
    assert sorted(map(int, coarse["f1_by_input_scale"])) == list(INPUT_SCALES)
    assert mixed_model.input_scales_by_pixel_size == ((COARSE_PIXEL_M, coarse["input_scale"]),)
    assert fine_model.input_scales_by_pixel_size == ()
    assert fine_model.thresholds_by_pixel_size == ()
    # Only coarse pairs: the model's own threshold, which serves finer images, is not measured by
    # them and stays the model's; the calibration records what they would choose.
    assert alone_coarse["threshold"] == coarse["threshold"] and alone_coarse["every_pair_coarse"]
    assert coarse_model.threshold == load_model(tiny_model_path).threshold
    assert coarse_model.platt_scaling == load_model(tiny_model_path).platt_scaling


@pytest.mark.skipif(not (DATA / "oscd" / "bercy").is_dir(), reason="real data not found")
def test_a_recalibrated_model_says_so_and_keeps_the_record_of_what_it_kept(tmp_path, capsys, monkeypatch):
    """`deepcl info` after calibrate showed training's validation metrics as those of the model as
    written (they were of thresholds it no longer had), nothing of the calibration run, and after
    calibrating on aerial pairs no record of where the Sentinel-2 threshold it kept came from."""
    import sys

    from test_training import small_options
    from deepcl_core.training import find_pairs, train

    trained = train(small_options(tmp_path / "trained.pt", epochs=1)).out
    sentinel, levir = DATA / "oscd" / "bercy", VAL_DIRS[0]
    for name, model, folders in (("both.pt", trained, (sentinel, levir)),
                                 ("aerial.pt", tmp_path / "both.pt", (levir,))):
        arguments = ["calibrate", "--model", str(model), "--out", str(tmp_path / name), "--device", "cpu",
                     *map(str, folders)]
        monkeypatch.setattr(sys, "argv", ["deepcl", *arguments])
        assert main(arguments) == 0
        capsys.readouterr()
    both, aerial = (load_model(tmp_path / name).provenance for name in ("both.pt", "aerial.pt"))
    assert "validation_metrics" not in both
    assert both["validation_metrics_before_recalibration"] == load_model(trained).provenance["validation_metrics"]
    [recalibration] = both["recalibrations"]
    assert recalibration["command_line"] == f"deepcl calibrate --model {trained} --out {tmp_path / 'both.pt'} " \
                                            f"--device cpu {sentinel} {levir}"
    assert sorted(pair["before"] for pair in recalibration["pairs"]) == sorted(
        str(pair.before.resolve()) for pair in find_pairs([sentinel, levir]))
    assert recalibration["calibrated_with"].startswith("deepcl ") and recalibration["created_utc"]
    assert len(aerial["recalibrations"]) == 2 and aerial["recalibrations"][0] == recalibration
    kept = aerial["threshold_calibration"]
    assert kept["kept_by_pixel_size"] and kept["pairs"] == [levir.name]
    assert kept["by_pixel_size"] == both["threshold_calibration"]["by_pixel_size"] != []


def test_calibrating_on_aerial_pairs_keeps_the_coarse_settings(tiny_model_path, tmp_path, capsys):
    """A user calibrating the bundled model on their aerial pairs must not lose its Sentinel-2
    threshold and enlargement, which those pairs say nothing about."""
    model = load_model(tiny_model_path)
    model.thresholds_by_pixel_size, model.input_scales_by_pixel_size = ((COARSE_PIXEL_M, 0.01),), ((COARSE_PIXEL_M, 2),)
    model.platt_scaling = PlattScaling(2.0, 1.0)
    model.platt_scalings_by_pixel_size = ((COARSE_PIXEL_M, PlattScaling(1.5, 4.5)),)
    save_model(model, tmp_path / "with_coarse.pt")
    out = tmp_path / "calibrated.pt"
    assert main(["calibrate", "--model", str(tmp_path / "with_coarse.pt"), "--out", str(out), "--device", "cpu",
                 *map(str, VAL_DIRS)]) == 0
    printed, calibrated = json.loads(capsys.readouterr().out), load_model(out)
    assert calibrated.threshold == printed["threshold"]
    assert calibrated.thresholds_by_pixel_size == ((COARSE_PIXEL_M, 0.01),)
    assert calibrated.input_scales_by_pixel_size == ((COARSE_PIXEL_M, 2),)
    assert calibrated.platt_scalings_by_pixel_size == ((COARSE_PIXEL_M, PlattScaling(1.5, 4.5)),)
    assert calibrated.platt_scaling == PlattScaling(*printed["platt_scaling"]) != PlattScaling(2.0, 1.0)


@pytest.mark.skipif(not LEVIR.is_dir(), reason="real data not found")
def test_a_kept_threshold_of_a_model_without_scalings_keeps_the_networks_score(tmp_path, capsys):
    """A model of format 1 (thresholds on the network's score, no scaling; here the bundled model's
    weights) calibrated on aerial pairs: its kept 10 m threshold must still meet the network's
    score, not the scaling fitted on the aerial pairs (which turned 0.01 into a threshold every
    pixel of a Sentinel-2 pair passed: 100 % changed)."""
    model = replace(resolve_model(None), thresholds_by_pixel_size=((COARSE_PIXEL_M, 0.01),),
                    input_scales_by_pixel_size=((COARSE_PIXEL_M, 2),), platt_scaling=PlattScaling(),
                    platt_scalings_by_pixel_size=())
    save_model(model, tmp_path / "format1.pt")
    out = tmp_path / "calibrated.pt"
    assert main(["calibrate", "--model", str(tmp_path / "format1.pt"), "--out", str(out), "--device", "cpu",
                 *map(str, VAL_DIRS)]) == 0
    printed, calibrated = json.loads(capsys.readouterr().out), load_model(out)
    assert calibrated.platt_scaling_for(None) == PlattScaling(*printed["platt_scaling"]) != PlattScaling()
    assert calibrated.threshold_for(10.0) == 0.01 and calibrated.platt_scaling_for(10.0) == PlattScaling()


def test_calibrate_replaces_no_file_unasked(tiny_model_path, tmp_path, capsys):
    """Another existing file only with --overwrite, a pair's file never, the model itself in place;
    each refusal comes before any pair is run through the network."""
    pair = tmp_path / "pairs" / "val_27"
    shutil.copytree(VAL_DIRS[0], pair)
    other = tmp_path / "other.pt"
    other.write_bytes(b"the user's file")
    label = (pair / "label.png").read_bytes()

    def calibrate(out, *extra):
        return main(["calibrate", "--model", str(tiny_model_path), "--out", str(out), "--device", "cpu",
                     *extra, str(tmp_path / "pairs")])

    assert calibrate(other) == 2 and "exists" in capsys.readouterr().err
    assert calibrate(pair / "label.png", "--overwrite") == 2
    assert "one of the input images" in capsys.readouterr().err
    assert other.read_bytes() == b"the user's file" and (pair / "label.png").read_bytes() == label
    assert calibrate(tmp_path) == 2 and "is a folder" in capsys.readouterr().err
    assert calibrate(other, "--overwrite") == 0 and load_model(other).threshold in CANDIDATES
    mine = tmp_path / "mine.pt"
    shutil.copy(tiny_model_path, mine)
    assert main(["calibrate", "--model", str(mine), "--out", str(mine), "--device", "cpu",
                 str(tmp_path / "pairs")]) == 0


def test_pairs_without_change_cannot_choose_a_threshold(tiny_model_path, tmp_path, capsys):
    """levir/train_386 marks no change: every threshold scores F1 0, so none is chosen, and the
    model keeps its own."""
    assert main(["calibrate", "--model", str(tiny_model_path), "--out", str(tmp_path / "x.pt"), "--device", "cpu",
                 str(LEVIR / "train_386_0512_0768")]) == 2
    assert "mark no change" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()


@pytest.mark.skipif(not (DATA / "dsifn" / "4_4").is_dir(), reason="real data not found")
def test_scores_that_are_not_numbers_are_refused_for_what_they_are(tiny_model_path, tmp_path, capsys):
    """Weights that are numbers but overflow the network (a training that diverged): the model was
    written with "log_loss_of_score": NaN (bare NaN in the JSON) and the scaling "not fitted: the pairs
    need changed and unchanged pixels", which the pair has; numpy warned of an invalid value."""
    model = load_model(tiny_model_path)
    convolutions = [name for name, weight in model.state_dict.items() if weight.dim() == 4][:3]
    model.state_dict = {name: weight * 1e25 if name in convolutions else weight
                        for name, weight in model.state_dict.items()}
    save_model(model, tmp_path / "overflowing.pt")
    out, pair = tmp_path / "calibrated" / "x.pt", DATA / "dsifn" / "4_4"
    assert main(["calibrate", "--model", str(tmp_path / "overflowing.pt"), "--out", str(out), "--device", "cpu",
                 str(pair)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1] == (
        f"deepcl: error: model {tmp_path / 'overflowing.pt'}: the network's scores are not numbers (NaN or infinite) "
        "on 65,536 of 65,536 valid pixels of pair 4_4: the network overflows on it, so no decision threshold or "
        "confidence scaling can be chosen; its weights are damaged or were written by a training that diverged: "
        "calibrate another model, or retrain with a lower learning rate (--lr)")
    assert captured.out == "" and not out.parent.exists()


def test_calibrate_refuses_the_tiles_detection_refuses_and_runs_small_ones(tiny_model_path, tmp_path, capsys):
    """--tile 100 was accepted, 64 crashed (a tile step of 0) and 32 chose its threshold on NaN scores
    (an overlap of 64 wider than the tile): a tile that is no multiple of 32 is refused before any
    work, in detection's words; small ones overlap by a quarter of themselves, as evaluate's do."""
    from deepcl_core.tiling import tile_overlap

    def calibrate(tile):
        return main(["calibrate", "--model", str(tiny_model_path), "--out", str(tmp_path / f"{tile}.pt"),
                     "--device", "cpu", "--tile", tile, *map(str, VAL_DIRS)])

    for tile in ("100", "0"):
        assert calibrate(tile) == 2 and not (tmp_path / f"{tile}.pt").exists()
        assert capsys.readouterr().err.strip() == (f"deepcl: error: tile size must be a multiple of 32 and at least "
                                                   f"32; got {tile}")
    for tile in ("32", "64"):  # RuntimeWarnings are errors here (pytestmark): NaN scores fail
        assert calibrate(tile) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["score_threshold"] in CANDIDATES and 0 < printed["threshold"] < 1
    # Every tile detection's default overlap suits keeps it, and the choices made with it.
    assert [tile_overlap(tile) for tile in (32, 64, 128, 160, 768)] == [8, 16, 32, 64, 64]


@pytest.mark.skipif(not LEVIR.is_dir(), reason="real data not found")
def test_fine_tuning_validated_on_aerial_pairs_keeps_the_coarse_settings(tiny_model_path, tmp_path):
    """As calibrate does: the initial model's threshold for 5 m pixels or coarser, their scaling and
    enlargement stay when the validation pairs are aerial (fine-tuning dropped them), its own
    threshold is chosen anew, and the provenance says what it was."""
    from test_training import small_options
    from deepcl_core.training import train

    model = load_model(tiny_model_path)
    model.threshold, model.platt_scaling = 0.3, PlattScaling(2.0, 1.0)
    model.thresholds_by_pixel_size, model.input_scales_by_pixel_size = ((COARSE_PIXEL_M, 0.01),), ((COARSE_PIXEL_M, 2),)
    model.platt_scalings_by_pixel_size = ((COARSE_PIXEL_M, PlattScaling(1.5, 4.5)),)
    save_model(model, tmp_path / "with_coarse.pt")
    result = train(small_options(tmp_path / "tuned.pt", init=tmp_path / "with_coarse.pt", encoder=None, epochs=1,
                                 iterations_per_epoch=2))
    tuned = load_model(result.out)
    calibration = tuned.provenance["threshold_calibration"]
    assert calibration["previous_threshold"] == 0.3 and calibration["kept_by_pixel_size"]
    assert tuned.thresholds_by_pixel_size == result.thresholds_by_pixel_size == ((COARSE_PIXEL_M, 0.01),)
    assert tuned.input_scales_by_pixel_size == ((COARSE_PIXEL_M, 2),)
    assert tuned.platt_scalings_by_pixel_size == ((COARSE_PIXEL_M, PlattScaling(1.5, 4.5)),)
    assert tuned.threshold == calibration["threshold"]
    assert tuned.platt_scaling == PlattScaling(*calibration["platt_scaling"])
    changes = tuned.provenance["settings_against_initial_model"]
    assert changes[0].startswith("other pixels: threshold 0.3 -> ")
    assert changes[1] == "pixels of 5 m or coarser: kept (threshold 0.01; input scale 2x; confidence scaling 1.5, 4.5)"


def test_scores_that_are_not_numbers_are_refused_in_one_line():
    """The check of calibration and training's validations: a valid pixel's infinite score is refused
    with the pair, its enlargement and what it prevents; finite scores come back as they are."""
    pair = SimpleNamespace(name="p", valid=np.array([[True, True], [True, False]]))
    overflowed = np.full((2, 2), np.inf, np.float32)
    with pytest.raises(ScoresNotFinite) as caught:
        check_scores_finite(overflowed, pair, 2, ", so nothing")
    assert str(caught.value) == ("the network's scores are not numbers (NaN or infinite) on 3 of 3 valid pixels of "
                                 "pair p enlarged 2×: the network overflows on it, so nothing")
    scores = np.array([[0.1, 0.2], [0.3, np.nan]], np.float32)  # NaN where the pair has no data
    assert check_scores_finite(scores, pair) is scores
