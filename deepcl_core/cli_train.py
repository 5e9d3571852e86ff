"""``deepcl train`` and ``deepcl evaluate``: argument parsing and the JSON they print; the work is
done by :func:`deepcl_core.training.train` and :func:`deepcl_core.evaluation.evaluate`. The engine
(torch, GDAL, numpy) is imported inside the functions, as in :mod:`deepcl_core.cli`."""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict

from .cli_output import print_json


def add_train_parser(commands: argparse._SubParsersAction) -> None:
    from .model.encoders import ENCODERS

    parser = commands.add_parser("train", help="train or fine-tune a model on labelled pairs",
                                 description="Train DeepCL on labelled pairs found below DATA_DIR (folders with "
                                             "before.*, after.*, label.*, or the LEVIR-CD A/ B/ label/ layout).")
    parser.add_argument("data_dirs", type=Path, nargs="+", metavar="DATA_DIR", help="folder(s) searched for pairs")
    parser.add_argument("--out", type=Path, required=True, help="model file to write (.pt); the checkpoint "
                                                                "goes next to it as OUT.ckpt")
    parser.add_argument("--init", type=Path, help="fine-tune this model file instead of starting anew (its encoder, "
                                                  "bands, prior guidance and normalisation are kept, and its "
                                                  "thresholds, scalings and input scales where the validation "
                                                  "pairs do not choose them anew)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs (default 20)")
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--val", type=Path, nargs="+", default=(), metavar="DIR", help="validation pair folder(s)")
    split.add_argument("--val-fraction", type=float, default=0.2,
                       help="share of each data set's pairs held out for validation (default 0.2; 0: none)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT.ckpt after its last epoch")
    parser.add_argument("--overwrite", action="store_true",
                        help="start anew even where OUT or OUT.ckpt exists, and replace them")
    parser.add_argument("--encoder", choices=sorted(ENCODERS),
                        help="encoder (default mobilenet_v2; with --init the --init model's, and another is refused)")
    parser.add_argument("--gamma", type=float, default=2.0, help="HSCL focusing exponent (default 2; 0: plain)")
    parser.add_argument("--hscl-weight", type=float, default=1.0, help="HSCL weight λ (default 1; 0: BCE+Dice only)")
    parser.add_argument("--margin-unchanged", type=float, default=0.3, metavar="M_U",
                        help="HSCL margin m_u: unchanged pixels' feature distance is pushed below it (default 0.3)")
    parser.add_argument("--margin-changed", type=float, default=1.2, metavar="M_C",
                        help="HSCL margin m_c: changed pixels' feature distance is pushed above it (default 1.2; "
                             "0 ≤ m_u < m_c ≤ 2)")
    parser.add_argument("--no-prior", action="store_true",
                        help="decoder without distance-map guidance (ablation); refused with --init of a model "
                             "that has it")
    parser.add_argument("--crop", type=int, default=256, help="training crop in pixels, a multiple of 32 (default 256)")
    parser.add_argument("--batch", type=int, default=8, help="crops per step (default 8)")
    parser.add_argument("--iterations-per-epoch", type=int, default=200, help="steps per epoch (default 200)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    parser.add_argument("--bands", nargs="+", metavar="NAME",
                        help="input band names (default red green blue; with --init the --init model's, and "
                             "others are refused)")
    parser.add_argument("--weight-average", type=float, default=0.995, metavar="DECAY",
                        help="validate and keep a moving average of the weights with this decay per step "
                             "(default 0.995; 0: the weights as they are)")
    parser.add_argument("--no-calibrate", action="store_true",
                        help="keep threshold 0.5 and the network's own score (with --init: the --init model's "
                             "thresholds, scalings and input scales) instead of choosing the model's "
                             "threshold and confidence scaling on the validation pairs")
    parser.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from .progress import TerminalProgress
    from .training import TrainOptions, train
    from .training.checkpoint import checkpoint_path_for

    options = TrainOptions(
        data_dirs=args.data_dirs, out=args.out, init=args.init, epochs=args.epochs, val_dirs=tuple(args.val),
        val_fraction=args.val_fraction, seed=args.seed, device=args.device, resume=args.resume,
        overwrite=args.overwrite, encoder=args.encoder, gamma=args.gamma, hscl_weight=args.hscl_weight,
        margin_unchanged=args.margin_unchanged, margin_changed=args.margin_changed,
        prior_guidance=not args.no_prior,
        crop=args.crop, batch_size=args.batch, iterations_per_epoch=args.iterations_per_epoch, lr=args.lr,
        bands=args.bands, weight_average=args.weight_average, calibrate=not args.no_calibrate,
        command_line=shlex.join(["deepcl", *sys.argv[1:]]))
    started = time.time()
    try:
        with TerminalProgress("train", sys.stderr) as progress:  # today's stderr, not the one at import
            result = train(options, progress=progress)
    except KeyboardInterrupt:
        checkpoint = checkpoint_path_for(Path(options.out))
        kept = checkpoint.is_file() and checkpoint.stat().st_mtime >= started
        args.interrupted = (f"the checkpoint {checkpoint} keeps the last finished epoch: continue with the same "
                            "command and --resume" if kept else "no epoch had finished; no model file was written")
        raise
    summary: Dict[str, Any] = {
        "model": str(result.out), "checkpoint": str(result.checkpoint), "epochs": result.epochs_completed,
        "best_epoch": result.best_epoch, "validation": result.best_metrics, "threshold": result.threshold,
        "thresholds_by_pixel_size": result.thresholds_by_pixel_size,
        "input_scales_by_pixel_size": result.input_scales_by_pixel_size,
        "platt_scaling": result.platt_scaling.to_list(),
        "platt_scalings_by_pixel_size": [[size, *scaling.to_list()]
                                         for size, scaling in result.platt_scalings_by_pixel_size],
        **({"settings_against_initial_model": result.settings_against_initial_model}
           if result.settings_against_initial_model else {}),
        "train_pairs": len(result.train_pairs),
        "validation_pairs": result.val_pairs, "seconds": round(result.seconds, 1), "history": result.history}
    print_json(summary)
    return 0


