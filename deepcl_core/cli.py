"""The ``deepcl`` command line (also ``python -m deepcl_core``). Bad input ends with exit status 2
and one line on stderr; tracebacks are for bugs only (``--debug`` shows them for any error).
This module, and the modules it imports on top, import only the standard library: the engine (torch,
GDAL, numpy) is imported inside the functions, after :func:`main` has held SIGINT and SIGTERM."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import AbstractSet, Callable, Dict, List, Optional, Sequence

from .cli_train import TRAIN_PARSERS
from .cli_output import print_json
from .errors import DeepCLError, InputError

EXIT_BAD_INPUT = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports it
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as shells report a command cut off by a closed pipe
StopSignals = Optional[AbstractSet[signal.Signals]]  # a signal mask to go back to; None: none was changed


def band_list(text: str) -> List[int]:
    try:
        bands = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bands must be 1-based numbers separated by commas, like 1,2,3; got {text!r}")
    if not bands:
        raise argparse.ArgumentTypeError("give at least one band, like 1,2,3")
    return bands


def add_detect_parser(commands: argparse._SubParsersAction) -> None:
    from .outputs import COMPRESSIONS, DEFAULT_COMPRESSION
    from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE

    parser = commands.add_parser("detect", help="detect change between two rasters",
                                 description="Detect change from BEFORE to AFTER. Outputs lie on the BEFORE grid.")
    # Strings, not Paths: a Path would fold /vsicurl/https:// into https:/ (raster_io.open_raster).
    parser.add_argument("before", help="raster of the earlier date: a file in any format GDAL reads, or a GDAL "
                                       "dataset name (/vsizip/…, /vsicurl/https://…, a subdataset)")
    parser.add_argument("after", help="raster of the later date; put on the before grid if needed")
    parser.add_argument("--change", type=Path, required=True, help="output GeoTIFF: 1 change, 0 no change, 255 nodata")
    parser.add_argument("--confidence", type=Path, required=True,
                        help="output GeoTIFF: the probability of change 0-1 (the model's calibrated estimate; the "
                             "network's own score for an uncalibrated model)")
    parser.add_argument("--distance", type=Path, help="optional output GeoTIFF: metric distance map 0-2")
    parser.add_argument("--polygons", type=Path, help="optional output GeoPackage of change polygons")
    parser.add_argument("--min-area", type=float, default=0.0,
                        help="drop polygons smaller than this, in m² (pixels if not georeferenced)")
    parser.add_argument("--model", type=Path, help="model file (.pt); default: the bundled model")
    parser.add_argument("--bands-before", type=band_list, help="1-based bands of BEFORE, e.g. 1,2,3")
    parser.add_argument("--bands-after", type=band_list, help="1-based bands of AFTER, e.g. 1,2,3")
    parser.add_argument("--extent", type=float, nargs=4, metavar=("XMIN", "YMIN", "XMAX", "YMAX"),
                        help="detect only inside this box, in the before image's CRS (x = column, y = -row for "
                             "an image without georeference); outputs cover its pixels")
    parser.add_argument("--mask", help="detect only inside the polygons of this vector file (any CRS GDAL "
                                       "reads); outputs cover their extent and are nodata outside them")
    parser.add_argument("--mask-layer", help="the layer of --mask to use (default: its first)")
    parser.add_argument("--threshold", type=float,
                        help="confidence threshold; default: the model's for the before image's pixel size")
    parser.add_argument("--input-scale", type=int,
                        help="enlarge the images this many times for the network (1-4); default: the model's "
                             "for the before image's pixel size (deepcl info shows it), at which its threshold and "
                             "confidence scaling were chosen: another enlargement shifts the scores they read")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE,
                        help=f"tile size in pixels, a multiple of 32 (default {DEFAULT_TILE}); smaller tiles use "
                             "less memory but give the network less context near their edges, so maps of other "
                             "tile sizes differ near the tiles' edges, most near the threshold")
    parser.add_argument("--overlap", type=int, default=None,
                        help=f"overlap between tiles in pixels (default {DEFAULT_OVERLAP}; for tiles of "
                             f"{2 * DEFAULT_OVERLAP} px or less, a quarter of the tile)")
    parser.add_argument("--batch", type=int, help="tiles per batch (default: 1 on the CPU, 8 on CUDA, 4 on MPS)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    # Figures: the time, 32.1 s (docs/benchmarks_bf16.md) against 44.8 s in fp32 (docs/benchmarks.md as
    # committed in 6eba60c); the pixels, `python -m benchmarks.precision --precision bf16 PAIRS`.
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="auto (default): fp16 on CUDA, fp32 elsewhere; fp32: everywhere; bf16: about 30%% "
                             "less time end to end on CPUs with bf16 instructions (AMX, AVX512-BF16; an 8,192² "
                             "pair took 32.1 s against 44.8 s in fp32 on a 2-core Intel Xeon), but about 0.9%% "
                             "of pixels may change class")
    parser.add_argument("--compression", choices=tuple(COMPRESSIONS), default=DEFAULT_COMPRESSION,
                        help="of the output GeoTIFFs: zstd (default; GDAL 2.3 and later, QGIS 3.4 and later read "
                             "it) or deflate (slower to write, read by older software too)")
    parser.add_argument("--overviews", action="store_true",
                        help="build overviews (pyramids) in the output maps, so that GIS software draws large "
                             "maps quickly at any zoom (about a third more file size)")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    parser.set_defaults(handler=run_detect)


def run_detect(args: argparse.Namespace) -> int:
    from .area_of_interest import AreaOfInterest
    from .detect import DetectOptions, DetectOutputs, detect_changes
    from .progress import TerminalProgress

    if args.mask_layer and not args.mask:
        raise InputError("--mask-layer names a layer of --mask; give the mask file too")
    area = (AreaOfInterest(tuple(args.extent) if args.extent else None, args.mask, args.mask_layer)
            if args.extent or args.mask else None)
    options = DetectOptions(model=args.model, area=area, bands_before=args.bands_before, bands_after=args.bands_after,
                            threshold=args.threshold, input_scale=args.input_scale, tile_size=args.tile,
                            overlap=args.overlap, batch_size=args.batch, device=args.device, precision=args.precision,
                            compression=args.compression, overviews=args.overviews, min_area=args.min_area,
                            overwrite=args.overwrite)
    outputs = DetectOutputs(change=args.change, confidence=args.confidence, distance=args.distance,
                            polygons=args.polygons)
    with TerminalProgress("detect") as progress:
        result = detect_changes(args.before, args.after, outputs, options, progress=progress)
    summary: Dict[str, object] = {
        "change": str(outputs.change), "confidence": str(outputs.confidence),
        "changed_pixels": result.changed_pixels, "valid_pixels": result.valid_pixels,
        "changed_percent": round(result.changed_percent, 3),
        "changed_area_m2": None if result.changed_area_m2 is None else round(result.changed_area_m2, 1),
        "threshold": result.threshold, "input_scale": result.input_scale,
        "confidence_calibrated": result.confidence_calibrated, "device": result.device,
        "precision": result.precision,
        "tiles": result.tiles,
        "seconds": round(result.seconds, 2),
    }
    if outputs.distance:
        summary["distance"] = str(outputs.distance)
    if outputs.polygons:
        summary.update(polygons=str(outputs.polygons), polygon_count=result.polygons)
    if result.warnings:
        summary["warnings"] = result.warnings
    print_json(summary)
    return 0


def add_info_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("info", help="print a model file's contract and provenance")
    parser.add_argument("model", type=Path, help="model file (.pt)")
    parser.set_defaults(handler=run_info)


def run_info(args: argparse.Namespace) -> int:
    from .model_file import load_model

    print_json(load_model(args.model).describe())
    return 0


PARSER_BUILDERS: List[Callable[[argparse._SubParsersAction], None]] = [add_detect_parser, add_info_parser,
                                                                      *TRAIN_PARSERS]


class _PrintVersions(argparse.Action):
    """``--version``: this package's, torch's (and its CUDA build's), GDAL's and the devices torch
    sees, the facts a bug report needs; torch is imported only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the versions of DeepCL, PyTorch and GDAL, "
                                                              "and the devices found, then exit")

    def __call__(self, parser: argparse.ArgumentParser, *_) -> None:
        import torch
        from osgeo import gdal

        from . import __version__
        from .device import describe_device, mps_available

        devices = [describe_device(torch.device("cuda", i)) for i in range(torch.cuda.device_count())]
        devices += ["mps"] if mps_available() else []
        print(f"deepcl {__version__}; PyTorch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'}); "
              f"GDAL {gdal.__version__}; devices: {', '.join(devices + ['cpu'])}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepcl", description="DeepCL change detection on two rasters")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("--version", action=_PrintVersions)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in PARSER_BUILDERS:
        add(commands)
    for command in commands.choices.values():  # also after the command, where users put it
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a scheduler, a container stopping): ends a run as Ctrl-C does, outputs cleaned up."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated()


