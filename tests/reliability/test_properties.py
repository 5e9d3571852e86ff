"""Property-based tests (hypothesis) over generated raster pairs: sizes, data types, nodata
placement, CRS, georeferencing and offsets. Every run either succeeds with its outputs exactly on
the before grid (nodata wherever the before image has none) and no partial file, or fails with a
one-line DeepCLError and no output file at all; anything else (a crash, another exception) fails."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes
from deepcl_core.errors import DeepCLError
from deepcl_core.outputs import CHANGE_NODATA
from reliability.rasters import PIXEL, assert_on_grid, files_in, geotransform, in_other_crs, read_band, write

DTYPES = [np.uint8, np.uint16, np.int16, np.float32]


@dataclass
class Image:
    values: np.ndarray  # (3, h, w)
    nodata: Optional[float]
    offset: Tuple[int, int]  # pixels from the before image's origin


@st.composite
def images(draw, shape: Optional[Tuple[int, int]] = None) -> Image:
    height = shape[0] if shape else draw(st.integers(1, 70))
    width = shape[1] if shape else draw(st.integers(1, 70))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2 ** 16))
    rng = np.random.default_rng(seed)
    high = 1.0 if dtype is np.float32 else min(np.iinfo(dtype).max, 3000)
    values = (rng.random((3, height, width)) * high).astype(dtype)
    nodata = None
    if draw(st.booleans()):  # a rectangle of nodata somewhere, possibly everywhere
        nodata = 0
        y0, x0 = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
        y1, x1 = draw(st.integers(y0 + 1, height)), draw(st.integers(x0 + 1, width))
        values[values == 0] = 1  # 0 marks nodata only inside the rectangle
        values[:, y0:y1, x0:x1] = 0
    if dtype is np.float32 and draw(st.booleans()):
        values[draw(st.integers(0, 2)), draw(st.integers(0, height - 1))] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf]))
    offset = (draw(st.integers(-80, 80)), draw(st.integers(-80, 80)))
    return Image(values, nodata, offset)


@st.composite
def pairs(draw) -> Tuple[Image, Image, str]:
    """(before, after, how the after image is referenced: same_crs, other_crs or none)."""
    before = draw(images())
    georeference = draw(st.sampled_from(["same_crs", "other_crs", "none"]))
    same_size = georeference == "none" and draw(st.booleans())
    after = draw(images(before.values.shape[1:] if same_size else None))
    return before, after, georeference


def write_pair(folder: Path, before: Image, after: Image, georeference: str) -> Tuple[Path, Path]:
    if georeference == "none":
        return (write(folder / "before.tif", before.values, None, None, before.nodata),
                write(folder / "after.tif", after.values, None, None, after.nodata))
    before_path = write(folder / "before.tif", before.values, geotransform(), nodata=before.nodata)
    x0, y0 = geotransform()[0] + after.offset[0] * PIXEL, geotransform()[3] - after.offset[1] * PIXEL
    after_path = write(folder / "after_utm.tif", after.values, geotransform(x0, y0), nodata=after.nodata)
    if georeference == "other_crs":
        after_path = in_other_crs(after_path, folder / "after.tif", 3857)
    return before_path, after_path


def valid_before(image: Image) -> np.ndarray:
    """Where the before image has data: finite in every band and no band at its nodata value."""
    valid = np.isfinite(image.values).all(axis=0)
    if image.nodata is not None:
        valid &= ~(image.values == image.nodata).any(axis=0)
    return valid


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=pairs())
def test_detection_succeeds_on_the_before_grid_or_fails_clearly(tiny_model, pair):
    before, after, georeference = pair
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        inputs = write_pair(folder, before, after, georeference)
        out = folder / "out"
        out.mkdir()
        outputs = DetectOutputs(out / "change.tif", out / "confidence.tif", polygons=out / "changes.gpkg")
        try:
            result = detect_changes(*inputs, outputs, DetectOptions(tile_size=32, overlap=8, device="cpu"),
                                    model=tiny_model)
        except DeepCLError as error:
            assert str(error) and "\n" not in str(error)
            assert files_in(out) == []
            return
        for path in (outputs.change, outputs.confidence):
            assert_on_grid(path, inputs[0])
        change = read_band(outputs.change)
        assert not (change[~valid_before(before)] != CHANGE_NODATA).any()
        assert result.valid_pixels == int((change != CHANGE_NODATA).sum())
        assert files_in(out) == ["change.tif", "changes.gpkg", "confidence.tif"]
