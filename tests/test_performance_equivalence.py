"""The speed work changes no result (issue 6): the optimised pipeline (reading and writing in turn
with the network or in background threads, batches, folded batch norms, row blending, block-aligned
writes) and the straightforward reference path
(both images read whole, one tile at a time through the plain network, fp32) give the same
confidence, within 1e-3, on real OSCD crops with a real MobileNetV2 DeepCL network."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from osgeo import gdal

from benchmarks.compute import benchmark_bundle
from benchmarks.naive import naive_confidence
from deepcl_core import detect
from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes
from deepcl_core.model.inference import fold_batch_norms, prepare_for_inference
from deepcl_core.outputs import FLOAT_NODATA

from core_test_helpers import crop

TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def real_bundle():
    """The bundled model when there is one, else MobileNetV2 DeepCL with the ImageNet encoder and
    a seeded decoder: real layers, real batch norms, real cost."""
    return benchmark_bundle()[0]


@pytest.fixture(scope="module")
def same_grid_crop(data_dir: Path, tmp_path_factory) -> tuple:
    """A 384×320 crop of OSCD rennes (4-band UInt16, before and after on one grid)."""
    city = data_dir / "oscd" / "rennes"
    folder = tmp_path_factory.mktemp("rennes")
    return (crop(city / "before.tif", folder / "before.tif", 40, 10, 384, 320),
            crop(city / "after.tif", folder / "after.tif", 40, 10, 384, 320))


@pytest.fixture(scope="module")
def odd_crop(data_dir: Path, tmp_path_factory) -> tuple:
    """A 385×321 crop of OSCD rennes, which the bundled model enlarges 2×: the last tiles reach past
    its right and bottom edges."""
    city = data_dir / "oscd" / "rennes"
    folder = tmp_path_factory.mktemp("rennes_odd")
    return (crop(city / "before.tif", folder / "before.tif", 40, 10, 385, 321),
            crop(city / "after.tif", folder / "after.tif", 40, 10, 385, 321))


@pytest.fixture(scope="module")
def holed_crop(same_grid_crop, tmp_path_factory) -> tuple:
    """The same crop with nodata (0) in rows 40-90 of the before image and in columns 200-260 of
    the after image: each image's own mask differs from the pair's."""
    folder = tmp_path_factory.mktemp("holed")
    holed = []
    for source, window in zip(same_grid_crop, ((slice(40, 90), slice(None)), (slice(None), slice(200, 260)))):
        target = folder / source.name
        dataset = gdal.Translate(str(target), str(source), noData=0)
        for index in range(1, dataset.RasterCount + 1):
            values = dataset.GetRasterBand(index).ReadAsArray()
            values[window] = 0
            dataset.GetRasterBand(index).WriteArray(values)
        dataset = None
        holed.append(target)
    return tuple(holed)


def pipeline_confidence(before: Path, after: Path, bundle, folder: Path, **options) -> np.ndarray:
    """The optimised pipeline's confidence, in fp32 unless ``precision`` says otherwise."""
    outputs = DetectOutputs(change=folder / "change.tif", confidence=folder / "confidence.tif")
    options = {"precision": "fp32", **options}
    detect_changes(before, after, outputs, DetectOptions(device="cpu", **options), model=bundle)
    return gdal.Open(str(outputs.confidence)).ReadAsArray()


def assert_same_confidence(optimised: np.ndarray, confidence: np.ndarray, valid: np.ndarray) -> None:
    np.testing.assert_array_equal(optimised == FLOAT_NODATA, ~valid)
    assert valid.mean() > 0.5, "the crop should be mostly valid, or the comparison says little"
    difference = np.abs(optimised[valid] - confidence[valid])
    assert difference.max() <= TOLERANCE, f"largest difference {difference.max():.2e}"
    assert confidence[valid].std() > 1e-4, "a constant map would make the comparison empty"


# overlap_io: False reads and writes in turn with the network (the CPU's way), True in background
# threads (the way beside a GPU, here on the CPU).
@pytest.mark.parametrize("overlap_io", [False, True])
@pytest.mark.parametrize("tile, overlap, batch", [(128, 32, 4), (256, 64, 3)])
def test_pipeline_matches_the_reference_path(same_grid_crop, real_bundle, tmp_path, tile, overlap, batch, overlap_io):
    before, after = same_grid_crop
    confidence, valid, _ = naive_confidence(before, after, real_bundle, tile, overlap)
    optimised = pipeline_confidence(before, after, real_bundle, tmp_path, tile_size=tile, overlap=overlap,
                                    batch_size=batch, overlap_io=overlap_io)
    assert_same_confidence(optimised, confidence, valid)


