"""Training pairs that cannot teach change end ``deepcl train`` with exit status 2, one stderr line
naming the pair's problem, and neither a model file nor a checkpoint: a label that is not binary,
a label whose size cannot be aligned, labels without a pixel of one class. A model file that
cannot be written ends it the same way, before any training."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
import pytest

from deepcl_core.cli import main
from reliability.rasters import files_in, noise, write

SIZE = 64


def make_pair(folder: Path, label: np.ndarray, georeferenced: bool = False) -> Path:
    folder.mkdir(parents=True)
    transform = (500000.0, 10.0, 0.0, 4000000.0, 0.0, -10.0) if georeferenced else None
    epsg = 32633 if georeferenced else None
    write(folder / "before.tif", noise((3, SIZE, SIZE), 0), transform, epsg)
    write(folder / "after.tif", noise((3, SIZE, SIZE), 1), transform, epsg)
    same_grid = label.shape[-1] == SIZE  # a label of another size gets no georeference: it cannot be aligned
    write(folder / "label.tif", label, transform if same_grid else None, epsg if same_grid else None)
    return folder


def train_cli(capsys, data: Path, out: Path) -> List[str]:
    code = main(["train", str(data), "--out", str(out), "--encoder", "simple_cnn", "--epochs", "1",
                 "--iterations-per-epoch", "1", "--batch", "2", "--crop", "32", "--val-fraction", "0",
                 "--device", "cpu"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("train:")]
    assert code == 2, lines
    return lines


def label_with(values: Optional[np.ndarray] = None, size: int = SIZE) -> np.ndarray:
    label = np.zeros((size, size), np.uint8)
    if values is not None:
        label[: values.shape[0], : values.shape[1]] = values
    return label


@pytest.mark.parametrize("case, label, words", [
    ("not_binary", label_with(np.array([[1, 2, 3]], np.uint8)), ["not binary"]),
    ("cannot_be_aligned", label_with(size=40), ["cannot be aligned"]),
    ("no_changed_pixel", label_with(), ["no changed pixel"]),
    ("no_unchanged_pixel", np.ones((SIZE, SIZE), np.uint8), ["no unchanged pixel"]),
])
def test_unusable_training_pairs(capsys, tmp_path, case, label, words):
    data = tmp_path / "data"
    make_pair(data / "pair_a", label)
    make_pair(data / "pair_b", label)
    lines = train_cli(capsys, data, tmp_path / "model.pt")
    assert len(lines) == 1 and lines[0].startswith("deepcl: error: ") and "Traceback" not in lines[0], lines
    for word in words:
        assert word in lines[0], lines[0]
    assert files_in(tmp_path) == ["data"]  # no model file, no checkpoint, no partial file


def test_one_pair_without_change_among_others_is_fine(tmp_path):
    """Real data sets hold tiles without change: only labels that never mark change are refused."""
    from deepcl_core.training import TrainOptions, train

    data = tmp_path / "data"
    make_pair(data / "pair_a", label_with())
    make_pair(data / "pair_b", label_with(np.ones((8, 8), np.uint8)))
    result = train(TrainOptions(data_dirs=[data], out=tmp_path / "m.pt", encoder="simple_cnn", epochs=1,
                                iterations_per_epoch=1, batch_size=2, crop=32, val_fraction=0, device="cpu",
                                pretrained=False))
    assert result.epochs_completed == 1 and result.out.is_file()


def test_model_file_in_a_read_only_folder_is_refused_before_training(capsys, tmp_path, read_only_folder):
    """Said before any pair is read, not at the first checkpoint's write an epoch later."""
    data = tmp_path / "data"
    make_pair(data / "pair_a", label_with(np.ones((8, 8), np.uint8)))
    listing = files_in(read_only_folder)
    lines = train_cli(capsys, data, read_only_folder / "model.pt")
    assert lines == [f"deepcl: error: output folder {read_only_folder} is not writable; choose another"]
    assert files_in(read_only_folder) == listing
