"""Tiles and their blending: every pixel is covered, blending reproduces a prediction field
exactly, tiles that disagree meet in a gentle ramp instead of a seam, the row blender hands out
each row once, and a whole detection run does not depend on the tile size."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from osgeo import gdal

from core_test_helpers import crop
from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes
from deepcl_core.model.network import NetworkOutput
from deepcl_core.model.network import NETWORK_MULTIPLE
from deepcl_core.tiling import RowBlender, TileGrid

sizes = st.integers(1, 700)
tile_settings = st.sampled_from([(32, 0), (64, 16), (96, 8), (128, 32), (128, 63), (256, 64)])


def blend(grid: TileGrid, predict, channels: int = 1, valid=None):
    """Run the blender the way detection does, returning the blended image, its validity and the
    (top, until) of every flush."""
    blender = RowBlender(grid.width, grid.tile_height, channels)
    out = np.full((channels, grid.height, grid.width), np.nan, np.float32)
    out_valid = np.zeros((grid.height, grid.width), bool)
    flushes = []
    rows = grid.rows()
    for index, y in enumerate(rows):
        for x in grid.columns():
            tile_valid = (np.ones(grid.inside(x, y), bool) if valid is None
                          else valid[y:y + grid.tile_height, x:x + grid.tile_width])
            weights = grid.blend_weights(x, y)  # of the part inside the image, as detection crops the maps
            blender.add([channel[:weights.shape[0], :weights.shape[1]] for channel in predict(x, y)], weights,
                        tile_valid, x, y)
        until = rows[index + 1] if index + 1 < len(rows) else grid.height
        top, blended, rows_valid = blender.flush(until)
        flushes.append((top, until, blended.shape[1]))
        out[:, top:until] = blended
        out_valid[top:until] = rows_valid
    return out, out_valid, flushes


@settings(max_examples=150, deadline=None)
@given(sizes, sizes, tile_settings)
def test_tiles_cover_every_pixel_and_overlap_enough(width, height, setting):
    tile, overlap = setting
    grid = TileGrid(width, height, tile, overlap)
    coverage = np.zeros((height, width), int)
    for x, y in grid.positions():
        assert 0 <= x and x + grid.tile_width <= width
        assert 0 <= y and y + grid.tile_height <= height
        coverage[y:y + grid.tile_height, x:x + grid.tile_width] += 1
    assert coverage.min() >= 1
    assert len(grid) == len(list(grid.positions()))
    for starts, length in ((grid.columns(), width), (grid.rows(), height)):
        assert starts[0] == 0 and starts == sorted(set(starts))
        steps = np.diff(starts)
        assert (steps <= tile - overlap).all()  # neighbours share at least the overlap


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 3000), st.sampled_from([(64, 16), (128, 32), (256, 64), (768, 64),
                                                                  (768, 100), (96, 40)]), st.integers(1, 4))
def test_network_tiles_start_on_the_networks_grid_and_cover_the_image(width, height, setting, scale):
    """Every tile starts where the whole image seen at once has a cell of the network's coarsest
    grid (a multiple of 32 of its enlarged pixels), neighbours share at least the overlap, and a
    last tile reaches past the image by less than one step of that grid; tiles too small to step
    by it (20 px tiles of an image enlarged 3×, whose grid is every 32 px) end at the image's edge."""
    tile, overlap = setting
    grid = TileGrid.for_network(width, height, tile, overlap, scale)
    align = NETWORK_MULTIPLE // np.gcd(NETWORK_MULTIPLE, scale)  # in the image's pixels
    on_the_grid = tile // scale - overlap // scale >= align
    reach = align if on_the_grid else 1
    coverage = np.zeros((height, width), int)
    for x, y in grid.positions():
        if on_the_grid:
            assert (x * scale) % NETWORK_MULTIPLE == 0 and (y * scale) % NETWORK_MULTIPLE == 0
        inside_h, inside_w = grid.inside(x, y)
        assert grid.blend_weights(x, y).shape == (inside_h, inside_w)
        assert grid.tile_width - inside_w < reach and grid.tile_height - inside_h < reach
        coverage[y:y + inside_h, x:x + inside_w] += 1
    assert coverage.min() >= 1
    for starts in (grid.columns(), grid.rows()):
        assert starts[0] == 0 and starts == sorted(set(starts))
        assert (np.diff(starts) <= tile // scale - overlap // scale).all()


def test_too_small_tiles_for_the_grid_end_at_the_image_edge():
    """Tiles whose step is under one cell of the grid (20 px tiles of an image enlarged 3×) keep
    the steps they were given, and the last ends at the edge."""
    grid = TileGrid.for_network(100, 50, 64, 16, scale=3)
    assert grid.columns() == [0, 16, 32, 48, 64, 79] and grid.rows() == [0, 16, 29]
    assert all(grid.inside(x, y) == (21, 21) for x, y in grid.positions())


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_a_tile_past_the_edge_gives_inside_the_maps_of_its_inside_alone(data_dir, tiny_model, scale):
    """Run with what lies past the image's edge (here noise), a tile reaching 10 and 7 px past it gives,
    inside, the maps of its inside run alone: enlarged and padded as the whole image's edge is."""
    from deepcl_core.network_on_tiles import run_network

    pixels = gdal.Open(str(data_dir / "oscd" / "rennes" / "before.tif")).ReadAsArray(0, 0, 64, 64)[:3]
    tiles = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    tiles[:, :, :54, :57] = (pixels[:, :54, :57] / 3000.0 - 0.5)[np.newaxis]
    tiles[1] *= 0.5
    network = tiny_model.build().eval()
    maps = run_network(network, tiles, tiles[::-1].copy(), torch.device("cpu"), scale=scale,
                       inside=[(54, 57), (64, 64)])
    alone = run_network(network, tiles[:1, :, :54, :57], tiles[1:, :, :54, :57], torch.device("cpu"), scale=scale)
    whole = run_network(network, tiles[1:], tiles[:1], torch.device("cpu"), scale=scale)
    for channel in range(2):
        np.testing.assert_allclose(maps[channel][0, :54, :57], alone[channel][0], atol=2e-5)
        np.testing.assert_allclose(maps[channel][1], whole[channel][0], atol=2e-5)  # a whole tile as it was


@settings(max_examples=60, deadline=None)
@given(st.integers(20, 900), st.integers(20, 400), st.sampled_from([(64, 16), (128, 32), (256, 64)]),
       st.integers(1, 3))
def test_tiles_past_the_edge_blend_back_to_the_field(width, height, setting, scale):
    """Tiles of the network's grid whose maps reach past the image (filled with NaN there) blend back
    to the field they predict: only the part inside the image is blended."""
    tile, overlap = setting
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    field = np.sin(xx / 17.0) * np.cos(yy / 23.0)[np.newaxis]
    grid = TileGrid.for_network(width, height, tile, overlap, scale)

    def predict(x, y):
        maps = np.full((1, grid.tile_height, grid.tile_width), np.nan, np.float32)
        inside_h, inside_w = grid.inside(x, y)
        maps[:, :inside_h, :inside_w] = field[:, y:y + inside_h, x:x + inside_w]
        return maps
    out, valid, _ = blend(grid, predict)
    assert valid.all()
    np.testing.assert_allclose(out, field, atol=2e-6)


def test_blend_weights_are_one_at_the_image_border_and_taper_across_what_neighbours_share():
    """Columns 0, 96, 172 share 32 and 52 px; rows 0, 72 share 56 px: each side falls off across all
    it shares, so a pixel leans on the tile whose edge is farther, and stays 1 where no tile overlaps."""
    grid = TileGrid(300, 200, 128, 32)
    assert (grid.columns(), grid.rows()) == ([0, 96, 172], [0, 72])
    corner = grid.blend_weights(0, 0)
    assert corner.shape == (128, 128)
    assert corner[0, :96].min() == 1 and corner[:72, 0].min() == 1
    assert (np.diff(corner[0, 96:]) < 0).all() and (np.diff(corner[72:, 0]) < 0).all()
    assert corner[-1, -1] < 0.05 and corner.min() > 0
    middle = grid.blend_weights(96, 0)
    assert middle[0, 0] < 0.05 and middle[0, -1] < 0.05
    assert middle[0, 32:76].min() == 1 and middle[0, 31] < 1 and middle[0, 76] < 1
    last = grid.blend_weights(172, 72)
    assert last.shape == (128, 128) and last[-1, -1] == 1 and last[0, 0] < 0.05


@settings(max_examples=60, deadline=None)
@given(st.integers(20, 400), st.integers(20, 400), tile_settings)
def test_blending_reproduces_a_prediction_field_exactly(width, height, setting):
    """Tiles that predict the same field (each its own crop) blend back to that field: the
    weights are normalised everywhere, so the overlap never brightens or darkens."""
    tile, overlap = setting
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    field = np.stack([np.sin(xx / 17.0) * np.cos(yy / 23.0), np.full_like(xx, 0.7)])
    grid = TileGrid(width, height, tile, overlap)
    out, valid, _ = blend(grid, lambda x, y: field[:, y:y + grid.tile_height, x:x + grid.tile_width], channels=2)
    assert valid.all()
    np.testing.assert_allclose(out, field, atol=2e-6)


@pytest.mark.parametrize("width, height, tile, overlap", [(300, 200, 128, 32), (500, 129, 128, 32),
                                                         (256, 256, 64, 16), (1000, 70, 96, 8)])
def test_disagreeing_tiles_meet_in_a_ramp_not_a_seam(width, height, tile, overlap):
    """Neighbouring tiles predicting 0 and 1 (the worst disagreement) change by at most 1/overlap
    from one pixel to the next: a hard seam would jump by 1."""
    grid = TileGrid(width, height, tile, overlap)
    parity = {pos: float(i % 2) for i, pos in enumerate(grid.positions())}
    out, _, _ = blend(grid, lambda x, y: np.full((1, grid.tile_height, grid.tile_width), parity[(x, y)]))
    steepest = max(np.abs(np.diff(out[0], axis=0)).max(), np.abs(np.diff(out[0], axis=1)).max())
    assert steepest <= 1.0 / overlap + 1e-5


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 600), st.integers(1, 300), tile_settings)
def test_row_blender_flushes_every_row_exactly_once(height, width, setting):
    tile, overlap = setting
    grid = TileGrid(width, height, tile, overlap)
    _, valid, flushes = blend(grid, lambda x, y: np.ones((1, grid.tile_height, grid.tile_width), np.float32))
    tops = [top for top, _, _ in flushes]
    assert tops[0] == 0 and flushes[-1][1] == height
    for (top, until, rows), following in zip(flushes, flushes[1:] + [(height, None, None)]):
        assert until == following[0] and rows == until - top
    assert valid.all()


