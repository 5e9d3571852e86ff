"""Random training crops from pairs held in memory, with the augmentation of METHOD.md.

Changed pixels are rare (under 4 % in most scenes), so a share of the crops is centred near a
changed pixel; pairs are drawn uniformly so that a few large scenes do not drown the small tiles.
A share of the crops is zoomed (a smaller or larger window resized to the crop), so that the
network meets objects at more sizes than the four pixel sizes of the training scenes give."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..normalization import NormalizationSpec
from .augment import PseudoChangeStrength, from_unit, paste_change, pseudo_change, radiometric, same_geometry, \
    to_unit
from .pairs import LoadedPair


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities per crop; stored in the model's provenance."""

    change_crop: float = 0.5  # centre the crop near a changed pixel (when the pair has one)
    pseudo_change: float = 0.2  # replace the pair by (x, T(x)), labelled all unchanged
    synthetic_change: float = 0.3  # paste a real patch from elsewhere into one date, labelled changed
    radiometric: float = 0.5  # per date, on real pairs: change looks the same under other light
    swap_dates: float = 0.5
    # take a window zoom times smaller (or larger) than the crop and resize it to the crop: a
    # user's imagery may have any pixel size, and the training scenes cover only 0.5, 1.5, 2 and 10 m
    zoom: float = 0.5
    zoom_range: Tuple[float, float] = (0.5, 2.0)
    patch_size: Tuple[int, int] = (12, 72)  # side of a synthetic change, pixels
    strength: PseudoChangeStrength = field(default_factory=PseudoChangeStrength)

    def to_dict(self) -> Dict:
        return asdict(self)


@dataclass
class Batch:
    before: np.ndarray  # (N, bands, crop, crop) float32
    after: np.ndarray
    label: np.ndarray  # (N, 1, crop, crop) float32 in {0, 1}
    valid: np.ndarray  # (N, 1, crop, crop) float32 in {0, 1}


class CropSampler:
    def __init__(self, pairs: Sequence[LoadedPair], crop: int, spec: NormalizationSpec,
                 augment: AugmentConfig = AugmentConfig(), bands: Optional[Sequence[str]] = None) -> None:
        """``bands``: the pairs' band names (the model's), which colour the haze of the pseudo-change and
        radiometric augmentation (blue brightest); None: a grey veil."""
        self.pairs = list(pairs)
        self.crop = crop
        self.spec = spec
        self.augment = augment
        self.bands = None if bands is None else tuple(bands)
        self.changed = [np.flatnonzero((p.label > 0) & p.valid) for p in self.pairs]

    def batch(self, size: int, rng: np.random.Generator) -> Batch:
        samples = [self.sample(rng) for _ in range(size)]
        before, after, label, valid = (np.stack(parts) for parts in zip(*samples))
        return Batch(before, after, label[:, None].astype(np.float32), valid[:, None].astype(np.float32))

    def sample(self, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        index = int(rng.integers(len(self.pairs)))
        before, after, label, valid = self._crop(index, rng)
        a = self.augment
        if rng.random() < a.pseudo_change:
            source = before if rng.random() < 0.5 else after
            before = source
            after = from_unit(pseudo_change(to_unit(source, self.spec), rng, a.strength, self.bands), self.spec)
            label = np.zeros_like(label)
        else:
            if rng.random() < a.radiometric:
                before = from_unit(radiometric(to_unit(before, self.spec), rng, a.strength, self.bands), self.spec)
            if rng.random() < a.radiometric:
                after = from_unit(radiometric(to_unit(after, self.spec), rng, a.strength, self.bands), self.spec)
        if rng.random() < a.synthetic_change:
            self._paste(before if rng.random() < 0.5 else after, label, valid, rng)
        if rng.random() < a.swap_dates:
            before, after = after, before
        before, after, label, valid = same_geometry((before, after, label, valid), rng)
        return before * valid, after * valid, label, valid

    def _crop(self, index: int, rng: np.random.Generator) -> Tuple[np.ndarray, ...]:
        pair = self.pairs[index]
        height, width = pair.shape
        side = self._window_side(pair, rng)
        changed = self.changed[index]
        if changed.size and rng.random() < self.augment.change_crop:
            cy, cx = divmod(int(changed[rng.integers(changed.size)]), width)
            y = cy - int(rng.integers(side))
            x = cx - int(rng.integers(side))
        else:
            y = int(rng.integers(max(1, height - side + 1)))
            x = int(rng.integers(max(1, width - side + 1)))
        y = min(max(y, 0), max(0, height - side))
        x = min(max(x, 0), max(0, width - side))
        windows = [_window(array, y, x, side) for array in (pair.before, pair.after, pair.label, pair.valid)]
        if side == self.crop:
            return tuple(windows)
        return resize_crop(*windows, self.crop)

    def _window_side(self, pair: LoadedPair, rng: np.random.Generator) -> int:
        """The crop's side, or with probability ``zoom`` that side divided by a factor drawn
        log-uniformly in ``zoom_range``; a zoomed-out window stays inside the pair."""
        if rng.random() >= self.augment.zoom:
            return self.crop
        low, high = self.augment.zoom_range
        factor = math.exp(rng.uniform(math.log(low), math.log(high)))
        side = int(round(self.crop / factor))
        return max(8, min(side, max(self.crop, min(pair.shape))))

    def _paste(self, target: np.ndarray, label: np.ndarray, valid: np.ndarray, rng: np.random.Generator) -> None:
        """A real patch from a random place of a random pair and date: real texture, new content."""
        low, high = self.augment.patch_size
        high = max(low, min(high, self.crop // 2))
        side_y, side_x = (int(rng.integers(low, high + 1)) for _ in range(2))
        donor = self.pairs[int(rng.integers(len(self.pairs)))]
        height, width = donor.shape
        if height < side_y or width < side_x or self.crop < max(side_y, side_x):
            return
        y, x = int(rng.integers(height - side_y + 1)), int(rng.integers(width - side_x + 1))
        image = donor.before if rng.random() < 0.5 else donor.after
        paste_change(target, label, valid, image[:, y:y + side_y, x:x + side_x],
                     donor.valid[y:y + side_y, x:x + side_x], rng)


def resize_crop(before: np.ndarray, after: np.ndarray, label: np.ndarray, valid: np.ndarray,
                size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A square window resized to size × size: images bilinear (antialiased when shrinking), the
    label changed where at least half of a pixel was, valid only where all of it was."""
    images = torch.from_numpy(np.stack([before, after]))
    masks = torch.from_numpy(np.stack([label, valid]).astype(np.float32))[:, None]
    shrink = images.shape[-1] > size
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    masks = F.interpolate(masks, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)[:, 0]
    return (images[0].numpy(), images[1].numpy(), (masks[0] >= 0.5).numpy().astype(label.dtype),
            (masks[1] >= 1.0 - 1e-4).numpy())


def _window(array: np.ndarray, y: int, x: int, size: int) -> np.ndarray:
    """A size × size window of the last two axes; zero-padded (and so invalid) past the image."""
    piece = array[..., y:y + size, x:x + size]
    pad_y, pad_x = size - piece.shape[-2], size - piece.shape[-1]
    if pad_y or pad_x:
        piece = np.pad(piece, [(0, 0)] * (piece.ndim - 2) + [(0, pad_y), (0, pad_x)])
    return np.array(piece, copy=True)
