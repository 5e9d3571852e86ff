"""What ``train`` is asked to do and what it reports back."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..band_choice import check_band_names
from ..confidence_calibration import PlattScaling
from ..errors import InputError
from ..outputs import same_file
from ..model.encoders import ENCODERS
from ..model.network import NETWORK_MULTIPLE
from .sampler import AugmentConfig

DEFAULT_BANDS = ("red", "green", "blue")


@dataclass
class TrainOptions:
    data_dirs: Sequence[Path]
    out: Path
    # fine-tune this model: its config, bands and normalisation are kept, and its thresholds, confidence
    # scalings and input scales where calibration on the validation pairs does not measure them anew
    init: Optional[Path] = None
    epochs: int = 20
    val_dirs: Sequence[Path] = ()  # validation pairs; when empty, ``val_fraction`` of the pairs is held out
    val_fraction: float = 0.2  # 0: no validation, the last epoch's weights are kept
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False  # replace an earlier run's model file and checkpoint, starting anew
    encoder: Optional[str] = None  # None: mobilenet_v2, or the --init model's
    gamma: float = 2.0
    hscl_weight: float = 1.0
    # HSCL margins (METHOD's starting values, to be measured by ablation): unchanged pixels' distance
    # should stay under m_u, changed pixels' exceed m_c
    margin_unchanged: float = 0.3
    margin_changed: float = 1.2
    prior_guidance: bool = True
    crop: int = 256
    batch_size: int = 8
    iterations_per_epoch: int = 200
    lr: float = 1e-3
    weight_decay: float = 1e-4
    bands: Optional[Sequence[str]] = None  # None: red, green, blue, or the --init model's
    threshold: float = 0.5  # for validation F1 while training; the model's own when not calibrated (without init)
    calibrate: bool = True  # the model's threshold chosen on the validation pairs (training/calibration.py)
    pretrained: bool = True  # ImageNet weights for a new MobileNetV2 encoder
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    weight_average: float = 0.995  # decay of the moving average of weights validated and kept; 0: none
    val_tile: int = 768  # as detection tiles (DetectOptions.tile_size)
    checkpoint: Optional[Path] = None  # None: next to ``out``
    checkpoint_kept: bool = True  # False: the caller removes the checkpoint after the run (Processing cannot resume)
    command_line: Optional[str] = None  # recorded in the provenance

    def validate(self) -> None:
        # inf passes the range checks below (a learning rate of inf is "positive") and NaN has no
        # place in them: either makes every loss NaN, and a NaN model would be written.
        for name, value in (("learning rate", self.lr), ("weight decay", self.weight_decay), ("gamma", self.gamma),
                            ("HSCL weight", self.hscl_weight), ("validation fraction", self.val_fraction),
                            ("unchanged margin", self.margin_unchanged), ("changed margin", self.margin_changed),
                            ("weight average decay", self.weight_average), ("threshold", self.threshold)):
            if not math.isfinite(value):
                raise InputError(f"{name} must be a finite number; got {value}")
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1; got {self.epochs}"),
            # numpy's and torch's generators take seeds of 0 to 2**63 - 1 (a negative one failed after loading)
            (0 <= self.seed < 2 ** 63, f"seed must be a whole number from 0 to {2 ** 63 - 1}; got {self.seed}"),
            (self.iterations_per_epoch >= 1,
             f"iterations per epoch must be at least 1; got {self.iterations_per_epoch}"),
            (self.batch_size >= 2, f"batch size must be at least 2 (batch normalisation); got {self.batch_size}"),
            (self.crop >= NETWORK_MULTIPLE and self.crop % NETWORK_MULTIPLE == 0,
             f"crop must be a multiple of {NETWORK_MULTIPLE} and at least {NETWORK_MULTIPLE}; got {self.crop}"),
            (self.val_tile >= NETWORK_MULTIPLE and self.val_tile % NETWORK_MULTIPLE == 0,
             f"validation tile must be a multiple of {NETWORK_MULTIPLE}; got {self.val_tile}"),
            (0.0 <= self.val_fraction < 1.0, f"validation fraction must lie in [0, 1); got {self.val_fraction}"),
            (self.lr > 0, f"learning rate must be positive; got {self.lr}"),
            (0.0 <= self.weight_average < 1.0, f"weight average decay must lie in [0, 1); got {self.weight_average}"),
            (self.gamma >= 0, f"gamma must not be negative; got {self.gamma}"),
            (self.hscl_weight >= 0, f"HSCL weight must not be negative; got {self.hscl_weight}"),
            # The distance of two unit feature vectors lies in [0, 2]: a margin outside it, or m_u ≥ m_c,
            # asks what no pair of features can satisfy
            (0.0 <= self.margin_unchanged < self.margin_changed <= 2.0,
             f"the HSCL margins must satisfy 0 ≤ unchanged margin < changed margin ≤ 2 (the distance of two unit "
             f"feature vectors lies in [0, 2]); got unchanged {self.margin_unchanged:g}, changed "
             f"{self.margin_changed:g}"),
            (0.0 < self.threshold < 1.0, f"threshold must lie between 0 and 1; got {self.threshold}"),
            (self.encoder is None or self.encoder in ENCODERS,
             f"unknown encoder {self.encoder!r}; choose one of {', '.join(sorted(ENCODERS))}"),
            (not (self.resume and self.overwrite),
             "resume (continue from the checkpoint) and overwrite (start anew) exclude each other; choose one"),
            (bool(self.data_dirs), "give at least one data folder"),
            (self.bands is None or len(self.bands) > 0, "give at least one band name"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        if self.bands is not None:  # before the pairs are read, which would each be blamed for it
            check_band_names(self.bands)
        if Path(self.out).is_dir():
            raise InputError(f"--out {self.out} is a folder; give a model file name such as model.pt")
        if self.init is not None:
            check_not_the_initial_model(Path(self.out), Path(self.init))

    def check_model_file_name(self) -> None:
        """:func:`check_model_file_name` of ``out``. Apart from :meth:`validate`, so that an --out
        that is one of the pairs' files is refused as such first."""
        check_model_file_name(Path(self.out))


