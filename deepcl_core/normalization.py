"""Radiometric normalisation that treats 8-bit RGB and Sentinel-2 reflectance alike.

Each band is stretched between robust low and high percentiles of its own image (computed once per
image from a sample, never per tile, so tiles agree; on the pixels both dates cover,
:mod:`.pair_statistics`), clipped to [0, 1], then standardised with the mean and std the encoder was
trained with (ImageNet's by default).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class NormalizationSpec:
    """How the model expects its input; stored in the model file."""

    low_percentile: float = 2.0
    high_percentile: float = 98.0
    mean: Tuple[float, ...] = IMAGENET_MEAN  # one value per band, or one for all
    std: Tuple[float, ...] = IMAGENET_STD

    def to_dict(self) -> Dict:
        return {"method": "percentile_stretch", **asdict(self)}

    @classmethod
    def from_dict(cls, values: Dict) -> "NormalizationSpec":
        if values.get("method", "percentile_stretch") != "percentile_stretch":
            raise ValueError(f"unknown normalisation {values.get('method')!r}")
        return cls(low_percentile=float(values["low_percentile"]), high_percentile=float(values["high_percentile"]),
                   mean=tuple(float(v) for v in values["mean"]), std=tuple(float(v) for v in values["std"]))

    def per_band(self, count: int) -> Tuple[np.ndarray, np.ndarray]:
        """Mean and std as (count, 1, 1) arrays; extra bands reuse the mean of the given values."""
        def expand(values: Sequence[float]) -> np.ndarray:
            values = list(values)
            values += [float(np.mean(values))] * max(0, count - len(values))
            return np.asarray(values[:count], dtype=np.float32).reshape(count, 1, 1)
        return expand(self.mean), expand(self.std)


@dataclass(frozen=True)
class ImageStretch:
    """The low and high value of each band of one image."""

    low: np.ndarray  # (bands, 1, 1) float32
    high: np.ndarray

    @classmethod
    def from_sample(cls, sample: np.ndarray, valid: np.ndarray, spec: NormalizationSpec) -> "ImageStretch":
        """``sample``: (bands, h, w) pixel values; ``valid``: (h, w) bool. An image without a valid
        pixel or with a constant band gets a stretch that maps it to mid-grey, not a division by 0."""
        bands = sample.shape[0]
        low = np.zeros(bands, np.float32)
        high = np.ones(bands, np.float32)
        every_valid = bool(valid.all())
        for band in range(bands):
            if sample.dtype.kind == "f":
                values = sample[band][valid & np.isfinite(sample[band])]
            else:  # integers are always finite; most images are valid everywhere: no masked copy
                values = sample[band].reshape(-1) if every_valid else sample[band][valid]
            if values.size:
                low[band], high[band] = percentiles(values, (spec.low_percentile, spec.high_percentile))
                if high[band] <= low[band]:  # constant band: centre it
                    low[band], high[band] = low[band] - 0.5, low[band] + 0.5
        return cls(low.reshape(-1, 1, 1), high.reshape(-1, 1, 1))


def percentiles(values: np.ndarray, percents: Sequence[float]) -> np.ndarray:
    """``np.percentile(values, percents)`` (linear interpolation) of a 1-D array. Unsigned integers
    of up to 16 bits (8-bit RGB, Sentinel-2 digital numbers) are counted in a histogram, one pass,
    instead of partially sorted."""
    if not _is_small_unsigned(values):
        return np.percentile(values, percents)
    ends = np.cumsum(np.bincount(values))  # ends[v]: how many values are at most v
    ranks = np.asarray(percents, np.float64) / 100.0 * (values.size - 1)
    below = np.floor(ranks)
    lower = np.searchsorted(ends, below, side="right")  # the smallest v with more than `below` values up to it
    upper = np.searchsorted(ends, np.minimum(below + 1, values.size - 1), side="right")
    return lower + (upper - lower) * (ranks - below)


def _is_small_unsigned(values: np.ndarray) -> bool:
    return values.dtype.kind == "u" and values.dtype.itemsize <= 2


def normalize(pixels: np.ndarray, stretch: ImageStretch, spec: NormalizationSpec,
              valid: Optional[np.ndarray] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
    """(bands, h, w) raw values (float32, or integers that float32 holds exactly) → float32 network
    input. Pixels outside ``valid`` (h, w), which holds every NaN, become 0; without it NaN becomes
    the band mean (also 0 after standardisation).

    Stretch, clip to [0, 1] and standardisation are one increasing affine map followed by a clip, so
    they run as multiply, add, maximum and minimum in place, band by band with scalars (faster than
    ``np.clip`` with (bands, 1, 1) bounds): normalising is most of the reader's work on large images.
    ``out``: a float32 array of the pixels' shape to write into (a slot of a batch), else a new one."""
    mean, std = (values.reshape(-1) for values in spec.per_band(pixels.shape[0]))
    low_value, span = stretch.low.reshape(-1), (stretch.high - stretch.low).reshape(-1)
    scale = (1.0 / (span * std)).astype(np.float32)
    offset = ((-(low_value / span) - mean) / std).astype(np.float32)
    low, high = (-mean / std).astype(np.float32), ((1.0 - mean) / std).astype(np.float32)
    out = np.empty(pixels.shape, np.float32) if out is None else out
    with np.errstate(over="ignore"):  # a nodata value of float32's lowest overflows; such pixels are set to 0 below
        for band in range(pixels.shape[0]):
            values = out[band]
            np.multiply(pixels[band], scale[band], out=values, dtype=np.float32)
            values += offset[band]
            np.maximum(values, low[band], out=values)
            np.minimum(values, high[band], out=values)
    if valid is None:
        out[np.isnan(out)] = 0.0
    elif not valid.all():  # one pass for both: NaN and every other invalid pixel
        np.copyto(out, 0.0, where=~valid)
    return out