def test_validity_survives_blending():
    grid = TileGrid(200, 150, 64, 16)
    valid = np.ones((150, 200), bool)
    valid[40:90, 30:170] = False
    out, out_valid, _ = blend(grid, lambda x, y: np.full((1, 64, 64), 0.5, np.float32), valid=valid)
    np.testing.assert_array_equal(out_valid, valid)


class PointwiseNetwork(torch.nn.Module):
    """A stand-in network whose output at a pixel depends on that pixel alone, so any difference
    between a tiled and an untiled run can only come from tiling, blending or writing."""

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> NetworkOutput:
        difference = (after - before).mean(dim=1, keepdim=True)
        return NetworkOutput(logit=difference, distances={1: difference.abs().clamp(max=2)})


def test_detection_does_not_depend_on_tile_size(tmp_path, oscd_mismatch_pair, tiny_model):
    before, after = oscd_mismatch_pair
    pointwise = tiny_model.__class__(**{**tiny_model.__dict__})
    pointwise.build = lambda: PointwiseNetwork().eval()

    def run(name: str, tile: int, overlap: int) -> np.ndarray:
        outputs = DetectOutputs(change=tmp_path / f"{name}_change.tif", confidence=tmp_path / f"{name}_conf.tif",
                                distance=tmp_path / f"{name}_dist.tif")
        detect_changes(before, after, outputs, DetectOptions(tile_size=tile, overlap=overlap, device="cpu"),
                       model=pointwise)
        return np.stack([gdal.Open(str(p)).ReadAsArray().astype(np.float64) for p in outputs.rasters()])

    whole = run("whole", 256, 0)  # one tile covers the 192×160 crop
    tiled = run("tiled", 64, 16)
    odd = run("odd", 96, 40)
    assert whole[1].std() > 0.01  # a field with structure, not a constant
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    np.testing.assert_allclose(odd, whole, atol=1e-5)


