"""Augmentation for DeepCL training (METHOD.md): pseudo-change (what must *not* be called change:
radiometric and seasonal differences, misregistration by up to two pixels, small rotations, noise
and blur), synthetic change pasted from real patches, the same geometry on both dates, and a
random swap of the dates.

Images here are (bands, h, w) float32 in "unit" space: the normalised network input mapped back to
the [0, 1] percentile stretch, where brightness, gamma and haze mean what they say.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..normalization import NormalizationSpec


@dataclass(frozen=True)
class PseudoChangeStrength:
    """Ranges of the pseudo-change transform; each value is drawn uniformly in ±range (or in range)."""

    brightness: float = 0.12  # added to every band
    contrast: float = 0.25  # log-scale factor around the image mean
    gamma: float = 0.35  # log-scale exponent
    colour: float = 0.08  # per-band gain and offset, and a near-identity band-mixing matrix (season, sensor)
    haze: Tuple[float, float] = (0.0, 0.3)  # blend towards a bright veil, brightest in blue (haze_veil)
    shift_px: float = 2.0  # translation in pixels (subpixel values too), drawn within a disk of this radius
    # METHOD: misregistration of sub-pixel to 2 pixels with small rotations. A rotation moves the
    # farthest pixel by angle × half-diagonal (3° moved a 256 crop's corners 9 px, an 800² scene's 30 px),
    # so the angle is limited to move no pixel of what is warped by more than rotation_px
    rotation_px: float = 1.0
    rotation_deg: float = 3.0  # cap on the angle, reached only by images under ~27 px square
    noise: Tuple[float, float] = (0.0, 0.03)  # standard deviation of Gaussian noise
    blur_sigma: Tuple[float, float] = (0.0, 1.2)

    def to_dict(self) -> Dict:
        return asdict(self)


def to_unit(image: np.ndarray, spec: NormalizationSpec) -> np.ndarray:
    mean, std = spec.per_band(image.shape[0])
    return image * std + mean


def from_unit(image: np.ndarray, spec: NormalizationSpec) -> np.ndarray:
    """Back to the network's input; clipped to [0, 1] first, as the percentile stretch is."""
    mean, std = spec.per_band(image.shape[0])
    return ((np.clip(image, 0.0, 1.0) - mean) / std).astype(np.float32)


# Haze veil brightness by band: scattering by haze grows towards short wavelengths, so the veil is
# brightest in blue and faintest in the near and shortwave infrared. Sentinel-2 and Landsat 8/9 codes
# agree from B2 to B4 (band_choice.BAND_ALIASES reads B8 as near infrared, as here).
_VEIL_BLUE, _VEIL_GREEN, _VEIL_RED, _VEIL_INFRARED = 0.9, 0.85, 0.8, 0.75
_VEIL_BY_NAME = {
    **dict.fromkeys(("coastal", "aerosol", "b01", "b1", "blue", "b02", "b2"), _VEIL_BLUE),
    **dict.fromkeys(("green", "b03", "b3"), _VEIL_GREEN), **dict.fromkeys(("red", "b04", "b4"), _VEIL_RED),
    **dict.fromkeys(("rededge", "b05", "b5", "b06", "b6", "b07", "b7", "nir", "infrared", "b08", "b8", "b8a", "b09",
                     "b9", "swir", "swir1", "swir2", "b10", "b11", "b12"), _VEIL_INFRARED),
}
# A band of unknown name gets a neutral veil: brightening without a tint the band may not have
_VEIL_UNKNOWN = (_VEIL_BLUE + _VEIL_INFRARED) / 2


def haze_veil(bands: int, band_names: Optional[Sequence[str]] = None) -> np.ndarray:
    """The veil haze blends towards, (bands, 1, 1): by each band's name (a word or a sensor code, any
    case, e.g. "blue", "B08", "NIR (B08)"); grey where names are unknown or not given."""
    names = list(band_names) if band_names is not None and len(band_names) == bands else [""] * bands
    return np.array([_veil_of(name) for name in names], np.float32).reshape(bands, 1, 1)


def _veil_of(name: str) -> float:
    words = re.findall(r"[a-z0-9]+", str(name).lower())
    found = [_VEIL_BY_NAME[word] for word in words if word in _VEIL_BY_NAME]
    return found[-1] if found else _VEIL_UNKNOWN  # "NIR (B08)": the code, last, agrees with the word


