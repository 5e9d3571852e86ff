"""What load_model checks beyond the file's format (DESIGN.md: "a missing key, a wrong version or a
corrupt file is a clear error, not a crash"): weights that are no numbers, a normalisation or band
names that cannot work, bytes damaged inside the archive, weights of another network; and what
`deepcl info` and the Python API say. The files are the bundled model altered as a damaged or
wrong file would be."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Dict

import pytest
import torch

from deepcl_core.cli import main
from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes
from deepcl_core.errors import InputError, ModelFileError
from deepcl_core.model_file import load_model, save_model
from deepcl_core.training.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "resources" / "models" / "deepcl_default.pt"


@pytest.fixture(scope="module")
def bundled_dict() -> Dict[str, Any]:
    return torch.load(BUNDLED, map_location="cpu", weights_only=True)


def altered(bundled: Dict[str, Any], path: Path, change: Callable[[Dict[str, Any]], Any]) -> Path:
    """The bundled model's dict, with copies of what ``change`` may alter, changed and saved."""
    data = {**bundled, "state_dict": dict(bundled["state_dict"]), "normalization": dict(bundled["normalization"])}
    change(data)
    torch.save(data, path)
    return path


def inverted_middle(path: Path, target: Path) -> Path:
    """``path`` with 64 bytes in its middle inverted: a bad disk, a broken copy or download."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    target.write_bytes(bytes(data))
    return target


def test_weights_that_are_no_numbers_are_refused_naming_a_tensor(bundled_dict, levir_pair, tmp_path):
    """They loaded, and detection wrote an all "no change" map with exit 0."""
    def poison(data: Dict[str, Any]) -> None:
        weights = data["state_dict"]
        weights["encoder.features.0.0.weight"] = torch.full_like(weights["encoder.features.0.0.weight"], float("nan"))
        key = next(key for key, tensor in weights.items() if tensor.is_floating_point() and tensor.dim() == 4
                   and key.startswith("decoder"))
        weights[key] = weights[key].clone()
        weights[key].view(-1)[0] = float("inf")

    path = altered(bundled_dict, tmp_path / "diverged.pt", poison)
    floating = sum(tensor.is_floating_point() for tensor in bundled_dict["state_dict"].values())
    with pytest.raises(ModelFileError) as caught:
        load_model(path)
    assert str(caught.value) == (
        f"{path} holds non-finite weights (NaN or infinite) in 2 of {floating} tensors, e.g. "
        "encoder.features.0.0.weight (864 of its 864 values): it cannot detect; a training that diverged writes "
        "such weights")
    outputs = DetectOutputs(tmp_path / "out" / "change.tif", tmp_path / "out" / "confidence.tif")
    with pytest.raises(ModelFileError, match="holds non-finite weights"):
        detect_changes(*levir_pair, outputs, DetectOptions(model=path, device="cpu"))
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("values, words", [
    ({"std": [0.0, 0.0, 0.0]}, "a standard deviation of [0.0, 0.0, 0.0]"),
    ({"std": [0.229, -0.224, 0.225]}, "a standard deviation of"),
    ({"std": [float("inf")]}, "a standard deviation of [inf]"),
    ({"std": []}, "a standard deviation of []"),
    ({"mean": [float("nan")] * 3}, "a mean of [nan, nan, nan]"),
    ({"mean": []}, "a mean of []"),
    ({"high_percentile": 150.0}, "percentiles 2 and 150"),
    ({"low_percentile": 98.0, "high_percentile": 2.0}, "percentiles 98 and 2"),
    ({"low_percentile": float("nan")}, "percentiles nan and 98"),
], ids=["std_0", "std_negative", "std_infinite", "std_empty", "mean_nan", "mean_empty", "percentile_150",
        "percentiles_reversed", "percentile_nan"])
def test_a_normalisation_that_cannot_work_is_refused(bundled_dict, tmp_path, values, words):
    """They loaded, and detection divided by 0 (RuntimeWarnings) and marked nothing, or stretched
    nothing and marked everything."""
    path = altered(bundled_dict, tmp_path / "model.pt", lambda data: data["normalization"].update(values))
    with pytest.raises(ModelFileError) as caught:
        load_model(path)
    assert f"{path} has a normalisation that cannot work: {words}" in str(caught.value)


def test_fewer_normalisation_values_than_bands_are_still_taken(bundled_dict, tmp_path):
    """Training writes ImageNet's 3 for any band count; extra bands reuse their mean."""
    path = altered(bundled_dict, tmp_path / "model.pt",
                   lambda data: data["normalization"].update(mean=[0.5], std=[0.2]))
    assert load_model(path).normalization.per_band(3)[1].reshape(-1).tolist() == pytest.approx([0.2] * 3)


@pytest.mark.parametrize("bands", [[1, 2, 3], "rgb", ["", "", ""], None], ids=["numbers", "text", "empty", "none"])
def test_band_names_that_are_not_a_list_of_names_are_refused(bundled_dict, tmp_path, bands):
    """Numbers gave detection an internal AttributeError ('int' object has no attribute 'lower'),
    "rgb" read as the bands r, g, b."""
    path = altered(bundled_dict, tmp_path / "model.pt", lambda data: data.update(bands=bands))
    with pytest.raises(ModelFileError) as caught:
        load_model(path)
    assert str(caught.value) == (f"{path} has a damaged network configuration or input contract (bands, "
                                 "normalisation, thresholds, scalings): the input bands must be a list of band "
                                 f"names, like ['red', 'green', 'blue'], not {bands!r}")