def main(argv: Optional[Sequence[str]] = None) -> int:
    # Only the main thread may set handlers; a process told to ignore SIGTERM (nohup) keeps ignoring it
    on_main_thread = threading.current_thread() is threading.main_thread()
    held = _hold_stop_signals() if on_main_thread else None
    handles = on_main_thread and signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN
    previous = signal.signal(signal.SIGTERM, _terminate) if handles else None
    try:
        return _run(argv, held)
    finally:
        if previous is not None:  # None: set outside Python, which cannot be restored from here
            signal.signal(signal.SIGTERM, previous)


def _hold_stop_signals() -> StopSignals:
    """Block SIGINT and SIGTERM until :func:`_release`; returns the signal mask to go back to (None
    where signals cannot be blocked). Importing torch takes about a second, during which Ctrl-C
    raised KeyboardInterrupt wherever Python was: a traceback, an abort when inside pybind11's C++
    code, or no effect at all when C code cleared the error; SIGTERM killed the process before its
    handler was set. Held, a signal waits in the kernel until the handlers are in place."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def _release(held: StopSignals) -> None:
    """Undo :func:`_hold_stop_signals`: a signal that came meanwhile is raised here, as an interrupt."""
    if held is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _parser_once_imported(held: StopSignals) -> argparse.ArgumentParser:
    """:func:`build_parser`, which imports the engine, with the signals ``held``; then they are released."""
    try:
        return build_parser()
    finally:
        _release(held)


def _run(argv: Optional[Sequence[str]], held: StopSignals) -> int:
    args = argparse.Namespace(debug=False)  # until the command line is read
    try:
        args = _parser_once_imported(held).parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="deepcl: %(message)s")
        return args.handler(args)
    except DeepCLError as exc:
        if args.debug:
            raise
        print(f"deepcl: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, _Terminated)
        print(f"deepcl: {'terminated' if terminated else 'interrupted'}; "
              f"{getattr(args, 'interrupted', 'no output was written')}", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of our output left (e.g. `| head`): the work itself is done
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # a bug: say so in one line, with a way to get the details
        if args.debug:
            raise
        print(f"deepcl: internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)",
              file=sys.stderr)
        return EXIT_BUG