def test_tiles_reaching_past_the_edge_blend_only_their_inside(tmp_path, data_dir, tiny_model):
    """A 177×150 crop in tiles of 64 on the network's grid: the last column and row reach 15 and 10
    px past the edge, where the reader writes 0; with a network whose output at a pixel
    depends on that pixel alone, the maps equal the whole image's, pixel for pixel."""
    city = data_dir / "oscd" / "abudhabi"
    before = crop(city / "before.tif", tmp_path / "before.tif", 100, 120, 177, 150)
    after = crop(city / "after.tif", tmp_path / "after.tif", 100, 120, 177, 150)
    pointwise = tiny_model.__class__(**{**tiny_model.__dict__})
    pointwise.build = lambda: PointwiseNetwork().eval()
    grid = TileGrid.for_network(177, 150, 64, 16)
    assert [grid.inside(x, y) for x, y in grid.positions()][-1] == (54, 49)  # (150 - 96, 177 - 128)

    def run(name: str, tile: int, **options) -> np.ndarray:
        outputs = DetectOutputs(change=tmp_path / f"{name}_change.tif", confidence=tmp_path / f"{name}_conf.tif",
                                distance=tmp_path / f"{name}_dist.tif")
        detect_changes(before, after, outputs, DetectOptions(tile_size=tile, overlap=16, device="cpu", **options),
                       model=pointwise)
        return np.stack([gdal.Open(str(p)).ReadAsArray().astype(np.float64) for p in outputs.rasters()])

    whole = run("whole", 256)
    assert whole[1].std() > 0.01
    np.testing.assert_allclose(run("in_turn", 64, overlap_io=False), whole, atol=1e-5)
    np.testing.assert_allclose(run("in_threads", 64, overlap_io=True, io_threads=2, batch_size=3), whole, atol=1e-5)


