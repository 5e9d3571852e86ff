"""The DeepCL network (METHOD.md "Network"): shapes for both encoders, distance maps in [0, 2],
symmetry in the two dates, the prior-guidance ablation, and ImageNet weights in MobileNetV2."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deepcl_core.batches import batch_array
from deepcl_core.network_on_tiles import launch_network, run_network
from deepcl_core.model import NetworkConfig, build_network
from deepcl_core.model.encoders import MobileNetV2Encoder
from deepcl_core.model.pretrained import imagenet_weights_path, load_imagenet_weights
from deepcl_core.errors import ModelFileError

SMALL_DECODER = (32, 32, 16, 16, 8)


def make_network(encoder: str, **changes) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(NetworkConfig(encoder=encoder, decoder_channels=SMALL_DECODER, **changes)).eval()


def image_pair(n: int = 2, bands: int = 3, height: int = 64, width: int = 96, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(n, bands, height, width, generator=generator),
            torch.randn(n, bands, height, width, generator=generator))


@pytest.mark.parametrize("encoder", ["simple_cnn", "mobilenet_v2"])
def test_output_shapes(encoder):
    network = make_network(encoder)
    before, after = image_pair()
    with torch.no_grad():
        output = network(before, after)
    assert output.logit.shape == (2, 1, 64, 96)
    assert sorted(output.distances) == [8, 16, 32]
    for stride, distance in output.distances.items():
        assert distance.shape == (2, 1, 64 // stride, 96 // stride)
    assert output.finest_distance is output.distances[8]
    assert torch.isfinite(output.logit).all()


@pytest.mark.parametrize("encoder", ["simple_cnn", "mobilenet_v2"])
def test_distances_lie_in_0_to_2_and_vanish_for_identical_dates(encoder):
    network = make_network(encoder)
    before, after = image_pair(seed=3)
    with torch.no_grad():
        different = network(before, after * 5)
        same = network(before, before)
    for stride, distance in different.distances.items():
        assert distance.min() >= 0 and distance.max() <= 2 + 1e-5
        assert same.distances[stride].max() < 1e-3
        assert distance.mean() > same.distances[stride].mean()  # different dates lie farther apart


def test_network_is_symmetric_in_the_two_dates():
    # |F1 − F2| and F1 + F2 fusion and Euclidean distances: swapping the dates changes nothing.
    network = make_network("simple_cnn")
    before, after = image_pair(seed=5)
    with torch.no_grad():
        forward, backward = network(before, after), network(after, before)
    torch.testing.assert_close(forward.logit, backward.logit, rtol=1e-4, atol=1e-5)
    for stride in forward.distances:
        torch.testing.assert_close(forward.distances[stride], backward.distances[stride], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("training, in_one_batch, batches", [
    (True, None, [4]),  # batch norm normalises both dates with the same statistics
    (False, None, [2, 2]),  # one date after the other: half the peak memory
    (False, True, [4]),
    (True, False, [2, 2]),
])
def test_the_encoder_sees_the_dates_together_in_training_and_one_after_the_other_in_eval(
        training, in_one_batch, batches):
    network = make_network("mobilenet_v2").train(training)
    network.dates_in_one_batch = in_one_batch
    seen = []
    network.encoder.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    with torch.no_grad():
        network(*image_pair(n=2))
    assert seen == batches


@pytest.mark.parametrize("encoder", ["simple_cnn", "mobilenet_v2"])
def test_in_eval_mode_the_dates_one_after_the_other_give_what_one_batch_gives(encoder):
    network = make_network(encoder)
    before, after = image_pair(seed=7)
    with torch.no_grad():
        apart = network(before, after)
        network.dates_in_one_batch = True
        together = network(before, after)
    torch.testing.assert_close(apart.logit, together.logit, rtol=1e-5, atol=1e-5)
    for stride in together.distances:
        torch.testing.assert_close(apart.distances[stride], together.distances[stride], rtol=1e-5, atol=1e-5)


def test_metric_strides_choose_the_distance_maps():
    network = make_network("simple_cnn", metric_strides=(4,))
    with torch.no_grad():
        output = network(*image_pair(n=1, height=32, width=32))
    assert list(output.distances) == [4]
    assert output.finest_distance.shape == (1, 1, 8, 8)


def test_without_prior_guidance_the_network_has_no_gate():
    guided = make_network("simple_cnn")
    plain = make_network("simple_cnn", prior_guidance=False)
    assert any("prior" in name for name, _ in guided.named_parameters())
    assert not any("prior" in name for name, _ in plain.named_parameters())
    with torch.no_grad():
        output = plain(*image_pair(n=1))
    assert output.logit.shape == (1, 1, 64, 96) and output.distances  # the metric branch still runs


def test_gradients_reach_the_encoder_through_both_branches():
    network = make_network("simple_cnn").train()
    before, after = image_pair(n=2, height=32, width=32)
    output = network(before, after)
    (output.logit.mean() + output.finest_distance.mean()).backward()
    first = network.encoder.stages[0][0].weight
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="metric_strides"):
        build_network(NetworkConfig(encoder="simple_cnn", metric_strides=(3,)))
    with pytest.raises(ValueError, match="decoder_channels"):
        build_network(NetworkConfig(encoder="simple_cnn", decoder_channels=(8, 8)))
    with pytest.raises(ValueError, match="unknown encoder"):
        build_network(NetworkConfig(encoder="resnet_9000"))


def test_config_round_trips_through_a_plain_dict():
    config = NetworkConfig(encoder="simple_cnn", in_channels=4, metric_strides=(16, 32),
                           decoder_channels=SMALL_DECODER, prior_guidance=False)
    assert NetworkConfig.from_dict(config.to_dict()) == config
    assert NetworkConfig.from_dict({**config.to_dict(), "from_the_future": 1}) == config


def test_run_network_pads_any_tile_size_and_crops_back():
    network = make_network("simple_cnn")
    rng = np.random.default_rng(0)
    before = rng.normal(size=(2, 3, 70, 45)).astype(np.float32)
    after = rng.normal(size=(2, 3, 70, 45)).astype(np.float32)
    probability, distance = run_network(network, before, after, torch.device("cpu"))
    assert probability.shape == distance.shape == (2, 70, 45)
    assert probability.dtype == distance.dtype == np.float32
    assert probability.min() >= 0 and probability.max() <= 1
    assert distance.min() >= 0 and distance.max() <= 2 + 1e-5
    # Smaller than the reflection pad needs: falls back to edge replication.
    probability, distance = run_network(network, before[:, :, :10, :7], after[:, :, :10, :7],
                                        torch.device("cpu"), with_distance=False)
    assert probability.shape == (2, 10, 7) and distance is None


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_batches_launched_back_to_back_give_each_its_own_maps(device):
    """On CUDA launch_network returns while the GPU still computes, and detection then refills its
    page-locked input arrays and launches the next batch: each batch's maps must still be its own,
    those of the batch computed alone. The GPU is kept busy before each launch, as by the batches
    before it in detection, so that a copy of the inputs still waiting when launch_network returns
    would read the next batch's."""
    device = torch.device(device)
    network = make_network("mobilenet_v2").to(device)
    rng = np.random.default_rng(2)
    batches = [rng.normal(size=(2, 4, 3, 128, 128)).astype(np.float32) for _ in range(6)]
    alone = [run_network(network, before, after, device) for before, after in batches]
    before, after = (batch_array(4, (3, 128, 128), device) for _ in range(2))
    launched = []
    for batch in batches:
        np.copyto(before, batch[0])  # the arrays of the batch before, overwritten at once
        np.copyto(after, batch[1])
        if device.type == "cuda":
            torch.cuda._sleep(50_000_000)  # about 25 ms of GPU cycles
        launched.append(launch_network(network, before, after, device))
    for maps, (probability, distance) in zip(launched, alone):
        got_probability, got_distance = maps.result()
        np.testing.assert_allclose(got_probability, probability, atol=1e-4)
        np.testing.assert_allclose(got_distance, distance, atol=1e-4)