def radiometric(image: np.ndarray, rng: np.random.Generator,
                strength: PseudoChangeStrength = PseudoChangeStrength(),
                band_names: Optional[Sequence[str]] = None) -> np.ndarray:
    """Brightness, contrast, gamma, colour balance, band mixing (a seasonal hue) and haze (its veil by
    ``band_names``: :func:`haze_veil`)."""
    bands = image.shape[0]
    out = np.clip(image, 0.0, 1.0)
    out = out ** math.exp(rng.uniform(-strength.gamma, strength.gamma))
    mean = out.mean(axis=(1, 2), keepdims=True)
    out = (out - mean) * math.exp(rng.uniform(-strength.contrast, strength.contrast)) + mean
    mixing = np.eye(bands) + rng.uniform(-strength.colour, strength.colour, (bands, bands)) * (1 - np.eye(bands))
    mixing /= mixing.sum(axis=1, keepdims=True)  # rows sum to 1: a grey stays grey
    out = np.tensordot(mixing.astype(np.float32), out, axes=1)
    gain = 1 + rng.uniform(-strength.colour, strength.colour, (bands, 1, 1))
    offset = rng.uniform(-strength.colour, strength.colour, (bands, 1, 1)) / 2
    out = out * gain + offset + rng.uniform(-strength.brightness, strength.brightness)
    haze = rng.uniform(*strength.haze)
    out = (1 - haze) * out + haze * haze_veil(bands, band_names)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def misregister(image: np.ndarray, rng: np.random.Generator,
                strength: PseudoChangeStrength = PseudoChangeStrength()) -> np.ndarray:
    """A shift of up to ``shift_px`` in any direction and a small rotation about the centre that moves
    no pixel by more than ``rotation_px``, whatever the image's size: together at most
    shift_px + rotation_px (bilinear; borders mirrored, so no hole appears that the network could learn
    to call change)."""
    _, height, width = image.shape
    angle = rng.uniform(-1.0, 1.0) * max_rotation(height, width, strength)
    # uniform in the disk: a per-axis draw reached shift_px·√2 on the diagonals
    radius = strength.shift_px * math.sqrt(rng.random())
    direction = rng.uniform(-math.pi, math.pi)
    shift = (radius * math.cos(direction), radius * math.sin(direction))
    # affine_grid works in [-1, 1] coordinates: a pixel is 2 / size there.
    theta = torch.tensor([[math.cos(angle), -math.sin(angle) * height / width, 2 * shift[0] / width],
                          [math.sin(angle) * width / height, math.cos(angle), 2 * shift[1] / height]],
                         dtype=torch.float32)[None]
    tensor = torch.from_numpy(np.ascontiguousarray(image))[None]
    grid = F.affine_grid(theta, list(tensor.shape), align_corners=False)
    warped = F.grid_sample(tensor, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return warped[0].numpy()


def max_rotation(height: int, width: int, strength: PseudoChangeStrength = PseudoChangeStrength()) -> float:
    """The largest angle (radians) misregister draws for an image of this size: a rotation by a about
    the centre moves a pixel r from it by 2·r·sin(a/2) ≤ r·a, r at most the half-diagonal."""
    half_diagonal = max(math.hypot(height, width) / 2, 1.0)
    return min(math.radians(strength.rotation_deg), strength.rotation_px / half_diagonal)


def noise_and_blur(image: np.ndarray, rng: np.random.Generator,
                   strength: PseudoChangeStrength = PseudoChangeStrength()) -> np.ndarray:
    sigma = rng.uniform(*strength.blur_sigma)
    out = gaussian_blur(image, sigma) if sigma > 0.3 else image
    noise = rng.uniform(*strength.noise)
    return (out + rng.normal(0.0, noise, out.shape).astype(np.float32)).astype(np.float32)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    taps /= taps.sum()
    bands = image.shape[0]
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).repeat(bands, 1, 1, 1), groups=bands)
    x = F.conv2d(x, taps.view(1, 1, -1, 1).repeat(bands, 1, 1, 1), groups=bands)
    return x[0].numpy()


def pseudo_change(image: np.ndarray, rng: np.random.Generator,
                  strength: PseudoChangeStrength = PseudoChangeStrength(),
                  band_names: Optional[Sequence[str]] = None) -> np.ndarray:
    """T(x): the same place, nothing changed, seen differently. Unit-space in and out; ``band_names``
    colour the haze (:func:`haze_veil`)."""
    out = radiometric(image, rng, strength, band_names)
    if rng.random() < 0.7:
        out = misregister(out, rng, strength)
    if rng.random() < 0.6:
        out = noise_and_blur(out, rng, strength)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def blob_mask(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A filled ellipse or rectangle (buildings and fields are both common change shapes)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if rng.random() < 0.5:
        return np.ones((height, width), bool)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    return ((yy - cy) / max(cy, 0.5)) ** 2 + ((xx - cx) / max(cx, 0.5)) ** 2 <= 1.0


def paste_change(target: np.ndarray, label: np.ndarray, valid: np.ndarray, donor: np.ndarray,
                 donor_valid: np.ndarray, rng: np.random.Generator) -> None:
    """Paste ``donor`` (bands, h, w) with a random blob shape at a random place of ``target`` (in
    place) and mark the pasted pixels changed. Only pixels valid in both are pasted."""
    _, height, width = donor.shape
    y = int(rng.integers(0, target.shape[1] - height + 1))
    x = int(rng.integers(0, target.shape[2] - width + 1))
    mask = blob_mask(height, width, rng) & donor_valid & valid[y:y + height, x:x + width]
    region = target[:, y:y + height, x:x + width]
    region[:, mask] = donor[:, mask]
    label[y:y + height, x:x + width][mask] = 1


def same_geometry(arrays: Tuple[np.ndarray, ...], rng: np.random.Generator) -> Tuple[np.ndarray, ...]:
    """One random flip and quarter turn applied to every array (last two axes), so both dates and
    the label stay registered."""
    turns = int(rng.integers(0, 4))
    flip = rng.random() < 0.5
    out = []
    for array in arrays:
        array = np.rot90(array, turns, axes=(-2, -1))
        out.append(np.ascontiguousarray(array[..., ::-1] if flip else array))
    return tuple(out)
