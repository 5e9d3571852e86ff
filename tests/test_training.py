"""Training end to end on a small real subset (simple_cnn, a few steps): the loss falls, a loadable
model with provenance results, fine-tuning, resume after an interruption, and clear errors."""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from osgeo import gdal

from deepcl_core.cli import main
from deepcl_core.errors import Cancelled, InputError, OutputError
from deepcl_core.model_file import load_model
from deepcl_core.raster_io import open_raster
from deepcl_core.training import TrainOptions, find_pairs, read_label, split_pairs, train
from deepcl_core.training.checkpoint import load_checkpoint, save_checkpoint

from core_test_helpers import HAS_PROC, files_open_in_this_process

DATA = Path(os.environ.get("DEEPCL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
LEVIR = DATA / "levir"
TRAIN_DIRS = [LEVIR / "test_102_0512_0000", LEVIR / "test_121_0768_0256", LEVIR / "train_36_0512_0512"]
VAL_DIRS = [LEVIR / "val_27_0000_0256"]

pytestmark = pytest.mark.skipif(not LEVIR.is_dir(), reason=f"real data not found at {DATA}")


def small_options(out: Path, **changes) -> TrainOptions:
    values = dict(data_dirs=TRAIN_DIRS, val_dirs=VAL_DIRS, out=out, epochs=3, iterations_per_epoch=8,
                  batch_size=4, crop=64, encoder="simple_cnn", lr=3e-3, device="cpu", seed=3)
    values.update(changes)
    return TrainOptions(**values)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "model.pt"
    return train(small_options(out, command_line="deepcl train (test)"))


def test_training_lowers_the_loss_and_writes_a_complete_model(trained):
    losses = [entry["loss_total"] for entry in trained.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    bundle = load_model(trained.out)
    assert bundle.config.encoder == "simple_cnn" and bundle.bands == ("red", "green", "blue")
    provenance = bundle.provenance
    assert provenance["command_line"] == "deepcl train (test)"
    assert [p["name"] for p in provenance["validation_pairs"]] == ["val_27_0000_0256"]
    assert len(provenance["train_pairs"]) == 3 and provenance["epochs"] == 3
    import hashlib

    assert [p["label_sha256"] for p in provenance["train_pairs"]] == [
        hashlib.sha256(Path(p["label"]).read_bytes()).hexdigest() for p in provenance["train_pairs"]]
    assert provenance["loss"]["gamma"] == 2.0 and provenance["hardware"]["device"] == "cpu"
    pooled = provenance["validation_metrics"]["pooled"]
    assert 0.0 <= pooled["f1"] <= 1.0 and pooled["tp"] + pooled["fn"] > 0
    assert provenance["best_epoch"] == trained.best_epoch
    assert trained.checkpoint.is_file()


def test_fine_tuning_from_init_keeps_the_contract(trained, tmp_path):
    result = train(small_options(tmp_path / "tuned.pt", init=trained.out, encoder=None, epochs=1))
    bundle = load_model(result.out)
    assert bundle.config == load_model(trained.out).config
    assert bundle.provenance["encoder_init"].startswith("fine-tuned from")
    assert bundle.provenance["parent_provenance"]["epochs"] == 3
    with pytest.raises(InputError, match="encoder simple_cnn"):
        train(small_options(tmp_path / "bad.pt", init=trained.out, encoder="mobilenet_v2", epochs=1))


class CancelAfter:
    def __init__(self, polls: int) -> None:
        self.polls = polls

    def __call__(self) -> bool:
        self.polls -= 1
        return self.polls < 0


def test_a_cancelled_training_says_what_is_kept_of_it(tmp_path):
    """Cancelled in its first epoch, it said the checkpoint of the last finished epoch was kept: there
    was none."""
    out = tmp_path / "m.pt"
    with pytest.raises(Cancelled, match=r"^training cancelled; no epoch had finished$"):
        train(small_options(out, epochs=2, iterations_per_epoch=4), cancel=CancelAfter(2))
    assert not out.exists() and not (tmp_path / "m.pt.ckpt").exists()
    with pytest.raises(Cancelled, match=r"^training cancelled; the checkpoint of epoch 1 is kept \(continue with "
                                        r"--resume\)$"):
        train(small_options(out, epochs=2, iterations_per_epoch=4), cancel=CancelAfter(6))
    assert (tmp_path / "m.pt.ckpt").is_file()


PHASES_AFTER_THE_LAST_STEP = ["epoch 2/2: loss", "choosing the decision thresholds on the validation pairs",
                              "measuring the model as written", "settings written"]


@pytest.mark.parametrize("phase", PHASES_AFTER_THE_LAST_STEP)
def test_cancel_after_the_last_step_writes_no_model(tmp_path, monkeypatch, phase):
    """Cancel was polled only before each step: pressed during the last validation, the threshold
    choice or the validation of the model as written (minutes on large validation pairs), it was
    ignored, and the model was written as if the run had not been cancelled. Each phase's poll stops
    the run before the next phase begins; the last one, before the file is written."""
    from deepcl_core.training import trainer

    report_settings = trainer._report_settings

    def said_settings(*args, **kwargs):  # the last step before the model is written
        said.append("settings written")
        return report_settings(*args, **kwargs)
    monkeypatch.setattr(trainer, "_report_settings", said_settings)
    out = tmp_path / "m.pt"
    said: List[str] = []
    with pytest.raises(Cancelled, match=r"^training cancelled; the checkpoint of epoch 2 is kept \(continue with "
                                        r"--resume\)$"):
        train(small_options(out, epochs=2, iterations_per_epoch=2),
              progress=lambda fraction, message: said.append(message),
              cancel=lambda: any(message.startswith(phase) for message in said))
    assert not out.exists() and (tmp_path / "m.pt.ckpt").is_file()
    later = PHASES_AFTER_THE_LAST_STEP[PHASES_AFTER_THE_LAST_STEP.index(phase) + 1:]
    assert not [m for m in said if any(m.startswith(p) for p in later) and not m.startswith(phase)], said
    resumed = train(small_options(out, epochs=2, iterations_per_epoch=2, resume=True))  # as the message says
    assert out.is_file() and resumed.epochs_completed == 2


@pytest.mark.parametrize("phase", ["epoch 1/1 step 2", "choosing the decision thresholds",
                                   "measuring the model as written"])
def test_cancel_stops_the_network_within_a_validation_pair(tmp_path, monkeypatch, phase):
    """Cancel was polled between validation pairs only: one large validation scene (a Sentinel-2 tile,
    run at 1×, 2× and 3× to choose its enlargement) kept a cancelled run going for many minutes."""
    from deepcl_core.training import inference

    said: List[str] = []
    batches_after_cancel: List[int] = []  # the cancel is asked for after the phase's first batch of tiles
    run_network = inference.run_network

    def counted(*args, **kwargs):
        if batches_after_cancel:
            batches_after_cancel[0] += 1
        elif said and said[-1].startswith(phase):
            batches_after_cancel.append(0)
        return run_network(*args, **kwargs)
    monkeypatch.setattr(inference, "run_network", counted)
    with pytest.raises(Cancelled):
        train(small_options(tmp_path / "m.pt", epochs=1, iterations_per_epoch=2, val_tile=64),
              progress=lambda fraction, message: said.append(message), cancel=lambda: bool(batches_after_cancel))
    assert batches_after_cancel == [0]


def test_pairs_held_out_at_random_are_named(tmp_path):
    """With --val-fraction the user chose no validation pair: the run says which were held out, and
    that chance (with the seed) chose them, or a poor validation F1 could not be traced to its pairs."""
    said = []
    with pytest.raises(Cancelled):
        train(small_options(tmp_path / "m.pt", val_dirs=(), val_fraction=0.5),
              progress=lambda fraction, message: said.append(message), cancel=CancelAfter(0))
    _, held_out = split_pairs(find_pairs(TRAIN_DIRS), 0.5, seed=3)
    names = ", ".join(f"levir/{pair.name}" for pair in held_out)
    assert said[0] == (f"loading 1 training and 2 validation pairs (held out at random with seed 3: {names})")
    said.clear()
    with pytest.raises(Cancelled):  # validation folders given: nothing to say of chance
        train(small_options(tmp_path / "m.pt"), progress=lambda fraction, message: said.append(message),
              cancel=CancelAfter(0))
    assert said[0] == "loading 3 training and 1 validation pairs"
    # A data set cut into thousands of tiles holds out hundreds: the line names ten, and says how many more
    from deepcl_core.training.trainer import _first_names

    every = find_pairs([DATA])
    assert _first_names(every) == (", ".join(f"{p.group}/{p.name}" for p in every[:10])
                                   + f" and {len(every) - 10} more") and len(every) > 10


def test_resume_after_an_interruption_loses_no_epoch(tmp_path):
    straight = train(small_options(tmp_path / "straight.pt", epochs=2, iterations_per_epoch=4))
    interrupted = tmp_path / "interrupted.pt"
    with pytest.raises(Cancelled):
        train(small_options(interrupted, epochs=2, iterations_per_epoch=4), cancel=CancelAfter(6))
    assert not interrupted.exists()  # a cancelled run leaves no model file, only its checkpoint
    resumed = train(small_options(interrupted, epochs=2, iterations_per_epoch=4, resume=True))
    assert resumed.epochs_completed == 2 and [h["epoch"] for h in resumed.history] == [1, 2]
    # The same seeds per epoch: the resumed run ends where the uninterrupted one did.
    assert [h["loss_total"] for h in resumed.history] == pytest.approx([h["loss_total"] for h in straight.history])
    a, b = load_model(straight.out).state_dict, load_model(resumed.out).state_dict
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    written = interrupted.read_bytes()
    said: list = []
    with pytest.raises(InputError, match="holds 2 finished epochs, more than the 1 asked for"):
        train(small_options(interrupted, epochs=1, iterations_per_epoch=4, resume=True),
              progress=lambda fraction, message: said.append(message))
    assert interrupted.read_bytes() == written  # left as it was (it was rewritten, nothing trained)
    # A checkpoint of another run, too, is refused before the pairs are read (minutes for large data sets)
    with pytest.raises(InputError, match="was made with other seed"):
        train(small_options(interrupted, epochs=3, iterations_per_epoch=4, resume=True, seed=4),
              progress=lambda fraction, message: said.append(message))
    assert said == []


def test_an_earlier_runs_files_are_kept_unless_overwrite(trained, tmp_path):
    """A second run with the same --out is refused before any pair is read, whether the earlier one
    finished (its model file) or was interrupted (its checkpoint alone); --overwrite starts anew."""
    finished = trained.out.read_bytes(), trained.checkpoint.read_bytes()
    with pytest.raises(OutputError) as caught:
        train(small_options(trained.out))
    assert str(caught.value) == f"output {trained.out} exists; remove it or allow overwriting (--overwrite)"
    assert (trained.out.read_bytes(), trained.checkpoint.read_bytes()) == finished

    interrupted = tmp_path / "model.pt"
    shutil.copy(trained.checkpoint, tmp_path / "model.pt.ckpt")
    with pytest.raises(OutputError) as caught:
        train(small_options(interrupted))
    assert str(caught.value) == (f"{tmp_path / 'model.pt.ckpt'} holds the checkpoint of an earlier training run; "
                                 "continue that run with --resume, or start anew with --overwrite")
    assert (tmp_path / "model.pt.ckpt").read_bytes() == finished[1] and not interrupted.exists()

    anew = train(small_options(interrupted, epochs=1, iterations_per_epoch=2, overwrite=True))
    assert [entry["epoch"] for entry in anew.history] == [1] and load_model(interrupted).trained


def test_resume_with_another_recipe_is_refused(tmp_path):
    """A resumed run that changed the learning rate or the bands would mix two trainings under one
    provenance; more epochs (and other batch, crop, device) continue the same run."""
    out = tmp_path / "m.pt"
    with pytest.raises(Cancelled):
        train(small_options(out, epochs=2, iterations_per_epoch=2), cancel=CancelAfter(3))
    kept = (tmp_path / "m.pt.ckpt").read_bytes()
    with pytest.raises(InputError) as caught:
        train(small_options(out, epochs=2, iterations_per_epoch=2, resume=True, lr=0.1))
    assert "lr 0.003 (now 0.1)" in str(caught.value) and (tmp_path / "m.pt.ckpt").read_bytes() == kept
    with pytest.raises(InputError, match=r"bands \['red', 'green', 'blue'\] \(now \['blue', 'green', 'red'\]\)"):
        train(small_options(out, epochs=2, iterations_per_epoch=2, resume=True, bands=["blue", "green", "red"]))
    resumed = train(small_options(out, epochs=3, iterations_per_epoch=2, resume=True, batch_size=2))
    assert [entry["epoch"] for entry in resumed.history] == [1, 2, 3]


def test_a_checkpoint_of_an_earlier_deepcl_is_refused_for_what_it_is(tmp_path):
    """A checkpoint written before misregistration was bounded has no rotation_px (nor the schedule's
    length): it was refused as made with other options, which no option could match."""
    import torch

    from deepcl_core.training.checkpoint import save_checkpoint

    out = tmp_path / "m.pt"
    with pytest.raises(Cancelled):
        train(small_options(out, epochs=2, iterations_per_epoch=2), cancel=CancelAfter(3))
    checkpoint = tmp_path / "m.pt.ckpt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    del state["recipe"]["augment"]["strength"]["rotation_px"], state["schedule_epochs"]
    save_checkpoint(state, checkpoint)
    with pytest.raises(InputError, match=r"was written by an earlier DeepCL, whose pseudo-change moved pixels "
                                         r"further .*; start anew with --overwrite, or finish it with the DeepCL that "
                                         r"began it$"):
        train(small_options(out, epochs=3, iterations_per_epoch=2, resume=True))


def test_validation_pairs_without_change_are_refused_before_training(tmp_path):
    """Every epoch would score F1 0 on them and the first would be kept: refused before the first
    step, whether the threshold is calibrated on them or not (levir/train_386 marks no change)."""
    no_change = [LEVIR / "train_386_0512_0768"]
    for calibrate in (True, False):
        with pytest.raises(InputError, match="mark no change"):
            train(small_options(tmp_path / "m.pt", val_dirs=no_change, calibrate=calibrate))
    assert list(tmp_path.iterdir()) == []  # no checkpoint: no step was taken


def test_a_refused_run_leaves_no_folders(tmp_path):
    out = tmp_path / "typo" / "deeper" / "m.pt"
    with pytest.raises(InputError, match="no labelled pairs"):
        train(small_options(out, data_dirs=[tmp_path]))
    assert not (tmp_path / "typo").exists()


def test_the_model_file_never_replaces_a_pairs_file(tmp_path):
    pair = copy_pair(LEVIR / "train_36_0512_0512", tmp_path / "pairs" / "train_36")
    label = (pair / "label.png").read_bytes()
    with pytest.raises(OutputError, match="one of the input images"):
        train(small_options(pair / "label.png", data_dirs=[tmp_path / "pairs", *TRAIN_DIRS], overwrite=True))
    assert (pair / "label.png").read_bytes() == label


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no checkpoint"):
        train(small_options(tmp_path / "m.pt", resume=True))


def test_resume_and_overwrite_together_are_refused_before_anything_is_read(tmp_path):
    """Continuing and starting anew at once: it resumed, where --help says --overwrite starts anew."""
    with pytest.raises(InputError, match="exclude each other"):
        train(small_options(tmp_path / "m.pt", resume=True, overwrite=True))
    assert not list(tmp_path.iterdir())


def test_no_pairs_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no labelled pairs"):
        train(small_options(tmp_path / "m.pt", data_dirs=[tmp_path]))


def test_empty_validation_split_is_a_clear_error(tmp_path):
    empty = tmp_path / "val"
    empty.mkdir()
    with pytest.raises(InputError, match="validation split is empty"):
        train(small_options(tmp_path / "m.pt", val_dirs=[empty]))


def copy_pair(source: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    for name in ("before.png", "after.png", "label.png"):
        shutil.copy(source / name, target / name)
    return target


def write_png(path: Path, array: np.ndarray) -> None:
    memory = gdal.GetDriverByName("MEM").Create("", array.shape[1], array.shape[0], 1, gdal.GDT_Byte)
    memory.GetRasterBand(1).WriteArray(array)
    gdal.GetDriverByName("PNG").CreateCopy(str(path), memory)


def test_non_binary_label_is_a_clear_error_before_training(tmp_path):
    pair = copy_pair(TRAIN_DIRS[0], tmp_path / "data" / "pair")
    label = np.zeros((256, 256), np.uint8)
    label[:10, :10], label[20:30, :10] = 1, 2
    write_png(pair / "label.png", label)
    with pytest.raises(InputError, match="not binary") as caught:
        train(small_options(tmp_path / "m.pt", data_dirs=[tmp_path / "data"]))
    assert not (tmp_path / "m.pt.ckpt").exists()
    if HAS_PROC:  # the exception, kept as QGIS keeps it, holds no input open
        assert caught.value.__traceback__ is not None
        assert not {str(path) for path in pair.iterdir()} & files_open_in_this_process()


def test_label_of_another_size_without_georeference_is_a_clear_error(tmp_path):
    pair = copy_pair(TRAIN_DIRS[0], tmp_path / "data" / "pair")
    write_png(pair / "label.png", np.zeros((100, 120), np.uint8))
    with pytest.raises(InputError, match="cannot be\\s+aligned"):
        train(small_options(tmp_path / "m.pt", data_dirs=[tmp_path / "data"]))


def test_labels_0_255_and_the_levir_layout_are_read(tmp_path):
    root = tmp_path / "LEVIR-CD" / "train"
    for folder in ("A", "B", "label"):
        (root / folder).mkdir(parents=True)
    for source in TRAIN_DIRS[:2]:
        shutil.copy(source / "before.png", root / "A" / f"{source.name}.png")
        shutil.copy(source / "after.png", root / "B" / f"{source.name}.png")
        original = gdal.Open(str(source / "label.png")).ReadAsArray()
        write_png(root / "label" / f"{source.name}.png", original * 255)
    pairs = find_pairs([tmp_path])
    assert [p.name for p in pairs] == [f"train/{d.name}" for d in TRAIN_DIRS[:2]]
    label, valid = read_label(pairs[0], open_raster(pairs[0].before, "before"))
    original = gdal.Open(str(TRAIN_DIRS[0] / "label.png")).ReadAsArray()
    assert valid.all() and np.array_equal(label, original)


def test_all_shared_pairs_are_found_and_split_per_data_set():
    pairs = find_pairs([DATA])
    groups = {p.group for p in pairs}
    assert {"oscd", "sztaki", "levir", "dsifn"} <= groups and len(pairs) >= 40
    assert find_pairs([DATA / "oscd"]) == [p for p in pairs if p.group == "oscd"]
    training, validation = split_pairs(pairs, 0.2, seed=0)
    assert {p.group for p in validation} == groups
    assert not {p.before for p in training} & {p.before for p in validation}
    assert split_pairs(pairs, 0.2, seed=0) == (training, validation)


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    code = main(["train", str(tmp_path), "--out", str(tmp_path / "m.pt"), "--encoder", "simple_cnn"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no labelled pairs" in err[0]


def test_ctrl_c_names_the_checkpoint_to_resume(tmp_path, capsys):
    """Interrupted after an epoch, the command line says what is kept and how to go on; its log
    (not a terminal) showed the epoch's result."""
    import _thread
    import threading
    import time

    checkpoint = tmp_path / "m.pt.ckpt"

    def interrupt_after_the_first_epoch() -> None:
        deadline = time.monotonic() + 120
        while not checkpoint.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        _thread.interrupt_main()  # Ctrl-C's KeyboardInterrupt, in the main thread

    threading.Thread(target=interrupt_after_the_first_epoch, daemon=True).start()
    code = main(["train", *map(str, TRAIN_DIRS), "--val", str(VAL_DIRS[0]), "--out", str(tmp_path / "m.pt"),
                 "--epochs", "100", "--iterations-per-epoch", "4", "--batch", "4", "--crop", "64",
                 "--encoder", "simple_cnn", "--device", "cpu"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 130 and lines[-1] == (f"deepcl: interrupted; the checkpoint {checkpoint} keeps the last "
                                         "finished epoch: continue with the same command and --resume")
    # Not a terminal: a line per tenth of the run, and the epoch's result, which comes between steps
    assert any("epoch 1/100: loss" in line and "val F1" in line for line in lines), lines
    assert not (tmp_path / "m.pt").exists()


def test_a_crop_larger_than_every_pair_is_refused(tmp_path):
    """512 px crops of 256² pairs would be three quarters padding, at four times the cost."""
    with pytest.raises(InputError, match=r"the crop \(512 px\) is larger than every training pair \(the largest, "
                                         r".*, is 256×256\): choose --crop 256 or less"):
        train(small_options(tmp_path / "m.pt", crop=512))
    assert list(tmp_path.iterdir()) == []


def test_resume_knows_its_run_under_another_spelling_of_the_data_folders(tmp_path, monkeypatch):
    """The checkpoint records the pairs' real paths: a run started on relative data folders resumes
    from another working folder on the same folders reached through a link (it was refused, "made
    with other training pairs"), and the model file's provenance records real, absolute paths. An
    older checkpoint (paths as given, relative) still resumes from the folder it was started in."""
    tiny = dict(iterations_per_epoch=2, batch_size=2, weight_average=0.0, calibrate=False)
    out = tmp_path / "m.pt"
    monkeypatch.chdir(LEVIR)
    train(small_options(out, epochs=1, data_dirs=[Path(d.name) for d in TRAIN_DIRS],
                        val_dirs=[Path(VAL_DIRS[0].name)], **tiny))
    (tmp_path / "link").symlink_to(LEVIR, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    resumed = train(small_options(out, epochs=2, resume=True, data_dirs=[Path("link", d.name) for d in TRAIN_DIRS],
                                  val_dirs=[Path("link", VAL_DIRS[0].name)], **tiny))
    assert [entry["epoch"] for entry in resumed.history] == [1, 2]
    provenance = load_model(out).provenance
    assert provenance["data_dirs"] == [str(d.resolve()) for d in TRAIN_DIRS]
    assert provenance["validation"] == f"folders {VAL_DIRS[0].resolve()}"
    assert [p["before"] for p in provenance["validation_pairs"]] == [str((VAL_DIRS[0] / "before.png").resolve())]

    checkpoint = tmp_path / "m.pt.ckpt"
    state = load_checkpoint(checkpoint)
    for key in ("train_pairs", "val_pairs"):  # as an older DeepCL wrote them, run in LEVIR
        state[key] = [os.path.relpath(path, LEVIR.resolve()) for path in state[key]]
    save_checkpoint({k: v for k, v in state.items() if not k.startswith("format")}, checkpoint)
    monkeypatch.chdir(LEVIR)
    resumed = train(small_options(out, epochs=3, resume=True, **tiny))
    assert [entry["epoch"] for entry in resumed.history] == [1, 2, 3]
    assert load_checkpoint(checkpoint)["val_pairs"] == [str((VAL_DIRS[0] / "before.png").resolve())]


def test_folders_of_pairs_given_as_one_string_are_refused_in_words(tmp_path):
    """A Python caller's data_dirs="pairs" was searched letter by letter: "data folder not found: p"."""
    with pytest.raises(InputError, match=r"folders of pairs come as a list; got the one folder 'pairs': "
                                         r"give \['pairs'\]"):
        find_pairs("pairs")
    with pytest.raises(InputError, match="folders of pairs come as a list"):
        train(small_options(tmp_path / "m.pt", data_dirs=str(TRAIN_DIRS[0])))


def test_an_out_that_is_not_a_pt_file_is_refused(tmp_path, capsys):
    """`--out newmodels/` (a folder to be) reaches train as "newmodels" and became a model file of
    that name beside newmodels.ckpt; a model file name must end in .pt."""
    code = main(["train", *map(str, TRAIN_DIRS), "--val", str(VAL_DIRS[0]), "--out", f"{tmp_path / 'newmodels'}/",
                 "--epochs", "1", "--iterations-per-epoch", "2", "--batch", "2", "--crop", "64",
                 "--encoder", "simple_cnn", "--device", "cpu"])
    assert capsys.readouterr().err.strip().splitlines()[-1:] == [
        f"deepcl: error: --out {tmp_path / 'newmodels'} is not a model file name; give one ending in .pt, such as "
        f"{tmp_path / 'newmodels.pt'}, or {tmp_path / 'newmodels' / 'model.pt'} to write into the folder "
        f"{tmp_path / 'newmodels'}"] and code == 2
    assert list(tmp_path.iterdir()) == []
    small_options(tmp_path / "M.PT").check_model_file_name()


@pytest.mark.parametrize("option, name", [("lr", "learning rate"), ("hscl_weight", "HSCL weight"),
                                          ("gamma", "gamma"), ("weight_decay", "weight decay")])
def test_numbers_that_are_not_finite_are_refused(tmp_path, option, name):
    """inf passed the range checks: every loss became NaN and a NaN model was written, exit 0."""
    for value in (math.inf, math.nan):
        with pytest.raises(InputError) as caught:
            small_options(tmp_path / "m.pt", **{option: value}).validate()
        assert str(caught.value) == f"{name} must be a finite number; got {value}"


def test_a_small_validation_tile_validates_with_a_smaller_overlap(tmp_path):
    """TrainOptions.val_tile of 64 (a Python caller's): validation and calibration tile as evaluate
    does, the overlap a quarter of the tile. With detection's overlap of 64 the tiles did not advance
    (a crash) or gave NaN scores."""
    result = train(small_options(tmp_path / "m.pt", epochs=1, iterations_per_epoch=2, val_tile=64))
    pooled = load_model(result.out).provenance["validation_metrics"]["pooled"]
    assert 0.0 <= pooled["f1"] <= 1.0 and pooled["tp"] + pooled["fn"] > 0
    assert math.isfinite(load_model(result.out).threshold)


@pytest.mark.parametrize("python", ["this", "3.9 or 3.10"])
def test_a_copy_of_a_training_pair_given_for_validation_is_left_out_of_training(tmp_path, caplog, monkeypatch,
                                                                                python):
    """A training pair's folder copied (not linked) into the validation folder: left out of training,
    with a warning, as the same folder given twice is. It was trained on and validated on, and its
    F1 chose the model. On Python 3.9 and 3.10 (QGIS 3.28 on Windows, Ubuntu 22.04), whose hashlib
    has no file_digest, any validation folder ended training in an AttributeError."""
    import hashlib
    import logging
    import shutil

    from deepcl_core.training.trainer import _split

    if python != "this":
        monkeypatch.delattr(hashlib, "file_digest", raising=False)
    copy = tmp_path / "val" / "copied"
    shutil.copytree(TRAIN_DIRS[0], copy)
    with caplog.at_level(logging.WARNING, logger="deepcl_core.training.trainer"):
        train_pairs, val_pairs = _split(small_options(tmp_path / "m.pt", val_dirs=[tmp_path / "val"]))
    assert [p.name for p in val_pairs] == ["copied"]
    assert TRAIN_DIRS[0].name not in [p.name for p in train_pairs] and len(train_pairs) == len(TRAIN_DIRS) - 1
    assert f"training pair {TRAIN_DIRS[0].name} left out: its before image is validation pair copied's" in caplog.text
    # The folder itself given for validation too: left out as silently as a copy was not
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="deepcl_core.training.trainer"):
        train_pairs, _ = _split(small_options(tmp_path / "m.pt", val_dirs=[TRAIN_DIRS[1]]))
    assert TRAIN_DIRS[1].name not in [p.name for p in train_pairs] and len(train_pairs) == len(TRAIN_DIRS) - 1
    assert f"training pair {TRAIN_DIRS[1].name} left out: it is validation pair {TRAIN_DIRS[1].name}" in caplog.text


BUNDLED = Path(__file__).resolve().parents[1] / "resources" / "models" / "deepcl_default.pt"
SETTINGS = ("threshold", "thresholds_by_pixel_size", "input_scales_by_pixel_size", "platt_scaling",
            "platt_scalings_by_pixel_size")


def bundled_fine_tune(out: Path, **changes) -> TrainOptions:
    """One barely moving step on a LEVIR pair from the bundled model (MobileNetV2, RGB)."""
    values = dict(data_dirs=[TRAIN_DIRS[0]], val_dirs=(), val_fraction=0.0, out=out, init=BUNDLED, encoder=None,
                  epochs=1, iterations_per_epoch=1, batch_size=2, crop=64, lr=1e-6, device="cpu", seed=3)
    values.update(changes)
    return TrainOptions(**values)


def test_fine_tuning_without_validation_keeps_the_initial_models_settings_and_says_so(tmp_path, caplog):
    """The bundled model's thresholds (0.284; 0.074 for 5 m or coarser), 2x enlargement of 10 m
    images and confidence scalings: fine-tuning wrote threshold 0.5 on the network's score and no
    class for coarse pixels (nantes F1 0.518 -> 0.038), without a word."""
    result = train(bundled_fine_tune(tmp_path / "tuned.pt"))
    initial, tuned = load_model(BUNDLED), load_model(result.out)
    assert initial.thresholds_by_pixel_size and initial.input_scales_by_pixel_size == ((5.0, 2),)
    for name in SETTINGS:
        assert getattr(tuned, name) == getattr(initial, name), name
    assert result.threshold == initial.threshold and result.input_scales_by_pixel_size == ((5.0, 2),)
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(m.startswith("no validation pairs: the fine-tuned model keeps the initial model's decision "
                            "thresholds") for m in said), said
    assert tuned.provenance["initial_model_settings"]["threshold"] == initial.threshold
    assert result.settings_against_initial_model == tuned.provenance["settings_against_initial_model"]
    assert tuned.provenance["selection"] == "the last epoch (no validation pairs)"  # not "best validation F1 …"
    assert all(": kept (" in line for line in result.settings_against_initial_model)


@pytest.mark.skipif(not (DATA / "oscd" / "nantes").is_dir(), reason="real data not found")
def test_the_validation_reported_is_that_of_the_model_as_written(tmp_path):
    """Validated on a 10 m pair (nantes) only: calibration gives the coarse class its threshold and
    enlargement and keeps the initial model's own threshold (no finer pair measures it); the F1
    training reports is what detection and evaluation get with the model written (it reported the
    F1 at 1x and the network's score)."""
    from core_test_helpers import crop
    from deepcl_core.evaluation import EvaluateOptions, evaluate

    nantes = tmp_path / "val" / "nantes"  # the 256x256 window of most change (1,616 changed pixels)
    nantes.mkdir(parents=True)
    for name in ("before", "after", "label"):
        crop(DATA / "oscd" / "nantes" / f"{name}.tif", nantes / f"{name}.tif", 64, 192, 256, 256)
    result = train(bundled_fine_tune(tmp_path / "tuned.pt", val_dirs=[nantes]))
    initial, tuned = load_model(BUNDLED), load_model(result.out)
    calibration = tuned.provenance["threshold_calibration"]
    assert calibration["every_pair_coarse"] and calibration["previous_threshold"] == initial.threshold
    assert (tuned.threshold, tuned.platt_scaling) == (initial.threshold, initial.platt_scaling)
    [coarse] = calibration["by_pixel_size"]
    assert tuned.input_scales_by_pixel_size == ((5.0, coarse["input_scale"]),) and coarse["input_scale"] > 1
    evaluated = evaluate(EvaluateOptions(model=result.out, data_dirs=[nantes], device="cpu"))
    assert evaluated["per_pair"]["nantes"]["input_scale"] == coarse["input_scale"]
    for name in ("f1", "iou", "precision", "recall"):
        assert result.best_metrics[name] == pytest.approx(evaluated["pooled"][name], abs=2e-3), name
    assert tuned.provenance["validation_metrics"]["pooled"] == result.best_metrics
    per_pair = tuned.provenance["validation_metrics"]["per_pair"]["nantes"]
    assert (per_pair["threshold"], per_pair["input_scale"]) == (tuned.threshold_for(10.0), coarse["input_scale"])
    # The epoch was chosen at 1x, on the network's score: figures of another model, kept apart
    selection = tuned.provenance["selection_metrics"]
    assert set(selection) == {"pooled", "per_pair"} and "input_scale" not in selection["per_pair"]["nantes"]
    assert any(line.startswith("pixels of 5 m or coarser: threshold ")
               for line in result.settings_against_initial_model)


def test_two_trainings_at_once_each_start_from_their_seeds_weights(tmp_path, monkeypatch):
    """Two trainings in one process (two QGIS tasks) seed torch's one random stream: one drawing its
    initial weights while the other had just seeded got weights its seed does not reproduce."""
    import threading
    import time

    from deepcl_core.training import trainer

    build, first_seeded, initial = trainer.build_network, threading.Event(), {}

    def built_while_the_other_seeds(config):
        name = threading.current_thread().name
        if name == "seed 1":  # seeded: it waits while the other run may seed and build
            first_seeded.set()
            time.sleep(0.5)
        network = build(config)
        initial[name] = (config, {k: v.clone() for k, v in network.state_dict().items()})
        return network

    monkeypatch.setattr(trainer, "build_network", built_while_the_other_seeds)
    host_state = torch.get_rng_state()
    runs = [threading.Thread(target=train, name=f"seed {seed}", args=(
        small_options(tmp_path / f"{seed}.pt", seed=seed, epochs=1, iterations_per_epoch=1),)) for seed in (1, 2)]
    runs[0].start()
    assert first_seeded.wait(60)  # the second starts once the first has seeded
    runs[1].start()
    for run in runs:
        run.join(300)
    assert torch.equal(torch.get_rng_state(), host_state)  # the host's random state, left as it was
    for seed in (1, 2):
        config, weights = initial[f"seed {seed}"]
        torch.manual_seed(seed)  # the run alone
        alone = build(config).state_dict()
        assert all(torch.equal(weights[k], alone[k]) for k in alone), seed


def test_fine_tuning_twice_keeps_the_whole_chain_of_parents(tmp_path, monkeypatch, capsys):
    """Fine-tuned, recalibrated, fine-tuned again: the record of the parent kept its training's
    command, date and metrics only, so the grandparent (the bundled model), the recalibration and its
    pairs were lost, and the parent was known by its path only (a plugin update puts another model at
    the bundled model's path)."""
    import hashlib
    import sys

    first = train(bundled_fine_tune(tmp_path / "first.pt")).out
    arguments = ["calibrate", "--model", str(first), "--out", str(tmp_path / "recalibrated.pt"), "--device", "cpu",
                 str(VAL_DIRS[0])]
    monkeypatch.setattr(sys, "argv", ["deepcl", *arguments])
    assert main(arguments) == 0
    capsys.readouterr()
    second = load_model(train(bundled_fine_tune(tmp_path / "second.pt", init=tmp_path / "recalibrated.pt")).out)

    def sha256(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    provenance, bundled = second.provenance, load_model(BUNDLED).provenance
    assert provenance["init_model"] == str((tmp_path / "recalibrated.pt").resolve())
    assert provenance["init_model_sha256"] == sha256(tmp_path / "recalibrated.pt")
    parent = provenance["parent_provenance"]
    [recalibration] = parent["recalibrations"]
    assert recalibration["command_line"] == f"deepcl {' '.join(arguments)}"
    assert [pair["name"] for pair in recalibration["pairs"]] == [VAL_DIRS[0].name]
    assert parent["init_model"] == str(BUNDLED.resolve()) and parent["init_model_sha256"] == sha256(BUNDLED)
    assert "validation_metrics_before_recalibration" in parent  # the first fine-tuning's, of thresholds it lost
    grandparent = parent["parent_provenance"]
    assert grandparent["command_line"] == bundled["command_line"] and grandparent["epochs"] == bundled["epochs"]
    assert grandparent["recalibrations"] == bundled["recalibrations"]
    assert grandparent["validation_metrics_before_recalibration"] == bundled["validation_metrics_before_recalibration"]
    assert grandparent["init_model"] is None and grandparent["parent_provenance"] is None  # trained anew


def test_resume_with_more_epochs_records_that_the_schedule_was_stretched(tmp_path):
    """More --epochs on --resume recompute the cosine schedule over the new total from the step reached:
    the rate rises from the floor the finished run had reached. The provenance says when and to what."""
    out = tmp_path / "m.pt"
    recipe = dict(iterations_per_epoch=2, calibrate=False, weight_average=0.0)
    train(small_options(out, epochs=2, **recipe))
    assert "schedule_extended" not in load_model(out).provenance
    checkpoint = load_checkpoint(tmp_path / "m.pt.ckpt")
    floor = checkpoint["optimizer"]["param_groups"][0]["lr"]
    said: list = []
    train(small_options(out, epochs=3, resume=True, **recipe), progress=lambda fraction, message: said.append(message))
    assert load_model(out).provenance["schedule_extended"] == [{"at_epoch": 2, "from_epochs": 2, "epochs": 3}]
    assert any("schedule" in message and "stretched" in message for message in said)
    train(small_options(out, epochs=4, resume=True, **recipe))
    assert load_model(out).provenance["schedule_extended"] == [{"at_epoch": 2, "from_epochs": 2, "epochs": 3},
                                                               {"at_epoch": 3, "from_epochs": 3, "epochs": 4}]
    assert floor == pytest.approx(small_options(out).lr * 0.01)  # where the 2-epoch run ended


def test_hscl_margins_are_options_checked_recorded_and_kept_on_resume(tmp_path, capsys):
    """m_u and m_c are METHOD's starting values, to be measured by ablation: settable, refused in words
    outside 0 ≤ m_u < m_c ≤ 2 (the distance of unit feature vectors), in the provenance's loss, and part of
    the recipe --resume keeps."""
    command = ["train", *map(str, TRAIN_DIRS), "--val", *map(str, VAL_DIRS), "--out", str(tmp_path / "m.pt"),
               "--epochs", "1", "--iterations-per-epoch", "2", "--batch", "4", "--crop", "64", "--encoder",
               "simple_cnn", "--device", "cpu", "--seed", "3", "--no-calibrate", "--weight-average", "0"]
    for unchanged, changed in (("1.3", "1.2"), ("0.3", "2.5"), ("-0.1", "1.2"), ("0.5", "0.5")):
        code = main([*command, "--margin-unchanged", unchanged, "--margin-changed", changed])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert "0 ≤ unchanged margin < changed margin ≤ 2" in err[0] and f"unchanged {float(unchanged):g}" in err[0]
    assert list(tmp_path.iterdir()) == []
    assert main([*command, "--margin-unchanged", "0.2", "--margin-changed", "1.0"]) == 0
    loss = load_model(tmp_path / "m.pt").provenance["loss"]
    assert (loss["margin_unchanged"], loss["margin_changed"]) == (0.2, 1.0)
    with pytest.raises(InputError, match=r"margin_changed 1\.0 \(now 1\.2\)"):
        train(small_options(tmp_path / "m.pt", epochs=2, iterations_per_epoch=2, calibrate=False, weight_average=0.0,
                            margin_unchanged=0.2, resume=True))


def test_a_resumed_fine_tune_needs_the_model_it_began_from_and_records_each_command(tmp_path):
    """A fine-tune interrupted, its --init file replaced (recalibrated in place, or by an update of
    the plugin), then resumed: the provenance named the new file as its parent, whose weights it never
    started from. Each command's batch, crop and device are recorded (the last's stood for all)."""
    import shutil

    parent = tmp_path / "parent.pt"
    shutil.copyfile(BUNDLED, parent)
    out = tmp_path / "tuned.pt"
    options = dict(init=parent, encoder=None, epochs=2, iterations_per_epoch=2, batch_size=2,
                   command_line="deepcl train (first)")
    with pytest.raises(Cancelled):
        train(small_options(out, **options), cancel=CancelAfter(3))
    resumed = dict(options, resume=True, batch_size=3, command_line="deepcl train --resume (second)")
    parent.write_bytes(parent.read_bytes() + b"\0")  # another file now (a zip reads past trailing bytes)
    with pytest.raises(InputError, match=r"fine-tunes the model that was at .*parent\.pt when it began, and that "
                                         r"file has changed since .*; start anew with --overwrite, or put that "
                                         r"model back$"):
        train(small_options(out, **resumed))
    shutil.copyfile(BUNDLED, parent)  # put back
    result = train(small_options(out, **resumed))
    runs = load_model(result.out).provenance["runs"]
    assert [(run["from_epoch"], run["batch_size"], run["command_line"]) for run in runs] == [
        (1, 2, "deepcl train (first)"), (2, 3, "deepcl train --resume (second)")]


@pytest.mark.parametrize("seed", [-1, 2 ** 63])
def test_a_seed_the_generators_cannot_take_is_refused_before_any_work(tmp_path, seed):
    """-1 ended as an internal error after the pairs were read."""
    with pytest.raises(InputError, match=rf"^seed must be a whole number from 0 to {2 ** 63 - 1}; got {seed}$"):
        train(small_options(tmp_path / "m.pt", seed=seed))
    assert list(tmp_path.iterdir()) == []


def test_band_names_given_twice_are_refused_before_any_pair_is_read(tmp_path):
    """--bands red red blue was refused as a fault of the first pair read ("pair test_55_0256_0000: the
    band names …"), after the pairs were being loaded."""
    with pytest.raises(InputError, match=r"^the band names red, red, blue name red more than once; give each band "
                                         r"once$"):
        train(small_options(tmp_path / "m.pt", bands=("red", "red", "blue")))
    assert list(tmp_path.iterdir()) == []


def test_a_fine_tune_may_not_replace_its_initial_model(trained, tmp_path):
    """--out the --init file, with --overwrite, replaced the parent the fine-tune's record names."""
    init = tmp_path / "parent.pt"
    shutil.copy(trained.out, init)
    before = init.read_bytes()
    with pytest.raises(InputError, match=r"^the trained model would replace the initial model .*parent\.pt \(--init\), "
                                         r"which its record names as its parent; choose another --out$"):
        train(small_options(init, init=init, encoder=None, overwrite=True))
    assert init.read_bytes() == before


def test_fine_tuning_with_other_loss_settings_than_the_models_is_said(tmp_path, caplog):
    """The margins and gamma default to METHOD's: a model trained with others was tuned back to them
    unsaid, and its record lost them."""
    first = train(small_options(tmp_path / "m.pt", epochs=1, iterations_per_epoch=1, margin_unchanged=0.2,
                                margin_changed=1.0))
    tuned = train(small_options(tmp_path / "tuned.pt", init=first.out, encoder=None, epochs=1, iterations_per_epoch=1))
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "(--init)" in r.getMessage()]
    assert said == [f"the initial model {first.out} (--init) was trained with --margin-unchanged 0.2 (now 0.3), "
                    "--margin-changed 1 (now 1.2): give those options to fine-tune it with its own loss"]
    assert load_model(tuned.out).provenance["parent_provenance"]["loss"]["margin_changed"] == 1.0


def test_a_model_blind_to_change_is_warned_of_and_its_undefined_figures_are_null(tmp_path, caplog):
    """--lr 1e3 blows the training up without leaving the numbers: the model written marked no
    validation pixel changed (or every one), exit 0, unsaid. Its precision, of no pixel marked, is
    null as `evaluate` reports it (it was 0.0)."""
    result = train(small_options(tmp_path / "m.pt", lr=1e3, epochs=2, iterations_per_epoch=4, batch_size=2,
                                 weight_average=0))
    pooled = load_model(result.out).provenance["validation_metrics"]["pooled"]
    blind = "no" if pooled["tp"] + pooled["fp"] == 0 else "every" if pooled["tn"] + pooled["fn"] == 0 else None
    assert blind, pooled
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"the model as written marks {blind} validation pixel changed: it does not tell change apart; train " \
           "longer, or with a lower learning rate (--lr, now 1000)" in said
    assert blind != "no" or pooled["precision"] is None