@pytest.mark.parametrize("overlap_io", [False, True])
@pytest.mark.parametrize("tile, overlap, batch", [(128, 32, 4), (256, 64, 3)])
def test_pipeline_matches_the_reference_path_where_tiles_reach_past_the_edge(odd_crop, real_bundle, tmp_path, tile,
                                                                            overlap, batch, overlap_io):
    """The reference runs the network on the part of each tile inside the image, enlarged and then
    padded as a whole image is; the pipeline's tiles reaching past the edge gave up to 0.02 more or
    less (reflected, then enlarged: the enlarging read pixels past the edge)."""
    before, after = odd_crop
    confidence, valid, _ = naive_confidence(before, after, real_bundle, tile, overlap)
    optimised = pipeline_confidence(before, after, real_bundle, tmp_path, tile_size=tile, overlap=overlap,
                                    batch_size=batch, overlap_io=overlap_io)
    assert_same_confidence(optimised, confidence, valid)


# keep_blocks: GDAL's decoded blocks kept for the run (inputs this small), or dropped after each tile
# row as for large inputs.
@pytest.mark.parametrize("overlap_io, keep_blocks", [(False, True), (False, False), (True, True)])
def test_pipeline_matches_the_reference_path_when_after_is_warped(oscd_mismatch_pair, real_bundle, tmp_path,
                                                                  monkeypatch, overlap_io, keep_blocks):
    if not keep_blocks:
        monkeypatch.setattr(detect, "KEEP_DECODED_BYTES", 0)
    before, after = oscd_mismatch_pair
    confidence, valid, _ = naive_confidence(before, after, real_bundle, 128, 32)
    optimised = pipeline_confidence(before, after, real_bundle, tmp_path, tile_size=128, overlap=32, batch_size=2,
                                    overlap_io=overlap_io)
    assert_same_confidence(optimised, confidence, valid)


@pytest.mark.parametrize("overlap_io", [False, True])
def test_pipeline_matches_the_reference_path_with_nodata_in_each_image(holed_crop, real_bundle, tmp_path,
                                                                       overlap_io):
    """Each image is read and normalised on its own (side by side in turn): the pixels only the
    other image lacks must still reach the network as the reference path gives them."""
    before, after = holed_crop
    confidence, valid, _ = naive_confidence(before, after, real_bundle, 128, 32)
    assert valid[:, 200:260].sum() == 0 and valid[40:90].sum() == 0
    optimised = pipeline_confidence(before, after, real_bundle, tmp_path, tile_size=128, overlap=32, batch_size=1,
                                    overlap_io=overlap_io)
    assert_same_confidence(optimised, confidence, valid)


def test_precisions_on_the_cpu(same_grid_crop, real_bundle, tmp_path):
    """auto is fp32 on the CPU, bit for bit; the opt-in bf16 moves the confidence but flips few
    pixels across the model's threshold (measured on real pairs: about 0.4 %)."""
    before, after = same_grid_crop
    maps = {}
    for precision in ("fp32", "auto", "bf16"):
        (tmp_path / precision).mkdir()
        maps[precision] = pipeline_confidence(before, after, real_bundle, tmp_path / precision, precision=precision)
    np.testing.assert_array_equal(maps["auto"], maps["fp32"])
    exact, mixed = maps["fp32"], maps["bf16"]
    valid = exact != FLOAT_NODATA
    np.testing.assert_array_equal(mixed == FLOAT_NODATA, ~valid)
    assert 0 < np.abs(mixed[valid] - exact[valid]).mean() <= 0.01
    flipped = (mixed[valid] >= real_bundle.threshold) != (exact[valid] >= real_bundle.threshold)
    assert flipped.mean() <= 0.01, flipped.mean()


def test_folding_leaves_the_trained_network_untouched(real_bundle):
    network = real_bundle.build()
    before = {name: value.clone() for name, value in network.state_dict().items()}
    ready = prepare_for_inference(network, torch.device("cpu"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ready.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())
    for name, value in network.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert fold_batch_norms(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())) == 0
