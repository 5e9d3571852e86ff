"""The two images' percentile stretches, from samples taken at the same places of the before grid
and on the pixels valid in both. The outputs cover only those pixels; an image stretched over ground
the other lacks (a partial overlap, a date with nodata) is stretched differently from the other, and
the difference shows as change."""
from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal

from . import sentinel2
from .errors import InputError
from .normalization import ImageStretch, NormalizationSpec
from .raster_io import read_sample, sample_plan


@dataclass(frozen=True)
class PairSample:
    """Both images' sampled pixels (bands, 1, n) and the pixels (1, n) each is stretched on."""

    before: np.ndarray
    valid_before: np.ndarray
    after: np.ndarray
    valid_after: np.ndarray

    def same_pixels(self) -> bool:
        """Whether the two samples are one image's (the same layer chosen twice, a copy of it)."""
        return (self.before.shape == self.after.shape and np.array_equal(self.valid_before, self.valid_after)
                and np.array_equal(self.before, self.after))

    def stretches(self, spec: NormalizationSpec) -> Tuple[ImageStretch, ImageStretch]:
        return (ImageStretch.from_sample(self.before, self.valid_before, spec),
                ImageStretch.from_sample(self.after, self.valid_after, spec))


def read_pair_sample(before: gdal.Dataset, bands_before: Sequence[int], after: gdal.Dataset,
                     bands_after: Sequence[int], roles: Tuple[str, str] = ("before", "after"),
                     helper: Optional[Executor] = None) -> PairSample:
    """Samples of ``before`` and of ``after`` (on the before grid) at the same windows, the after
    image's read in ``helper`` when given (GDAL decodes without the GIL). Both are stretched on the
    pixels valid in both. A sample of the whole image without such a pixel is an :class:`InputError`;
    a sample of windows can miss a small shared area, so then each image keeps its own valid pixels
    and the run finds out from the tiles (:func:`~deepcl_core.detect.detect_changes`)."""
    windows = sample_plan(before, bands_before[0])
    read_after = partial(read_sample, after, bands_after, roles[1], windows=windows)
    future = helper.submit(read_after) if helper is not None else None
    sample_before, valid_before = read_sample(before, bands_before, roles[0], windows=windows)
    sample_after, valid_after = future.result() if future is not None else read_after()
    for valid, role, image in ((valid_before, roles[0], before), (valid_after, roles[1], after)):
        if not valid.any():
            raise InputError(f"the {role} image has no valid pixel (all nodata or not finite) in the "
                             f"area it shares with the other image{sentinel2.masked_note(image)}")
    shared = valid_before & valid_after
    if shared.any():
        valid_before = valid_after = shared
    elif windows == [(0, 0, before.RasterXSize, before.RasterYSize)]:
        raise InputError(no_shared_pixel_message(roles))
    return PairSample(sample_before, valid_before, sample_after, valid_after)


def no_shared_pixel_message(roles: Tuple[str, str] = ("before", "after")) -> str:
    return (f"the {roles[0]} and {roles[1]} images have no valid pixel in common: wherever one has data, "
            "the other is nodata (or not finite); choose two images that cover the same ground")
