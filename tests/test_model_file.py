"""The model file (DESIGN.md): one torch.save dict readable with weights_only=True, round-tripping
the network and its input contract; anything else is a clear ModelFileError, and code hidden in a
pickle never runs."""
from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from deepcl_core.errors import ModelFileError
from deepcl_core.model import NetworkConfig, build_network
from deepcl_core.model.encoders import ENCODERS
from deepcl_core.model_file import FORMAT_VERSION, ModelBundle, all_finite, load_model, \
    load_model_and_sha256, save_model, shared_model
from deepcl_core.normalization import NormalizationSpec

CONFIG = NetworkConfig(encoder="simple_cnn", decoder_channels=(32, 32, 16, 16, 8))


def bundle(**changes) -> ModelBundle:
    torch.manual_seed(0)
    values = dict(config=CONFIG, state_dict=build_network(CONFIG).state_dict(), bands=("red", "green", "blue"),
                  normalization=NormalizationSpec(low_percentile=1.0, high_percentile=99.0),
                  threshold=0.4, provenance={"data": ["oscd/abudhabi"], "metrics": {"f1": 0.5}}, trained=False)
    values.update(changes)
    return ModelBundle(**values)


def raw_dict(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_round_trip_keeps_weights_and_contract(tmp_path):
    original = bundle()
    path = tmp_path / "sub" / "model.pt"  # the folder is created
    save_model(original, path)
    loaded = load_model(path)
    assert loaded.config == original.config
    assert loaded.bands == original.bands
    assert loaded.normalization == original.normalization
    assert loaded.threshold == pytest.approx(0.4)
    assert loaded.provenance == original.provenance
    assert loaded.trained is False
    assert loaded.state_dict.keys() == original.state_dict.keys()
    for key, tensor in original.state_dict.items():
        torch.testing.assert_close(loaded.state_dict[key], tensor)
    x1, x2 = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.build()(x1, x2).logit, original.build()(x1, x2).logit)
    assert not [p for p in path.parent.iterdir() if p.name != "model.pt"]  # no temporary left


def test_a_shared_model_is_read_once_per_version_of_its_file(tmp_path):
    """Repeated runs share one bundle; a file written anew (a calibration in place, another model
    saved under the name) is read again, and a file that went missing is reported as missing."""
    path = tmp_path / "model.pt"
    save_model(bundle(), path)
    first = shared_model(path)
    assert shared_model(path) is first and shared_model(tmp_path / "." / "model.pt") is first
    save_model(replace(first, threshold=0.3), path)
    again = shared_model(path)
    assert again is not first and again.threshold == pytest.approx(0.3) and first.threshold == pytest.approx(0.4)
    save_model(replace(first, threshold=0.2, provenance={"note": "copied onto the model"}), tmp_path / "other.pt")
    inode = path.stat().st_ino
    path.write_bytes((tmp_path / "other.pt").read_bytes())  # the same file, new contents (cp onto it)
    assert path.stat().st_ino == inode and shared_model(path).threshold == pytest.approx(0.2)
    path.unlink()
    with pytest.raises(ModelFileError, match="not found"):
        shared_model(path)


