"""A training whose loss, weights or validation scores stop being numbers (a learning rate far too
high): it stops there with one clear line and writes no model. It went on, wrote a model of NaN
weights, exited 0 and printed bare NaN in its JSON (not JSON)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from deepcl_core.cli import main
from deepcl_core.errors import InputError
from deepcl_core.training import train
from deepcl_core.training.checkpoint import load_checkpoint

from test_training import BUNDLED, DATA, small_options

LEVIR_PAIR, DSIFN_PAIR, DSIFN_VAL = DATA / "levir" / "test_7_0256_0512", DATA / "dsifn" / "0_2", DATA / "dsifn" / "4_4"

pytestmark = [pytest.mark.skipif(not (LEVIR_PAIR.is_dir() and DSIFN_VAL.is_dir()), reason="real data not found"),
              pytest.mark.filterwarnings("error::RuntimeWarning")]  # numpy's "invalid value" must not leak


def run_train(out: Path, *options: str) -> int:
    return main(["train", str(LEVIR_PAIR), str(DSIFN_PAIR), "--val", str(DSIFN_VAL), "--out", str(out),
                 "--epochs", "2", "--batch", "2", "--crop", "64", "--device", "cpu", *options])


@pytest.mark.parametrize("model, lr", [("simple_cnn", "1e6"), ("bundled", "1e8")])
def test_a_diverging_training_stops_at_the_first_step_that_is_not_finite(tmp_path, capsys, model, lr):
    """The reviewer's runs: a new simple CNN at --lr 1e6, the bundled model fine-tuned at 1e8."""
    out = tmp_path / "run" / "nan.pt"
    chosen = ["--encoder", "simple_cnn"] if model == "simple_cnn" else ["--init", str(BUNDLED)]
    code = run_train(out, *chosen, "--iterations-per-epoch", "4", "--lr", lr, "--weight-average", "0")
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and captured.out == "", captured.out[-300:]
    assert re.fullmatch(rf"deepcl: error: training diverged at epoch 1, step [2-4]: the (loss is not finite \(nan\)|"
                        rf"weights are not finite after the step); no model was written\. Lower the learning rate "
                        rf"\(--lr, now {lr}\); no epoch had finished", lines[-1]), lines[-1]
    assert not (tmp_path / "run").exists()  # no model, no checkpoint, not even the folder


def test_validation_scores_that_are_not_numbers_stop_the_training(tmp_path, capsys):
    """Weights that are numbers, but so large that the network overflows on the validation pair: its
    F1 of 0 was recorded, and calibration warned (numpy's RuntimeWarning) and kept threshold 0.5."""
    out = tmp_path / "run" / "nan.pt"
    code = run_train(out, "--encoder", "simple_cnn", "--iterations-per-epoch", "2", "--lr", "1e5",
                     "--weight-average", "0")
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and lines[-1].startswith(
        "deepcl: error: training diverged at epoch 1, validating: the network's scores are not numbers (NaN or "
        "infinite) on 65,536 of 65,536 valid pixels of pair 4_4: the network overflows on it; no model was written. "
        "Lower the learning rate (--lr, now 100000)"), lines[-1]
    assert not (tmp_path / "run").exists()


class LossNaNFrom:
    """training's loss, made NaN from its ``first``-th call on (the divergence, at a chosen step)."""

    def __init__(self, first: int) -> None:
        from deepcl_core.training import trainer

        self.loss, self.first, self.calls = trainer.deepcl_loss, first, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        terms = self.loss(*args, **kwargs)
        if self.calls >= self.first:
            terms["total"] = terms["total"] * float("nan")
        return terms


@pytest.mark.parametrize("kept", [True, False])
def test_divergence_after_a_finished_epoch_keeps_its_checkpoint_and_says_to_start_anew(tmp_path, monkeypatch, kept):
    """--resume refuses another --lr (the checkpoint's recipe), so the advice is a new run with --overwrite;
    the last good checkpoint stays. Processing (checkpoint_kept False) removes it: nothing is kept."""
    from deepcl_core.training import trainer

    monkeypatch.setattr(trainer, "deepcl_loss", LossNaNFrom(first=3))  # epoch 2, step 1
    out = tmp_path / "m.pt"
    with pytest.raises(InputError) as caught:
        train(small_options(out, epochs=3, iterations_per_epoch=2, batch_size=2, checkpoint_kept=kept))
    assert type(caught.value).__name__ == "TrainingDiverged"
    checkpoint = tmp_path / "m.pt.ckpt"
    advice = (f"and start anew with --overwrite: the checkpoint of epoch 1 ({checkpoint}) is kept, but --resume "
              "continues it only with its own learning rate" if kept else "; nothing of the run is kept")
    assert str(caught.value) == ("training diverged at epoch 2, step 1: the loss is not finite (nan); no model was "
                                 f"written. Lower the learning rate (--lr, now 0.003) {advice}".replace(" ;", ";"))
    # epoch 1's, not a NaN one; with checkpoint_kept False, Processing's caller deletes it with its run folder
    assert not out.exists() and load_checkpoint(checkpoint)["epoch"] == 1


def test_a_fine_tunes_warnings_are_said_once_on_the_terminal(tmp_path):
    """The warning of settings kept without validation came twice: as a warning and as a progress line."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "deepcl_core", "train", str(LEVIR_PAIR), "--val-fraction", "0",
                           "--init", str(BUNDLED), "--out", str(tmp_path / "m.pt"), "--epochs", "1",
                           "--iterations-per-epoch", "1", "--batch", "2", "--crop", "64", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("no validation pairs: the fine-tuned model keeps") == 1, done.stderr[-2000:]


def test_scores_that_are_not_numbers_in_the_last_validation_stop_the_training_in_words(tmp_path, monkeypatch):
    """The model as written is validated once more, coarse pairs enlarged, which no epoch's validation
    did: scores that overflow only there ended the run in a bare model-file error, without its advice."""
    import numpy as np

    from deepcl_core.training import trainer

    monkeypatch.setattr(trainer, "predict_as_detected",
                        lambda network, bundle, pair, device, tile, stop: np.full(pair.shape, np.nan, np.float32))
    out = tmp_path / "m.pt"
    with pytest.raises(InputError) as caught:
        train(small_options(out, epochs=1, iterations_per_epoch=1, batch_size=2, calibrate=False))
    assert type(caught.value).__name__ == "TrainingDiverged"
    assert re.fullmatch(r"training diverged: the weights of epoch 1 give scores that are not numbers when run as "
                        r"the model will be: the "
                        r"network's scores are not numbers \(NaN or infinite\) on [\d,]+ of [\d,]+ valid pixels of "
                        r"pair \S+: the network overflows on it; no model was written\. Lower the learning rate .*",
                        str(caught.value)), str(caught.value)
    assert not out.exists()
