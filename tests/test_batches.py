"""Batches of tiles: rows cut evenly, never one batch across two rows, and the arrays readers
normalise tiles into, which the network then reads as they are."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from deepcl_core import detect, network_on_tiles
from deepcl_core.batches import BatchSlots, batch_plan, even_batch_size
from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes
from deepcl_core.tiling import TileGrid

CPU = torch.device("cpu")


@pytest.mark.parametrize("count, most, even", [(12, 8, 6), (13, 8, 7), (16, 8, 8), (9, 8, 5), (3, 8, 3), (5, 1, 1)])
def test_a_row_of_tiles_is_cut_into_as_few_and_as_even_batches_as_can_be(count, most, even):
    assert even_batch_size(count, most) == even


def test_the_plan_cuts_each_row_evenly_in_reading_order():
    tiles = TileGrid(2720, 500, 256, 32)  # 12 columns, 3 rows
    plan = batch_plan(tiles, 8)
    assert [(row, len(positions)) for row, positions in plan] == [(0, 6), (0, 6), (1, 6), (1, 6), (2, 6), (2, 6)]
    assert [p for _, positions in plan for p in positions] == list(tiles.positions())
    assert all(len({y for _, y in positions}) == 1 for _, positions in plan)  # one row each


def test_slots_of_a_batch_share_its_arrays_and_padding_is_zero():
    plan = [(0, [(0, 0), (10, 0), (20, 0)]), (0, [(30, 0)])]
    slots = BatchSlots(plan, (3, 2), (4, 5), CPU, pad_to=3)
    before, after = slots.slot((30, 0))
    before[:] = 1.0
    after[:] = 2.0
    first, second = slots.take(1)
    assert first.shape == (3, 3, 4, 5) and second.shape == (3, 2, 4, 5)
    assert (first[0] == 1.0).all() and (second[0] == 2.0).all() and not first[1:].any() and not second[1:].any()
    assert np.shares_memory(before, first)


def test_reader_threads_asking_for_one_batch_get_one_pair_of_arrays():
    plan = [(0, [(x, 0) for x in range(0, 80, 10)])]
    slots = BatchSlots(plan, (3, 3), (16, 16), CPU)
    start = threading.Barrier(8)
    views = {}

    def ask(position):
        start.wait()
        views[position] = slots.slot(position)
    threads = [threading.Thread(target=ask, args=(p,)) for p in plan[0][1]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    before, after = slots.take(0)
    assert before.shape == (8, 3, 16, 16)
    for slot, position in enumerate(plan[0][1]):
        assert np.shares_memory(views[position][0], before[slot]) and np.shares_memory(views[position][1], after[slot])


def test_the_network_reads_tiles_where_the_readers_normalised_them(oscd_mismatch_pair, tiny_model, tmp_path,
                                                                    monkeypatch):
    """No copy between the readers and the network: each tile's inputs lie in the arrays the
    network is given (background readers; 5 tiles a row, 4 rows, in batches of at most 3: 3 and 2)."""
    given, read = [], []
    launch_network, read_tile = network_on_tiles.launch_network, detect._read_tile

    def recording_network(network, before, after, *args, **kwargs):
        given.append(before)
        return launch_network(network, before, after, *args, **kwargs)

    def recording_reader(*args, **kwargs):
        tile = read_tile(*args, **kwargs)
        read.append(tile.before)
        return tile
    monkeypatch.setattr(network_on_tiles, "launch_network", recording_network)
    monkeypatch.setattr(detect, "_read_tile", recording_reader)
    outputs = DetectOutputs(tmp_path / "change.tif", tmp_path / "confidence.tif")
    options = DetectOptions(tile_size=64, overlap=16, batch_size=3, device="cpu", io_threads=2, overlap_io=True)
    result = detect_changes(*oscd_mismatch_pair, outputs, options, model=tiny_model)
    assert len(read) == result.tiles == 20 and [len(batch) for batch in given] == [3, 2] * 4
    assert all(any(np.shares_memory(tile, batch) for batch in given) for tile in read)