def _tile_help(default_note: str = "") -> str:
    """--tile of the commands without --overlap (tiling.tile_overlap)."""
    from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE

    return (f"tile size, a multiple of 32 (default {DEFAULT_TILE}{default_note}); tiles overlap by "
            f"{DEFAULT_OVERLAP} pixels where that is under half a tile, else by a quarter of one")


def add_evaluate_parser(commands: argparse._SubParsersAction) -> None:
    from .tiling import DEFAULT_TILE

    parser = commands.add_parser("evaluate", help="accuracy of a model on labelled pairs (JSON)",
                                 description="Run detection on every labelled pair below DATA_DIR and compare "
                                             "with its label; prints pooled and per-pair metrics as JSON.")
    parser.add_argument("data_dirs", type=Path, nargs="+", metavar="DATA_DIR", help="folder(s) searched for pairs")
    parser.add_argument("--model", type=Path, help="model file (.pt); default: the bundled model")
    parser.add_argument("--pseudo-change", action="store_true",
                        help="also measure the false-positive rate on pseudo-change pairs (x, T(x))")
    parser.add_argument("--classical", action="store_true",
                        help="also report change-vector analysis and OTB MAD (Otsu thresholds) on the same pairs")
    parser.add_argument("--threshold", type=float, help="confidence threshold; default: the model's")
    parser.add_argument("--input-scale", type=int,
                        help="enlarge the images this many times for the network (1-4); default: the model's "
                             "for each pair's pixel size")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, help=_tile_help())
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    parser.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import EvaluateOptions, evaluate, pair_warnings_said_once
    from .progress import TerminalProgress

    options = EvaluateOptions(model=args.model, data_dirs=args.data_dirs, pseudo_change=args.pseudo_change,
                              device=args.device, threshold=args.threshold, input_scale=args.input_scale,
                              tile_size=args.tile)
    with TerminalProgress("evaluate", sys.stderr) as progress, pair_warnings_said_once():
        report = evaluate(options, progress=progress)
        if args.classical:
            from .classical import classical_report
            from .detect import resolve_model
            from .training import find_pairs
            bands = resolve_model(args.model).bands
            report["classical"] = classical_report(find_pairs(args.data_dirs), bands)
    print_json(report)
    return 0


def add_calibrate_parser(commands: argparse._SubParsersAction) -> None:
    from .tiling import DEFAULT_TILE

    parser = commands.add_parser("calibrate", help="set a model's decision thresholds and confidence scaling "
                                                   "on labelled pairs",
                                 description="Choose the threshold that gives the highest F1 pooled over the "
                                             "labelled pairs below DATA_DIR and the Platt scaling that makes the "
                                             "confidence a probability on them (and, for pairs of 5 m pixels or "
                                             "coarser, their own threshold, scaling and enlargement) and "
                                             "write the model with them; what the pairs do not measure stays the "
                                             "model's (training does this on its validation pairs). Use pairs "
                                             "that are not the ones the model will be judged on.")
    parser.add_argument("data_dirs", type=Path, nargs="+", metavar="DATA_DIR", help="folder(s) searched for pairs")
    parser.add_argument("--model", type=Path, help="model file (.pt); default: the bundled model")
    parser.add_argument("--out", type=Path, required=True, help="model file to write (may be --model itself)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out when it is another existing file")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, help=_tile_help(", as detection"))
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    parser.set_defaults(handler=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    from .detect import bundled_model_path
    from .progress import TerminalProgress
    from .training.calibration import calibrate_model

    with TerminalProgress("calibrate", sys.stderr) as progress:
        calibration = calibrate_model(args.model or bundled_model_path(), args.data_dirs, args.out, args.device,
                                      args.tile, args.overwrite, command_line=shlex.join(["deepcl", *sys.argv[1:]]),
                                      progress=progress)
    print_json({"model": str(args.out), **calibration})
    return 0


TRAIN_PARSERS = [add_train_parser, add_evaluate_parser, add_calibrate_parser]  # registered in cli.PARSER_BUILDERS