def test_thresholds_by_pixel_size_round_trip_and_choose_by_pixel_size(tmp_path):
    save_model(bundle(thresholds_by_pixel_size=((20.0, 0.02), (5.0, 0.05))), tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.thresholds_by_pixel_size == ((5.0, 0.05), (20.0, 0.02))  # kept ascending
    assert [loaded.threshold_for(size) for size in (None, 0.5, 4.99, 5.0, 10.0, 20.0, 30.0)] == \
        [0.4, 0.4, 0.4, 0.05, 0.05, 0.02, 0.02]


def test_a_file_without_thresholds_by_pixel_size_has_one_threshold(tmp_path):
    save_model(bundle(thresholds_by_pixel_size=((5.0, 0.05),)), tmp_path / "model.pt")
    data = raw_dict(tmp_path / "model.pt")
    del data["thresholds_by_pixel_size"]  # as written before the key existed
    torch.save(data, tmp_path / "older.pt")
    older = load_model(tmp_path / "older.pt")
    assert older.thresholds_by_pixel_size == () and older.threshold_for(10.0) == pytest.approx(0.4)


def test_input_scales_by_pixel_size_round_trip_and_older_files_enlarge_nothing(tmp_path):
    save_model(bundle(input_scales_by_pixel_size=((20.0, 3), (5.0, 2))), tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.input_scales_by_pixel_size == ((5.0, 2), (20.0, 3))
    assert [loaded.input_scale_for(size) for size in (None, 0.5, 5.0, 10.0, 30.0)] == [1, 1, 2, 2, 3]
    data = raw_dict(tmp_path / "model.pt")
    del data["input_scales_by_pixel_size"]  # as written before the key existed
    torch.save(data, tmp_path / "older.pt")
    assert load_model(tmp_path / "older.pt").input_scale_for(10.0) == 1
    # Under 1, or over detection's 4 (9 ran at 81 times the network's time; --input-scale 9 is refused)
    for scale in (0, 9):
        data["input_scales_by_pixel_size"] = [[5.0, scale]]
        torch.save(data, tmp_path / "scaled.pt")
        with pytest.raises(ModelFileError, match=r"has an input scale outside 1 to 4: \(\(5\.0, " + str(scale)):
            load_model(tmp_path / "scaled.pt")


@pytest.mark.parametrize("key, value", [("threshold", 1.5), ("threshold", 0.0), ("threshold", float("nan")),
                                        ("thresholds_by_pixel_size", [[5.0, -0.2]]), ("format_version", 0)])
def test_impossible_thresholds_or_versions_are_refused(tmp_path, key, value):
    """They loaded (`deepcl info` said nothing), and detection then marked nothing or everything."""
    save_model(bundle(), tmp_path / "model.pt")
    data = raw_dict(tmp_path / "model.pt")
    data[key] = value
    torch.save(data, tmp_path / "damaged.pt")
    with pytest.raises(ModelFileError, match="decision threshold outside|format version"):
        load_model(tmp_path / "damaged.pt")


def test_file_is_a_plain_dict_loadable_with_weights_only(tmp_path):
    path = tmp_path / "model.pt"
    save_model(bundle(), path)
    data = torch.load(path, map_location="cpu", weights_only=True)
    assert data["format"] == "deepcl-model" and data["format_version"] == FORMAT_VERSION
    assert data["architecture"] == "deepcl"
    assert data["config"]["encoder"] == "simple_cnn"
    assert data["bands"] == ["red", "green", "blue"]
    assert set(data["normalization"]) >= {"method", "low_percentile", "high_percentile", "mean", "std"}


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)], ids=["umask-022", "umask-077"])
def test_file_gets_the_permissions_of_any_new_file(tmp_path, umask, mode):
    """Written through a temporary file, yet readable as the umask allows (a team's server)."""
    previous = os.umask(umask)
    try:
        save_model(bundle(), tmp_path / "model.pt")
    finally:
        os.umask(previous)
    assert (tmp_path / "model.pt").stat().st_mode & 0o777 == mode
    assert os.listdir(tmp_path) == ["model.pt"]


