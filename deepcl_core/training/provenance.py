"""Where a model's weights came from, written into the model file (plain types only, so the file
loads with ``weights_only=True``)."""
from __future__ import annotations

import datetime
import hashlib
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from .. import __version__
from ..device import describe_device
from ..losses import LossConfig
from ..model_file import plain
from .options import TrainOptions
from .pairs import PairFiles


def hardware(device: torch.device) -> Dict[str, Any]:
    return {"device": describe_device(device), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": str(torch.__version__)}


def training_provenance(options: TrainOptions, train_pairs: Sequence[PairFiles], val_pairs: Sequence[PairFiles],
                        loss: LossConfig, device: torch.device, encoder_init: str, checkpoint: Dict[str, Any],
                        parent: Optional[Dict[str, Any]], validation_metrics: Dict[str, Any],
                        init_sha256: Optional[str] = None) -> Dict[str, Any]:
    """``validation_metrics``: the metrics of the model as written (after calibration) on the validation pairs;
    ``parent``: what is kept of the ``--init`` model's provenance, ``init_sha256`` its file's SHA-256."""
    # Paths real and absolute: relative ones would mean nothing outside the working folder of the run.
    validation = ("folders " + ", ".join(_real(d) for d in options.val_dirs) if options.val_dirs
                  else f"fraction {options.val_fraction} per data set, seed {options.seed}"
                  if options.val_fraction else "none (last epoch kept)")
    return plain({
        "trained_with": f"deepcl {__version__} train",
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command_line": options.command_line,
        "data_dirs": [_real(d) for d in options.data_dirs],
        "train_pairs": _pair_list(train_pairs),
        "validation_pairs": _pair_list(val_pairs),
        "validation": validation,
        "encoder_init": encoder_init,
        "init_model": None if options.init is None else _real(options.init),
        # The path alone does not say which model it was: an update of the plugin replaces the bundled one
        "init_model_sha256": init_sha256,
        "parent_provenance": parent,
        "epochs": int(checkpoint["epoch"]),
        "best_epoch": int(checkpoint["best_epoch"]),
        "iterations_per_epoch": options.iterations_per_epoch, "batch_size": options.batch_size,
        "crop": options.crop, "lr": options.lr, "weight_decay": options.weight_decay, "seed": options.seed,
        "optimizer": "AdamW, linear warm-up then cosine decay",
        "loss": asdict(loss),
        "augmentation": options.augment.to_dict(),
        "weight_average_decay": options.weight_average,
        "selection": ("the last epoch (no validation pairs)" if not val_pairs
                      else "best validation F1 at the thresholds calibration chooses" if options.calibrate
                      else f"best validation F1 at threshold {options.threshold}"),
        "seconds": round(float(checkpoint["seconds"]), 1),
        "hardware": hardware(device),
        "validation_metrics": validation_metrics,
        # What chose the epoch kept: at 1x, on the network's score, before calibration
        "selection_metrics": checkpoint["best_metrics"],
        # Each command that trained it (the first, then each --resume): batch, crop and device may differ
        "runs": checkpoint.get("runs", []),
        "history": checkpoint["history"],
    })


def record_recalibration(provenance: Dict[str, Any], pairs: Sequence[PairFiles], command_line: str) -> None:
    """A model calibrated anew (``deepcl calibrate``): when, by what and on which pairs, in its list
    of ``recalibrations``; its training's ``validation_metrics``, of the thresholds it had, become
    ``validation_metrics_before_recalibration`` (they read as those of the model as written)."""
    if "validation_metrics" in provenance:
        provenance["validation_metrics_before_recalibration"] = provenance.pop("validation_metrics")
    provenance.setdefault("recalibrations", []).append(plain({
        "calibrated_with": f"deepcl {__version__} calibrate",
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command_line": command_line, "pairs": _pair_list(pairs)}))


def file_sha256(path: Path) -> str:
    """The SHA-256 of ``path``'s bytes, streamed (an image may be larger than the memory spared for it;
    hashlib.file_digest is Python 3.11's)."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pair_list(pairs: Sequence[PairFiles]) -> List[Dict[str, str]]:
    """Each pair's files, and its label's SHA-256: a label burnt from polygons (Processing's training
    from layers) is gone after the run, and a label edited since is told apart from the one learnt."""
    return [{**pair.resolved().to_dict(), "label_sha256": file_sha256(pair.label)} for pair in pairs]


def _real(path: os.PathLike) -> str:
    return str(Path(path).resolve())