def test_run_network_enlarges_the_inputs_and_averages_the_maps_back():
    """scale 2: the network sees the tiles twice as large; each input pixel gets the mean of the
    2×2 output pixels it became, so on constant images (constant maps away from the borders) it
    gives back, inside, what it gives unenlarged."""
    rng = np.random.default_rng(1)
    before = rng.normal(size=(1, 3, 40, 24)).astype(np.float32)
    after = rng.normal(size=(1, 3, 40, 24)).astype(np.float32)
    seen = []
    network = make_network("simple_cnn")
    network.register_forward_hook(lambda module, inputs, output: seen.append(tuple(inputs[0].shape)))
    probability, distance = run_network(network, before, after, torch.device("cpu"), scale=2)
    assert seen == [(1, 3, 96, 64)]  # 80×48 padded to multiples of 32
    assert probability.shape == distance.shape == (1, 40, 24)
    constant = np.zeros((1, 3, 40, 24), np.float32)
    flat, _ = run_network(network, constant, constant, torch.device("cpu"), with_distance=False)
    flat2, _ = run_network(network, constant, constant, torch.device("cpu"), with_distance=False, scale=2)
    np.testing.assert_allclose(flat2[:, 8:-8, 8:-8], flat[:, 8:-8, 8:-8], atol=1e-5)


@pytest.fixture(scope="module")
def imagenet_weights():
    path = imagenet_weights_path()
    if not path.is_file():
        pytest.skip(f"ImageNet MobileNetV2 weights absent at {path}: run 'make setup' (or 'make weights')")
    return path


def test_imagenet_weights_load_into_mobilenet_and_change_its_output(imagenet_weights):
    torch.manual_seed(0)
    encoder = MobileNetV2Encoder().eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        random_features = [f.clone() for f in encoder(x)]
    load_imagenet_weights(encoder, imagenet_weights)
    state = torch.load(imagenet_weights, map_location="cpu", weights_only=True)
    loaded = encoder.state_dict()
    copied = [key for key in state if not key.startswith("features.18.")]
    assert len(copied) > 250
    for key in copied:
        torch.testing.assert_close(loaded[key], state[key])
    with torch.no_grad():
        pretrained_features = encoder(x)
    for before, after in zip(random_features, pretrained_features):
        assert not torch.allclose(before, after)


def test_imagenet_weights_extend_to_four_bands(imagenet_weights):
    encoder = MobileNetV2Encoder(in_channels=4)
    load_imagenet_weights(encoder, imagenet_weights)
    first = encoder.features[0][0].weight
    assert first.shape == (32, 4, 3, 3)
    torch.testing.assert_close(first[:, 3], first[:, :3].mean(dim=1))


def test_missing_imagenet_weights_is_a_clear_error(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_imagenet_weights(MobileNetV2Encoder(), tmp_path / "absent.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a weight file")
    with pytest.raises(ModelFileError, match="cannot read"):
        load_imagenet_weights(MobileNetV2Encoder(), bad)