def test_describe_lists_the_contract_without_weights(tmp_path):
    info = bundle().describe()
    assert "state_dict" not in info
    assert info["parameters"] == sum(p.numel() for p in build_network(CONFIG).parameters())
    assert info["bands"] == ["red", "green", "blue"] and info["threshold"] == pytest.approx(0.4)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "absent.pt")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.touch()
    with pytest.raises(ModelFileError, match="empty"):
        load_model(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "model.pt"
    save_model(bundle(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="not a readable DeepCL model file") as raised:
        load_model(path)
    # torch's own first sentence, whole; its advice after it was cut at 200 characters mid-sentence
    assert str(raised.value).endswith("failed finding central directory")


def test_a_raster_or_a_checkpoint_is_named_for_what_it_is(tmp_path):
    """The usual mix-ups: an image given as the model, and the training checkpoint beside a model."""
    from deepcl_core.training.checkpoint import save_checkpoint

    from test_training import VAL_DIRS

    with pytest.raises(ModelFileError) as caught:
        load_model(VAL_DIRS[0] / "before.png")
    assert "is of another format (a model file is a PyTorch archive, .pt)" in str(caught.value)
    assert "weights_only" not in str(caught.value)
    save_checkpoint({"epoch": 3}, tmp_path / "model.pt.ckpt")
    with pytest.raises(ModelFileError) as caught:  # no model beside it: the run was interrupted
        load_model(tmp_path / "model.pt.ckpt")
    assert str(caught.value) == (f"{tmp_path / 'model.pt.ckpt'} is a training checkpoint, not a model file: training "
                                 "writes the model (model.pt) when its last epoch ends; continue it with --resume, or "
                                 "write the model of the 3 epoch(s) it holds with the same train command and --resume "
                                 "--epochs 3")


def test_a_folder_is_named_as_one(tmp_path):
    with pytest.raises(ModelFileError, match="is a folder; give the .pt file inside it"):
        load_model(tmp_path)


def test_file_of_another_format(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n")
    with pytest.raises(ModelFileError, match="not a readable DeepCL model file"):
        load_model(text)
    plain_state_dict = tmp_path / "state_dict.pt"
    torch.save(build_network(CONFIG).state_dict(), plain_state_dict)
    with pytest.raises(ModelFileError, match="not a DeepCL model file"):
        load_model(plain_state_dict)
    # torch.save's format before 1.6 (the ImageNet encoder weights training starts from) was "of another format"
    old_format = tmp_path / "encoder.pt"
    torch.save(build_network(CONFIG).state_dict(), old_format, _use_new_zipfile_serialization=False)
    with pytest.raises(ModelFileError, match="is a PyTorch file of the old format, not a DeepCL model file"):
        load_model(old_format)


def test_newer_format_version(tmp_path):
    path = tmp_path / "model.pt"
    save_model(bundle(), path)
    data = raw_dict(path)
    data["format_version"] = FORMAT_VERSION + 1
    torch.save(data, path)
    with pytest.raises(ModelFileError, match="version .*update"):
        load_model(path)


@pytest.mark.parametrize("damage, message", [
    (lambda d: d.pop("state_dict"), "lacks state_dict"),
    (lambda d: d.update(architecture="unet"), "architecture"),
    (lambda d: d["state_dict"].pop(next(iter(d["state_dict"]))), "do not fit"),
    (lambda d: d.update(bands=["red", "green"]), "names 2 bands"),
    (lambda d: d["normalization"].update(method="zscore"), "damaged .* input contract .*zscore"),
])
def test_damaged_contents(tmp_path, damage, message):
    path = tmp_path / "model.pt"
    save_model(bundle(), path)
    data = raw_dict(path)
    damage(data)
    torch.save(data, path)
    with pytest.raises(ModelFileError, match=message):
        load_model(path)


class CreatesMarker:
    """Unpickling this object would call os.mkdir(marker): code running on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_pickle_with_code_is_refused_and_the_code_never_runs(tmp_path):
    def malicious_file(name: str) -> tuple:
        marker = tmp_path / f"{name}-ran"
        data = bundle().to_dict()
        data["provenance"] = {"note": CreatesMarker(marker)}
        path = tmp_path / f"{name}.pt"
        torch.save(data, path)
        return path, marker

    # Control: an unsafe load of the same kind of file does run the code, so the marker proves it.
    control, control_marker = malicious_file("control")
    torch.load(control, map_location="cpu", weights_only=False)
    assert control_marker.is_dir()

    path, marker = malicious_file("model")
    with pytest.raises(ModelFileError, match="never run"):
        load_model(path)
    assert not marker.exists()


def test_the_digest_given_with_a_model_is_that_of_its_file(tmp_path):
    """A fine-tune records its --init model's SHA-256 from the bytes loaded (the file is read once)."""
    path = tmp_path / "model.pt"
    save_model(bundle(), path)
    loaded, digest = load_model_and_sha256(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.threshold == 0.4 and loaded.config == CONFIG


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_all_finite_finds_any_value_that_is_not_a_number(dtype, bad):
    """Training's check after each step and the model file's at load: numpy's way and torch's (bfloat16)."""
    weights = torch.zeros(4, 5, dtype=dtype).t()  # a view that is not contiguous
    others = [torch.randn(3, requires_grad=True), torch.arange(3)]  # a trained weight; integers have no NaN
    assert all_finite([*others, weights]) and all_finite([weights]) and all_finite([])
    weights[4, 2] = bad
    assert not all_finite([*others, weights]) and not all_finite([weights])


def test_building_a_models_network_leaves_the_hosts_random_stream_and_default_dtype_alone(levir_pair, tmp_path):
    """A program seeding torch for its own work, or working in float64, runs detections in between:
    every detection drew the network's random initialisation from the host's stream, and in float64
    the run ended in torch's "Input type (float) and bias type (double)"."""
    from deepcl_core.detect import DetectOptions, DetectOutputs, bundled_model_path, detect_changes

    bundle = load_model(bundled_model_path())
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    network = bundle.build()
    assert torch.equal(torch.rand(3), expected)
    assert all(t.dtype == torch.float32 for t in network.state_dict().values() if t.is_floating_point())
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        result = detect_changes(*levir_pair, DetectOutputs(tmp_path / "c.tif", tmp_path / "p.tif"),
                                DetectOptions(device="cpu"), model=bundle)
    finally:
        torch.set_default_dtype(default)
    assert result.valid_pixels == 256 * 256


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_every_network_keeps_all_its_buffers_in_its_weights(encoder):
    """A model's network is built empty on the meta device and given the file's weights: a buffer
    outside them (registered not persistent) would stay on the meta device, without values."""
    network = build_network(NetworkConfig(encoder=encoder))
    weights = network.state_dict()
    assert [name for name, _ in network.named_buffers() if name not in weights] == []