def check_not_the_initial_model(out: Path, init: Path) -> None:
    """A fine-tune's model file must not replace the model it starts from: the parent its record
    names (with its SHA-256) would be gone, and with it the way back. The same file under another
    spelling too (a case-insensitive file system, a hard link)."""
    if same_file(out, init):
        raise InputError(f"the trained model would replace the initial model {init} (--init), which its record "
                         "names as its parent; choose another --out")


def check_model_file_name(out: Path) -> None:
    """``out`` ends in .pt: "models/" reaches here as "models" (Path drops the slash) and would
    become a file of that name; detection and evaluation open .pt model files, as Processing's
    training requires."""
    if out.suffix.lower() != ".pt":
        raise InputError(f"--out {out} is not a model file name; give one ending in .pt, such as "
                         f"{out.with_suffix('.pt')}, or {out / 'model.pt'} to write into the folder {out}")


@dataclass
class TrainResult:
    out: Path
    checkpoint: Path
    epochs_completed: int
    best_epoch: int
    # pooled validation metrics of the model as written (after calibration, as detection runs it); {} without
    # validation. Those that chose the epoch are in ``history`` and the provenance's selection_metrics.
    best_metrics: Dict[str, float]
    history: List[Dict[str, float]]  # one entry per epoch: losses, validation F1, seconds
    train_pairs: List[str]
    val_pairs: List[str]
    seconds: float  # training time over all runs (a resumed run adds to the earlier ones)
    threshold: float  # the model's decision threshold (calibrated on the validation pairs, or ``threshold``)
    thresholds_by_pixel_size: Tuple[Tuple[float, float], ...] = ()  # ModelBundle's: for coarse imagery
    input_scales_by_pixel_size: Tuple[Tuple[float, int], ...] = ()  # likewise
    platt_scaling: PlattScaling = field(default_factory=PlattScaling)  # ModelBundle's
    platt_scalings_by_pixel_size: Tuple[Tuple[float, PlattScaling], ...] = ()  # likewise
    # fine-tuning: each class of pixel size's settings against the initial model's, in plain words
    settings_against_initial_model: List[str] = field(default_factory=list)
