"""GPU out of memory, injected on the CPU path: the network raises torch.cuda.OutOfMemoryError
(or the RuntimeError MPS raises) above a work size; detection halves the batch, then the tile,
reports it through the progress callable and as a warning in the result, and carries on to the
same outputs. When even the smallest piece fails, the error is clear and no file is left."""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import torch

from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes
from deepcl_core.errors import DeviceMemoryError
from deepcl_core.network_on_tiles import MemoryBudget, run_within_memory
from reliability.rasters import files_in, read_band

OPTIONS = dict(tile_size=64, overlap=0, device="cpu")


class RunsOutOfMemory(torch.nn.Module):
    """The real network, but failing like a full GPU when given more than ``limit`` pixels at once."""

    def __init__(self, network: torch.nn.Module, limit: int, error: type = torch.cuda.OutOfMemoryError) -> None:
        super().__init__()
        self.network = network
        self.limit = limit
        self.error = error

    def forward(self, before, after):
        if before.shape[0] * before.shape[-2] * before.shape[-1] > self.limit:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return self.network(before, after)


def with_network(bundle, network: torch.nn.Module):
    clone = bundle.__class__(**bundle.__dict__)
    clone.build = lambda: network
    return clone


def run(good_pair, bundle, folder: Path, **options) -> Tuple[object, List[str]]:
    folder.mkdir()
    messages: List[str] = []
    outputs = DetectOutputs(folder / "change.tif", folder / "confidence.tif", folder / "distance.tif")
    result = detect_changes(*good_pair, outputs, DetectOptions(**{**OPTIONS, **options}),
                            progress=lambda fraction, message: messages.append(message), model=bundle)
    return result, messages


@pytest.fixture
def large_pair(tmp_path):
    """130×100 pixels: several 64-pixel tiles, so that batches hold more than one."""
    from reliability.rasters import geotransform, noise, write

    folder = tmp_path / "large"
    folder.mkdir()
    return (write(folder / "b.tif", noise((3, 100, 130), 0), geotransform()),
            write(folder / "a.tif", noise((3, 100, 130), 1), geotransform()))


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError, RuntimeError])
def test_batch_is_halved_and_the_result_is_unchanged(large_pair, tiny_model, tmp_path, error):
    reference, _ = run(large_pair, tiny_model, tmp_path / "reference", batch_size=4)
    network = RunsOutOfMemory(tiny_model.build(), limit=64 * 64, error=error)  # one tile at a time fits
    result, messages = run(large_pair, with_network(tiny_model, network), tmp_path / "oom", batch_size=4)
    lowered = [w for w in result.warnings if "ran out of memory" in w]
    assert [w.rsplit(" ", 2)[-2] for w in lowered] == ["2", "1"]  # 4 → 2 → 1, then never again
    assert any("batch lowered to 1" in m for m in messages)  # told as it happens, not only at the end
    for name in ("change.tif", "confidence.tif", "distance.tif"):
        np.testing.assert_allclose(read_band(tmp_path / "oom" / name), read_band(tmp_path / "reference" / name),
                                   atol=1e-5)
    assert result.changed_pixels == reference.changed_pixels


def test_then_the_tile_is_halved(large_pair, tiny_model, tmp_path):
    network = RunsOutOfMemory(tiny_model.build(), limit=32 * 32)
    result, messages = run(large_pair, with_network(tiny_model, network), tmp_path / "oom", batch_size=2)
    assert any("pieces of 32×32" in m for m in messages) and any("pieces of 32×32" in w for w in result.warnings)
    change = read_band(tmp_path / "oom" / "change.tif")
    assert change.shape == (100, 130) and set(np.unique(change)) <= {0, 1}
    assert result.valid_pixels == 100 * 130


def test_out_of_memory_for_the_smallest_piece_is_a_clear_error(large_pair, tiny_model, tmp_path):
    network = RunsOutOfMemory(tiny_model.build(), limit=0)
    with pytest.raises(DeviceMemoryError, match="--device cpu"):
        run(large_pair, with_network(tiny_model, network), tmp_path / "oom", batch_size=2)
    assert files_in(tmp_path / "oom") == []


def test_maps_kept_on_the_device_stay_there_after_the_batch_is_lowered(large_pair, tiny_model):
    """On CUDA detection blends on the GPU: the maps of a batch computed in smaller chunks come back
    as tensors on the device too (numpy cannot join CUDA tensors: an internal error)."""
    from reliability.rasters import noise

    before, after = (noise((4, 3, 64, 64), seed, np.float32) for seed in (0, 1))
    network = tiny_model.build().eval()
    whole = run_within_memory(network, before, after, torch.device("cpu"), True,
                              MemoryBudget(4, 64, lambda note: None), 1, keep_on_device=True).result()
    budget = MemoryBudget(4, 64, lambda note: None)
    lowered = run_within_memory(RunsOutOfMemory(network, limit=64 * 64), before, after, torch.device("cpu"), True,
                                budget, 1, keep_on_device=True).result()
    assert budget.batch_size == 1
    for kept, reference in zip(lowered, whole):
        assert isinstance(kept, torch.Tensor) and kept.device == reference.device
        torch.testing.assert_close(kept, reference, atol=1e-5, rtol=0)