def test_tiles_on_the_networks_grid_give_the_whole_image_map(tmp_path, data_dir, monkeypatch):
    """The bundled model on a real 769×300 SZTAKI crop in tiles of 768: the second tile starting 32 px
    in (on the network's grid) gives the map of the whole image seen at once, but where the tiles'
    context differs; starting 1 px in (off the grid, as tiles ended at the image's edge before), the
    network saw the pixels in other cells of its pooling and the map differed inside the tile."""
    pair = data_dir / "sztaki" / "szada_1"
    crops = []
    for date in ("before", "after"):
        crops.append(tmp_path / f"{date}.tif")
        gdal.Translate(str(crops[-1]), str(pair / f"{date}.png"), srcWin=(0, 0, 769, 300))

    def run(name: str, tile: int):
        outputs = DetectOutputs(change=tmp_path / f"{name}_change.tif", confidence=tmp_path / f"{name}_conf.tif")
        result = detect_changes(*crops, outputs, DetectOptions(tile_size=tile, device="cpu"))
        return result.tiles, [gdal.Open(str(path)).ReadAsArray() for path in outputs.rasters()]

    whole_tiles, (whole_change, whole_confidence) = run("whole", 1024)
    tiled_tiles, (tiled_change, tiled_confidence) = run("on_grid", 768)
    monkeypatch.setattr(TileGrid, "for_network", classmethod(
        lambda cls, width, height, tile, overlap, scale=1: cls(width, height, tile // scale, overlap // scale)))
    off_tiles, (off_change, off_confidence) = run("off_grid", 768)
    assert (whole_tiles, tiled_tiles, off_tiles) == (1, 2, 2)
    assert 0.01 < (whole_change == 1).mean() < 0.5  # a map with change in it, not a blank
    assert (tiled_change != whole_change).mean() < 0.001
    assert (off_change != whole_change).mean() > 0.005
    assert np.abs(tiled_confidence - whole_confidence).mean() < 0.001 < np.abs(off_confidence - whole_confidence).mean()