def test_bytes_damaged_inside_are_refused_by_their_checksum(tmp_path):
    """Torch's reader checks no checksum: the bundled model with 64 bytes inverted loaded, and
    detected other changes without a word. A checkpoint likewise resumed on damaged weights."""
    damaged = inverted_middle(BUNDLED, tmp_path / "copy.pt")
    with pytest.raises(ModelFileError, match=f"^{re.escape(str(damaged))} is damaged: its part archive/data/[0-9]+ "
                                             "does not match its checksum; copy or download it again$"):
        load_model(damaged)
    checkpoint = tmp_path / "model.pt.ckpt"
    save_checkpoint({"epoch": 2, "model": load_model(BUNDLED).state_dict}, checkpoint)
    inverted_middle(checkpoint, checkpoint)
    with pytest.raises(InputError, match=f"checkpoint {checkpoint} is damaged: its part archive/data/[0-9]+ does "
                                         "not match its checksum; delete it and train without --resume"):
        load_checkpoint(checkpoint)


def test_weights_that_do_not_fit_are_summed_up_in_one_line(bundled_dict, tmp_path):
    """Torch's error was cut at 200 characters: two lines, ending mid-word."""
    def misfit(data: Dict[str, Any]) -> None:
        weights = data["state_dict"]
        del weights["encoder.features.0.0.weight"]
        weights["extra.weight"] = torch.zeros(3)
        key = next(key for key, tensor in weights.items() if key.startswith("decoder") and tensor.dim() == 4)
        weights[key] = torch.zeros(1, *weights[key].shape)

    path = altered(bundled_dict, tmp_path / "model.pt", misfit)
    with pytest.raises(ModelFileError) as caught:
        load_model(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(
        f"{path} has weights that do not fit its configuration: of the network's {len(bundled_dict['state_dict'])} "
        "tensors, 1 missing (e.g. encoder.features.0.0.weight), 1 unexpected (e.g. extra.weight), 1 of another "
        "shape (e.g. decoder.")
    assert message.endswith("; it is damaged or was not written by DeepCL")


def test_info_reports_the_files_own_format_version(bundled_dict, tmp_path):
    """It reported the version this DeepCL writes, 2, for a format 1 file."""
    def format_1(data: Dict[str, Any]) -> None:
        data.update(format_version=1)
        del data["platt_scaling"], data["platt_scalings_by_pixel_size"]

    path = altered(bundled_dict, tmp_path / "model.pt", format_1)
    for model, version in ((path, 1), (BUNDLED, 2)):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(["info", str(model)]) == 0
        assert json.loads(printed.getvalue())["format_version"] == version
    save_model(load_model(path), tmp_path / "again.pt")  # written anew, it is of the version this DeepCL writes
    assert load_model(tmp_path / "again.pt").describe()["format_version"] == 2


def test_a_version_that_is_a_truth_value_is_refused(bundled_dict, tmp_path):
    path = altered(bundled_dict, tmp_path / "model.pt", lambda data: data.update(format_version=True))
    with pytest.raises(ModelFileError, match="has model format version True, which no DeepCL writes"):
        load_model(path)


def test_a_model_of_the_wrong_kind_is_refused_in_words_and_a_bytes_path_taken(levir_pair, tiny_model_path,
                                                                            tiny_model, tmp_path):
    """A path as detect_changes's model gave AttributeError ('str' object has no attribute
    'trained'), a loaded model as DetectOptions's a TypeError, and a bytes path there a TypeError,
    though the images' are taken."""
    outputs = DetectOutputs(tmp_path / "change.tif", tmp_path / "confidence.tif")
    for call, words in (
            (lambda: detect_changes(*levir_pair, outputs, model=str(tiny_model_path)),
             r"model is a loaded model, load_model\(path\); give a model file's path as DetectOptions\(model=path\); "
             "got a str"),
            (lambda: detect_changes(*levir_pair, outputs, DetectOptions(model=tiny_model)),
             r"DetectOptions\(model=…\) takes a model file's path; give a loaded model as detect_changes\(…, "
             r"model=bundle\)"),
            (lambda: detect_changes(*levir_pair, outputs, DetectOptions(model=3)),
             r"DetectOptions\(model=…\) takes a model file's path, or None for the bundled model; got 3")):
        with pytest.raises(InputError, match=words):
            call()
    assert not list(tmp_path.iterdir())
    result = detect_changes(*(os.fsencode(path) for path in levir_pair), outputs,
                            DetectOptions(model=os.fsencode(tiny_model_path), device="cpu"))
    assert result.valid_pixels == 256 * 256 and outputs.change.is_file()


def test_a_checkpoint_beside_its_model_names_the_model(tmp_path):
    """After a finished run it said training writes the model when its last epoch ends, though
    the model was there."""
    checkpoint = tmp_path / "simple.pt.ckpt"
    save_checkpoint({"epoch": 3}, checkpoint)
    shutil.copy(BUNDLED, tmp_path / "simple.pt")
    with pytest.raises(ModelFileError) as caught:
        load_model(checkpoint)
    assert str(caught.value) == (f"{checkpoint} is a training checkpoint, not a model file: give the model file its "
                                 f"training wrote beside it, {tmp_path / 'simple.pt'}")
    save_checkpoint({"epoch": 4}, checkpoint)  # a later run continued it, and was interrupted
    os.utime(checkpoint, ns=(checkpoint.stat().st_atime_ns, (tmp_path / "simple.pt").stat().st_mtime_ns + 10**9))
    with pytest.raises(ModelFileError, match=r"beside it, .*simple\.pt \(written before the checkpoint's last "
                                             r"epoch: a later run continued it; finish that run with --resume"):
        load_model(checkpoint)
