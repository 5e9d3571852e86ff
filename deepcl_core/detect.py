"""Change detection on two rasters, file to file: the engine behind the CLI, Processing and the
dock panel. Reads in windows, runs the network on overlapping tiles in batches, blends them and
writes GeoTIFFs on the before grid."""
from __future__ import annotations

import logging
import numbers
import operator
import os
import re
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from osgeo import gdal, gdal_array

from . import __version__
from .area import ground_pixel_size, pixel_area_by_row, pixel_size_warning
from .area_of_interest import AreaOfInterest, Window
from .band_choice import band_choice_warnings, choose_bands
from .batches import BatchSlots, batch_plan
from .confidence_calibration import PlattScaling
from .device import describe_device, out_of_memory_explained, resolve_device
from .device_blending import DeviceRowBlender, Maps, fits_on_device
from .errors import Cancelled, InputError, ModelFileError, releases_locals_on_error
from .gdal_utils import gdal_return_values
from .grid import Grid, align_after_to_before
from .heap import freed_memory_kept
from .model.inference import (PRECISIONS, default_batch_size, inference_threads, io_threads, overlaps_io,
                              precision_name, prefers_channels_last, prepare_for_inference, torch_threads)
from .model.network import NETWORK_MULTIPLE
from .model_file import ModelBundle, shared_model
from .network_on_tiles import MemoryBudget, run_within_memory
from .normalization import ImageStretch, normalize
from .outputs import (CHANGE_DESCRIPTION, CHANGE_NODATA, COMPRESSIONS, DEFAULT_COMPRESSION, FLOAT_NODATA,
                      RasterOutputs, RasterSpec, check_output_name, check_output_paths)
from .pair_statistics import no_shared_pixel_message, read_pair_sample
from .pending import Pending
from .polygons import write_change_polygons
from .raster_io import open_image
from .row_strips import RowStrip, SharedRowStrip
from .tile_reader import TileReader
from .tiling import DEFAULT_TILE, RowBlender, TileGrid, tile_overlap
from .write_behind import WriteBehind

LOG = logging.getLogger(__name__)
BUNDLED_MODEL = Path(__file__).resolve().parent.parent / "resources" / "models" / "deepcl_default.pt"
MAX_INPUT_SCALE = 4  # each step costs its square in network time; the model card shows F1 by enlargement
# Inputs whose decoded pixels fit this stay in GDAL's cache for the whole run (_keeps_decoded), so
# each block is decoded once (a 2,048² RGB pair is 25 MB decoded). End-to-end A/B: `python -m
# benchmarks.pipeline_levers --size 2048 --tiles "" --only now`.
KEEP_DECODED_BYTES = 64 * 1024 * 1024
WRITE_BEHIND_DEPTH = 1  # tile rows of blending and writing queued behind the network (0: no thread)
# Bands of finished rows queued for compression and writing behind the blending (0: the blending
# thread writes them itself). Beside an H100, 8,192²: 1.56 s against 1.68 s (`python -m
# benchmarks.gpu_levers`, docs/benchmarks_gpu_e2e.md).
FILE_WRITE_DEPTH = 1
# Blend on the GPU beside one (device_blending), rather than in a host thread behind the network.
# A/B: the "blending on the host" variant of `python -m benchmarks.gpu_levers`.
BLEND_ON_DEVICE = True


ProgressCallback = Callable[[float, str], None]
# (x, y, width, height) → pixels (bands, height, width) and validity (height, width) of one image
WindowReader = Callable[[int, int, int, int], Tuple[np.ndarray, np.ndarray]]
Blender = Union[RowBlender, DeviceRowBlender]
CancelCallback = Callable[[], bool]


@dataclass
class DetectOptions:
    """How to detect; every field has a default that suits most users."""

    model: Optional[Path] = None  # None: the bundled model
    area: Optional[AreaOfInterest] = None  # None: the whole before image
    bands_before: Optional[Sequence[int]] = None  # 1-based; None: found from the model's band names
    bands_after: Optional[Sequence[int]] = None
    threshold: Optional[float] = None  # None: the model's threshold for the before image's pixel size
    input_scale: Optional[int] = None  # times the network sees the images enlarged; None: the model's, likewise
    tile_size: int = DEFAULT_TILE
    overlap: Optional[int] = None  # pixels; None: 64, or a quarter of tiles of 128 px or less (overlap_used)
    batch_size: Optional[int] = None  # None: the device's (model/inference.default_batch_size)
    device: str = "auto"
    precision: str = "auto"  # "auto": fp16 on CUDA, else fp32; "fp32"; "bf16" (opt-in, see autocast_dtype)
    io_threads: Optional[int] = None  # readers, and compressors; None: model/inference.io_threads
    overlap_io: Optional[bool] = None  # read and write while the network runs; None: the device's (overlaps_io)
    compression: str = DEFAULT_COMPRESSION  # of the output GeoTIFFs: "zstd" or "deflate" (for older readers)
    overviews: bool = False  # build overviews (pyramids) in the output maps, for display (outputs.overview_factors)
    min_area: float = 0.0  # for polygons: m² (pixels when not georeferenced)
    overwrite: bool = False

    def validate(self) -> None:
        """Refuse values detection cannot use, in words; numbers of other types (numpy's, from a
        notebook or a data frame) become Python's, which GDAL's bindings take."""
        self._as_python_numbers()
        if isinstance(self.model, bytes):  # as the images' paths are taken
            self.model = Path(os.fsdecode(self.model))
        if isinstance(self.model, ModelBundle):  # a TypeError from Path(…) before
            raise InputError("DetectOptions(model=…) takes a model file's path; give a loaded model as "
                             "detect_changes(…, model=bundle)")
        if self.model is not None and not isinstance(self.model, (str, os.PathLike)):
            raise InputError(f"DetectOptions(model=…) takes a model file's path, or None for the bundled model; "
                             f"got {self.model!r}")
        if self.area is not None and not isinstance(self.area, AreaOfInterest):
            raise InputError(f"area must be an AreaOfInterest (an extent, a mask or both); got {self.area!r}")
        if self.tile_size < NETWORK_MULTIPLE or self.tile_size % NETWORK_MULTIPLE:
            raise InputError(f"tile size must be a multiple of {NETWORK_MULTIPLE} and at least "
                             f"{NETWORK_MULTIPLE}; got {self.tile_size}")
        overlap = self.overlap_used
        if not 0 <= overlap < self.tile_size // 2:
            hint = f": a smaller tile needs a smaller overlap (e.g. {self.tile_size // 4})" if overlap > 0 else ""
            raise InputError(f"overlap must be at least 0 and under half the tile size ({self.tile_size // 2}); "
                             f"got {overlap}{hint}")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"batch size must be at least 1; got {self.batch_size}")
        if self.io_threads is not None and self.io_threads < 1:
            raise InputError(f"I/O threads must be at least 1; got {self.io_threads}")
        if self.input_scale is not None and not 1 <= self.input_scale <= MAX_INPUT_SCALE:
            raise InputError(f"input scale must be a whole number from 1 to {MAX_INPUT_SCALE}; got {self.input_scale}")
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise InputError(f"threshold must lie between 0 and 1 (exclusive); got {self.threshold}")
        if not self.min_area >= 0:  # NaN too: it compares false and would drop no polygon
            raise InputError(f"minimum area must be a number, not negative; got {self.min_area}")
        if not isinstance(self.compression, str) or self.compression not in COMPRESSIONS:  # a list: unhashable
            raise InputError(f"compression must be one of {', '.join(COMPRESSIONS)}; got {self.compression!r}")
        if not isinstance(self.precision, str) or self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")

    @property
    def overlap_used(self) -> int:
        """The overlap given, else :func:`tiling.tile_overlap`'s for the tile size: 64 was refused
        for tiles of 128 px or less, which a user who gave only a tile size never chose."""
        return tile_overlap(self.tile_size) if self.overlap is None else self.overlap

    def _as_python_numbers(self) -> None:
        self.tile_size = _whole_number(self.tile_size, "tile size")  # None too: no default stands behind it
        for name, what in (("overlap", "overlap"), ("batch_size", "batch size"),
                           ("io_threads", "I/O threads"), ("input_scale", "input scale")):
            if getattr(self, name) is not None:
                setattr(self, name, _whole_number(getattr(self, name), what))
        for name, what in (("bands_before", "bands before"), ("bands_after", "bands after")):
            if getattr(self, name) is not None:
                setattr(self, name, tuple(_whole_number(band, "a band number")
                                          for band in _band_numbers(getattr(self, name), what)))
        # A truthy text ("false", "no") replaced existing outputs or built overviews without a word
        self.overwrite = _truth_value(self.overwrite, "overwrite", "True or False")
        self.overviews = _truth_value(self.overviews, "overviews", "True or False")
        if self.overlap_io is not None:
            self.overlap_io = _truth_value(self.overlap_io, "overlap_io", "True, False or None (the device's choice)")
        if self.threshold is not None:
            self.threshold = _real_number(self.threshold, "threshold")
        self.min_area = _real_number(self.min_area, "minimum area")


def _whole_number(value: Any, what: str) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise InputError(f"{what} must be a whole number; got {value!r}") from None


def _real_number(value: Any, what: str) -> float:
    if isinstance(value, numbers.Real):
        return float(value)
    raise InputError(f"{what} must be a number; got {value!r}")


def _truth_value(value: Any, what: str, choices: str) -> bool:
    """A bool, or numpy's: a text or a number is no answer to a yes-or-no option."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise InputError(f"{what} must be {choices}; got {value!r}")


def _band_numbers(value: Any, what: str) -> Iterable[Any]:
    """``value`` if it holds band numbers in order (a list, a tuple, an array), refused in words if
    not: one number ("'int' object is not iterable"), a text, whose letters are no band numbers, or
    a set, which has no order."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise InputError(f"{what} must be a list of band numbers (1-based), e.g. [1, 2, 3]; got {value!r}")
    return value


# DetectOutputs' fields, and what each holds, for messages
OUTPUT_KINDS = (("change", "change map"), ("confidence", "confidence map"), ("distance", "distance map"),
                ("polygons", "change polygon layer"))


@dataclass
class DetectOutputs:
    """Where the results go; paths as ``str`` or ``os.PathLike`` (kept as :class:`Path`)."""

    change: Path
    confidence: Path
    distance: Optional[Path] = None
    polygons: Optional[Path] = None

    def __post_init__(self) -> None:
        if self.change is None or self.confidence is None:
            raise InputError("the change and the confidence maps both need a file name")
        for name, what in OUTPUT_KINDS:
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (str, bytes, os.PathLike)):  # a TypeError from os.fsdecode before
                raise InputError(f"the {what}'s file name must be a path (str, bytes or os.PathLike); got {value!r}")
            setattr(self, name, Path(os.fsdecode(value)))  # an empty name is refused by check_names

    def rasters(self) -> List[Path]:
        return [p for p in (self.change, self.confidence, self.distance) if p is not None]

    def check_names(self) -> None:
        """Each file name ends as its format does (GeoTIFF maps, GeoPackage polygons)."""
        for name, what in OUTPUT_KINDS:
            if getattr(self, name) is not None:
                check_output_name(getattr(self, name), what, "polygons" if name == "polygons" else "raster")


@dataclass
class DetectionResult:
    """What a run wrote and found. Pixels count on the before grid, valid where both images have
    data (and inside the area asked for); areas are on the ground, in m²."""

    outputs: DetectOutputs  # the files written
    changed_pixels: int
    valid_pixels: int
    changed_area_m2: Optional[float]  # None when the images are not georeferenced
    valid_area_m2: Optional[float]
    threshold: float
    input_scale: int  # how many times larger the network saw the images
    pixel_size_m: Optional[float]  # ground size of a before pixel, which chose the model's settings; None: unknown
    confidence_calibrated: bool  # whether the confidence is the model's calibrated probability, not its raw score
    device: str
    precision: str  # "fp32", "bf16 mixed" or "fp16 mixed"
    seconds: float
    tiles: int
    polygons: Optional[int] = None  # how many change polygons were written (outputs.polygons is their file)
    warnings: List[str] = field(default_factory=list)  # about the inputs and the run, for the user

    @property
    def changed_percent(self) -> float:
        """Changed pixels as a share of the valid pixels, in %."""
        return 100.0 * self.changed_pixels / self.valid_pixels if self.valid_pixels else 0.0


def bundled_model_path() -> Path:
    return BUNDLED_MODEL


def resolve_model(path: Optional[Path]) -> ModelBundle:
    """The model at ``path`` (None: the bundled model), shared: see :func:`model_file.shared_model`."""
    if path is None:
        if not BUNDLED_MODEL.is_file():
            raise ModelFileError(f"no model was given, and this copy of deepcl_core has no bundled model at "
                                 f"{BUNDLED_MODEL} (the repository and the QGIS plugin hold one; a package "
                                 "installed with pip does not): pass a model file with --model, such as the "
                                 "repository's resources/models/deepcl_default.pt, or train one with 'deepcl train'")
        path = BUNDLED_MODEL
    return shared_model(path)


@dataclass
class _Tile:
    x: int
    y: int
    before: np.ndarray  # (bands, tile height, tile width) normalised
    after: np.ndarray
    valid: np.ndarray  # (h, w) both inputs valid, of the part inside the image (TileGrid.inside)


@gdal_return_values
@releases_locals_on_error  # a kept exception must not keep the input files open
def detect_changes(before: Union[str, os.PathLike], after: Union[str, os.PathLike], outputs: DetectOutputs,
                   options: Optional[DetectOptions] = None,
                   progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCallback] = None,
                   model: Optional[ModelBundle] = None, *, log_prefix: str = "",
                   bands_by_hand: bool = True) -> DetectionResult:
    """Detect change from ``before`` to ``after`` and write ``outputs``. The inputs are files or any
    name GDAL opens (``/vsizip/…``, ``/vsicurl/https://…``, a subdataset), passed on as given.

    ``progress(fraction, message)`` is called as tiles complete; ``cancel()`` is polled between
    batches and, when true, the run stops with :class:`Cancelled` and leaves no output file.
    ``model`` is used instead of ``options.model``'s file, which is otherwise read once per version
    of the file and shared between runs (:func:`model_file.shared_model`); neither is modified.
    ``log_prefix`` goes before the warnings it logs (evaluation names their pair so). ``bands_by_hand``:
    whether the caller can choose bands by hand (``options.bands_before``), as its advice on bands then says.
    """
    started = time.perf_counter()
    report = progress or (lambda fraction, message: None)
    is_cancelled = cancel or (lambda: False)
    options = DetectOptions() if options is None else options
    # A dict for options, a tuple for outputs: refused in words, not with an AttributeError
    for value, kind, what in ((options, DetectOptions, "options"), (outputs, DetectOutputs, "outputs")):
        if not isinstance(value, kind):
            raise InputError(f"give the {what} as a {kind.__name__}(…); got a {type(value).__name__}")
    if model is not None and not isinstance(model, ModelBundle):  # a path: "'str' object has no attribute 'trained'"
        raise InputError(f"model is a loaded model, load_model(path); give a model file's path as "
                         f"DetectOptions(model=path); got a {type(model).__name__}")
    for image, which in ((before, "before"), (after, "after")):  # "expected str, bytes or os.PathLike object"
        if not isinstance(image, (str, bytes, os.PathLike)):
            raise InputError(f"the {which} image must be a file's path or a name GDAL opens (str, bytes or "
                             f"os.PathLike); got {image!r}")
    # Called only once the model was loaded: "'str' object is not callable" then
    if progress is not None and not callable(progress):
        raise InputError(f"progress must be a function progress(fraction, message), or None; got {progress!r}")
    if cancel is not None and not callable(cancel):
        raise InputError(f"cancel must be a function cancel() that returns True to stop, or None; got {cancel!r}")
    options.validate()
    outputs.check_names()  # a name of the wrong kind, or a GDAL virtual file: before the model is loaded
    before, after = os.fsdecode(before), os.fsdecode(after)
    bundle = model or resolve_model(options.model)
    warnings = [] if bundle.trained else ["the model was never trained: its output is meaningless"]

    pair = _open_pair(before, after, options, bundle, bands_by_hand=bands_by_hand)
    grid = Grid.of(pair.before)
    pixel_size = ground_pixel_size(grid)
    warnings.extend(_input_warnings(pair, options, pixel_size))
    check_output_paths([*outputs.rasters(), outputs.polygons], _input_files(pair, before, after, options),
                       options.overwrite)
    device = resolve_device(options.device)
    model_threshold = bundle.threshold_for(pixel_size)
    threshold = model_threshold if options.threshold is None else options.threshold
    scale = bundle.input_scale_for(pixel_size) if options.input_scale is None else options.input_scale
    platt_scaling = bundle.platt_scaling_for(pixel_size)
    stretches, network = _statistics_and_network(pair, bundle, device, options.precision, warnings)
    # Tile and overlap are the network's: an image it sees enlarged is cut in smaller tiles.
    tiles = TileGrid.for_network(grid.width, grid.height, options.tile_size, options.overlap_used, scale)
    specs = _output_specs(outputs, calibrated=not platt_scaling.is_identity,
                          made_by=_made_by(before, after, options, model, threshold, scale))
    pixel_areas = pixel_area_by_row(grid)
    counts = _Counts(pixel_areas)

    done = 0
    batch_size = options.batch_size or default_batch_size(device)
    budget = MemoryBudget(batch_size, max(tiles.tile_width, tiles.tile_height),
                          notify=lambda message: report(done / len(tiles), message))
    plan = batch_plan(tiles, batch_size)
    # On CUDA every batch is padded to the first's size: one shape for cuDNN (batches.even_batch_size).
    slots = BatchSlots(plan, (len(pair.bands_before), len(pair.bands_after)), (tiles.tile_height, tiles.tile_width),
                       device, pad_to=len(plan[0][1]) if device.type == "cuda" else 0)
    with ExitStack() as stack:
        # The network's batches shrink when it runs out of memory (MemoryBudget); elsewhere, e.g. blending
        # on a GPU another program took memory from, the run ends with advice. First in, so last out:
        # after the clean-up.
        stack.enter_context(out_of_memory_explained(device, "blending or writing the tiles",
                                                    "close other programs using it, or run on the CPU (--device cpu)"))
        stack.enter_context(freed_memory_kept())
        stack.enter_context(torch_threads(inference_threads(device)))
        in_background = overlaps_io(device) if options.overlap_io is None else options.overlap_io
        threads = options.io_threads or io_threads(in_background)
        writer = RasterOutputs(specs, grid, compression_threads=threads, compression=options.compression,
                               overwrite=options.overwrite)
        stack.callback(writer.abort)  # a no-op after commit
        report(0.0, f"before {grid.width}×{grid.height} px{_window_text(pair.window)}, "
                    f"bands {list(pair.bands_before)}; after bands "
                    f"{list(pair.bands_after)}; device {describe_device(device)}; "
                    + _threshold_text(threshold, model_threshold, platt_scaling)
                    + (f"; images enlarged {scale}× for the network" if scale > 1 else ""))
        # Beside a GPU the blending is the GPU's work too: a host thread blending every tile set the
        # pace there (device_blending); elsewhere, or when the GPU has too little memory to spare for
        # an image this wide, a thread behind the network blends (_tiles_and_threads).
        on_device = _blends_on_device(device, grid.width, tiles.tile_height, len(specs) - 1)
        blender: Blender = (DeviceRowBlender(grid.width, tiles.tile_height, len(specs) - 1, device) if on_device
                            else RowBlender(grid.width, tiles.tile_height, channels=len(specs) - 1))
        rows = tiles.rows()
        read = partial(_read_tile, tiles=tiles, stretches=stretches, bundle=bundle, into=slots.slot)
        reopen = partial(_open_pair, before, after, options, bundle, pair.window,  # for each reader thread
                         chosen=(pair.bands_before, pair.bands_after))
        reader, shared, behind, files = _tiles_and_threads(stack, pair, read, reopen, tiles, batch_size, threads,
                                                           in_background, on_device)
        for index, (row_index, positions) in enumerate(plan):
            if is_cancelled():
                raise Cancelled()
            batch = [next(reader) for _ in positions]
            for strip in shared:  # every tile up to this one is read: rows above it are needed no more
                strip.let_go_above(batch[-1].y)
            # On CUDA this returns once the GPU has the batch's inputs, while it still computes: the
            # next batch is read meanwhile, and the maps stay there to be blended.
            predictions = _predict_batch(network, batch, slots.take(index), device, outputs.distance is not None,
                                         budget, scale, platt_scaling, keep_on_device=on_device)
            # The blending needs where each tile lies and what is valid, not its inputs: those are
            # freed (their page-locked block reused) now, not when the blending gets to the batch.
            placed = [(tile.x, tile.y, tile.valid) for tile in batch]
            del batch
            behind.submit(partial(_blend_batch, blender, tiles, placed, predictions))
            done += len(placed)
            report(done / len(tiles), f"tile {done} of {len(tiles)}")
            if index + 1 == len(plan) or plan[index + 1][0] != row_index:  # the row's last batch
                until = rows[row_index + 1] if row_index + 1 < len(rows) else grid.height
                behind.submit(partial(_finish_rows, files, writer, specs, blender, until, threshold, counts))
        behind.finish()
        files.finish()
        if is_cancelled():
            raise Cancelled()
        if not counts.valid:  # the statistics' sample can miss a small shared area, the tiles cannot
            raise InputError(no_shared_pixel_message())
        polygon_count = _finish_outputs(writer, outputs, options, grid, report, is_cancelled)

    warnings.extend(budget.notes)
    for warning in warnings:
        LOG.warning("%s%s", log_prefix, warning)
    return DetectionResult(
        outputs=outputs, changed_pixels=counts.changed, valid_pixels=counts.valid,
        changed_area_m2=counts.changed_m2 if pixel_areas is not None else None,
        valid_area_m2=counts.valid_m2 if pixel_areas is not None else None,
        threshold=threshold, input_scale=scale, pixel_size_m=pixel_size,
        confidence_calibrated=not platt_scaling.is_identity,
        device=describe_device(device), precision=precision_name(network.dtype),
        seconds=time.perf_counter() - started,
        tiles=len(tiles), polygons=polygon_count, warnings=warnings)


class _Threads(NamedTuple):
    """How a run's tiles come in and its rows go out."""

    reader: Iterator["_Tile"]  # normalised tiles, in the tile grid's order
    shared: Tuple[SharedRowStrip, ...]  # strips the reader threads share, told which rows are done
    behind: WriteBehind  # blending, behind the network
    files: WriteBehind  # compressing and writing, behind the blending


def _tiles_and_threads(stack: ExitStack, pair: "_Pair", read: Callable[..., "_Tile"],
                       reopen: Callable[[], "_Pair"], tiles: TileGrid, batch_size: int, threads: int,
                       in_background: bool, on_device: bool) -> _Threads:
    """The reader of the run's tiles (``read`` one, with the pair's own handles or, in each reader
    thread, ``reopen``'s) and the threads behind the network, closed by ``stack``. With
    ``in_background`` (beside a GPU, or as ``DetectOptions.overlap_io`` asks) reader threads ahead
    of the network and blending and writing behind it; otherwise reading in turn with the network,
    which then keeps the cores."""
    if in_background:
        # Each reader thread reads with handles of its own; a row of blocks is read by the first
        # thread that needs it, and let go once every tile above it is taken (the caller).
        shared = (SharedRowStrip(pair.before, pair.bands_before, "before", decode_threads=threads),
                  SharedRowStrip(pair.after, pair.bands_after, "after", decode_threads=threads))
        reader: Iterator[_Tile] = stack.enter_context(TileReader(
            partial(read, windows=partial(_shared_windows, shared)), tiles.positions(), pair, reopen, threads,
            depth=2 * batch_size))
        # Blending runs behind the network in one thread, in order (on the GPU: queued by this
        # thread), and finishing, compressing and writing the rows behind the blending in another:
        # the network never waits for them. Both closed, the blending first, before the writer's abort.
        files = stack.enter_context(WriteBehind(FILE_WRITE_DEPTH))
        behind = stack.enter_context(WriteBehind(
            0 if on_device else WRITE_BEHIND_DEPTH * (-(-len(tiles.columns()) // batch_size) + 1)))
        return _Threads(reader, shared, behind, files)
    # In turn with the network: the before image in a helper thread, the after image here.
    helper = (stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="deepcl-reader"))
              if threads > 1 else None)
    # Tiles come in row order from one handle per image: cut from strips of whole rows of
    # blocks, each decoded once, which drop GDAL's copy unless the pair stays decoded.
    drop = not _keeps_decoded(pair)
    strips = (RowStrip(pair.before, pair.bands_before, "before", [pair.before] if drop else [], threads),
              RowStrip(pair.after, pair.bands_after, "after", pair.after_datasets() if drop else [], threads))
    reader = (read(pair, position, windows=lambda _: (strips[0].window, strips[1].window), helper=helper)
              for position in tiles.positions())
    in_turn = stack.enter_context(WriteBehind(0))
    return _Threads(reader, (), in_turn, in_turn)


def _threshold_text(threshold: float, model_threshold: float, platt_scaling: PlattScaling) -> str:
    """What the threshold is and what it applies to: a threshold typed for a model whose
    confidence was not yet calibrated (0.01 for 10 m imagery) marks far more on a calibrated one."""
    on = "the calibrated confidence" if not platt_scaling.is_identity else "the network's score"
    if threshold == model_threshold:
        return f"threshold {threshold:.3g} (the model's) on {on}"
    return f"threshold {threshold:.3g} (given; the model's here: {model_threshold:.3g}) on {on}"


def _input_warnings(pair: "_Pair", options: DetectOptions, pixel_size: Optional[float]) -> List[str]:
    """What the run should say of its inputs before it starts: bands it guessed, a mask without a
    CRS, pixels of very different sizes."""
    mismatch = pixel_size_warning(pixel_size, ground_pixel_size(Grid.of(pair.after_source)))
    return [*pair.band_warnings, *(options.area.warnings() if options.area is not None else []),
            *(warning for warning in (mismatch, _one_side_bands_warning(pair, options)) if warning)]


def _one_side_bands_warning(pair: "_Pair", options: DetectOptions) -> Optional[str]:
    """Bands chosen by hand for one image only, and other bands found for the other: e.g. near
    infrared, red, green chosen from the before image would be compared with the after's red, green,
    blue, and every pixel would differ."""
    if bool(options.bands_before) == bool(options.bands_after) or list(pair.bands_before) == list(pair.bands_after):
        return None
    given, other = ("before", "after") if options.bands_before else ("after", "before")
    bands = {"before": list(pair.bands_before), "after": list(pair.bands_after)}
    return (f"bands were chosen for the {given} image only ({bands[given]}); the {other} image's bands "
            f"{bands[other]} were found by their names or order: if they are not the same colours, choose the "
            f"{other} image's bands too")


def _finish_outputs(writer: RasterOutputs, outputs: DetectOutputs, options: DetectOptions, grid: Grid,
                    report: ProgressCallback, is_cancelled: CancelCallback) -> Optional[int]:
    """The written maps' overviews and polygons, then all of them put in place together; returns
    the number of polygons (None when not asked for)."""
    writer.close()
    if options.overviews:
        report(1.0, "building overviews")
        writer.build_overviews(is_cancelled)
    polygon_count = None
    if outputs.polygons is not None:
        report(1.0, "polygonising the change map")
        polygon_count = write_change_polygons(writer.temporary_file(outputs.change),
                                              writer.temporary_file(outputs.confidence), grid,
                                              writer.temporary_for(outputs.polygons), options.min_area, is_cancelled)
    writer.commit()
    return polygon_count


def _blends_on_device(device: torch.device, width: int, tile_height: int, channels: int) -> bool:
    """Whether the run blends its tiles on ``device`` (beside a GPU with the memory to spare)."""
    return (BLEND_ON_DEVICE and device.type == "cuda"
            and fits_on_device(width, tile_height, channels, free_bytes=_cuda_memory_to_spare(device)))


def _cuda_memory_to_spare(device: torch.device) -> int:
    """Bytes free on the device, counting those torch keeps cached for reuse (a QGIS session's
    earlier detections leave them there)."""
    return (torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device)
            - torch.cuda.memory_allocated(device))


def _statistics_and_network(pair: "_Pair", bundle: ModelBundle, device: torch.device, precision: str,
                            warnings: List[str]) -> Tuple[Tuple[ImageStretch, ImageStretch], torch.nn.Module]:
    """The two images' statistics, side by side (GDAL decodes without the GIL), while the network
    is prepared for ``device`` on one torch thread: the statistics hold the cores, and a team of
    several would stall at every barrier of loading and folding the weights. What the samples show
    of undeclared fill goes to ``warnings``."""
    with ThreadPoolExecutor(2, thread_name_prefix="deepcl-statistics") as pool:
        job = pool.submit(read_pair_sample, pair.before, pair.bands_before, pair.after, pair.bands_after,
                          helper=pool)
        with torch_threads(1):
            network = prepare_for_inference(bundle.build(), device, channels_last=prefers_channels_last(device),
                                            precision=precision, copy=False)
        sample = job.result()
    if sample.same_pixels():
        warnings.append("the before and after images hold the same pixels (the same image twice?): there is no "
                        "change to find")
    warnings.extend(warning for warning in (
        _fill_warning(pair.before, pair.bands_before, sample.before, sample.valid_before, "before"),
        _fill_warning(pair.after_source, pair.bands_after, sample.after, sample.valid_after, "after"),
        _saturation_warning(pair.before, pair.bands_before, sample.before, sample.valid_before, "before"),
        _saturation_warning(pair.after_source, pair.bands_after, sample.after, sample.valid_after, "after"))
        if warning)
    return sample.stretches(bundle.normalization), network


def _output_specs(outputs: DetectOutputs, calibrated: bool, made_by: Tuple[Tuple[str, str], ...] = ()
                  ) -> List[RasterSpec]:
    confidence = "change probability (0-1), calibrated" if calibrated else "change score (0-1), not calibrated"
    specs = [RasterSpec(outputs.change, gdal.GDT_Byte, CHANGE_NODATA, CHANGE_DESCRIPTION, made_by),
             RasterSpec(outputs.confidence, gdal.GDT_Float32, FLOAT_NODATA, confidence, made_by)]
    if outputs.distance is not None:
        specs.append(RasterSpec(outputs.distance, gdal.GDT_Float32, FLOAT_NODATA, "metric distance (0-2)", made_by))
    return specs


def _made_by(before: str, after: str, options: DetectOptions, model: Optional[ModelBundle], threshold: float,
             scale: int) -> Tuple[Tuple[str, str], ...]:
    """What made a run's maps, as the metadata of each (gdalinfo, QGIS's layer properties show it)."""
    if model is not None:
        model_name = "a model loaded by the caller (detect_changes(model=…))"
    else:
        model_name = str(options.model) if options.model is not None else f"the bundled model ({BUNDLED_MODEL.name})"
    return (("DEEPCL_VERSION", __version__), ("DEEPCL_MODEL", model_name), ("DEEPCL_BEFORE", _shareable(before)),
            ("DEEPCL_AFTER", _shareable(after)), ("DEEPCL_THRESHOLD", f"{threshold:.6g}"),
            ("DEEPCL_INPUT_SCALE", str(scale)),
            ("DEEPCL_CREATED_UTC", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))


def _shareable(name: str) -> str:
    """``name`` without what a URL in it may carry that grants access (a signed query, ``user:password@``):
    a map passed on must not pass them on."""
    if "://" not in name:
        return name
    return re.sub(r"://[^/@]*@", "://", re.sub(r"\?[^/]*", "", name))


@dataclass
class _Pair:
    """The inputs as read: the before image, the after image on its grid, and the chosen bands."""

    before: gdal.Dataset
    after: gdal.Dataset  # on the before grid
    after_source: gdal.Dataset  # as opened (the same as ``after`` when the grids agree)
    bands_before: Tuple[int, ...]
    bands_after: Tuple[int, ...]
    window: Optional[Window] = None  # of the images as given, when cut to an area of interest
    band_warnings: List[str] = field(default_factory=list)  # of the images as given (a mask's warp drops names)

    def datasets(self) -> List[gdal.Dataset]:
        """Each dataset once (``after`` is ``after_source`` when no warping was needed)."""
        return [self.before, *self.after_datasets()]

    def after_datasets(self) -> List[gdal.Dataset]:
        """The after image on the before grid, and the file it warps when it is warped."""
        return [self.after] if self.after is self.after_source else [self.after, self.after_source]


def _open_pair(before: str, after: str, options: DetectOptions, bundle: ModelBundle,
               window: Optional[Window] = None, bands_by_hand: bool = True,
               chosen: Optional[Tuple[Tuple[int, ...], Tuple[int, ...]]] = None) -> _Pair:
    """The pair as read, cut to ``options.area`` (in ``window`` when already found: reader threads
    open their own handles and need not find it again from the mask, nor choose the bands again:
    ``chosen``, the first opening's, without its warnings)."""
    before_ds = open_image(before, "before", expand_palette=not options.bands_before)
    after_ds = open_image(after, "after", expand_palette=not options.bands_after)
    band_warnings: List[str] = []
    if chosen is not None:
        bands_before, bands_after = chosen
    else:
        bands_before = choose_bands(before_ds, options.bands_before, bundle.bands, "before", bands_by_hand)
        bands_after = choose_bands(after_ds, options.bands_after, bundle.bands, "after", bands_by_hand)
        band_warnings = [
            *band_choice_warnings(before_ds, options.bands_before, bundle.bands, "before", bands_by_hand),
            *band_choice_warnings(after_ds, options.bands_after, bundle.bands, "after", bands_by_hand)]
    if options.area is not None:
        before_ds, after_ds, window = options.area.restrict(before_ds, after_ds, window)
    return _Pair(before_ds, align_after_to_before(before_ds, after_ds), after_ds, bands_before, bands_after, window,
                 band_warnings)


def _input_files(pair: _Pair, before: str, after: str, options: DetectOptions) -> List[str]:
    """Everything the run reads, which no output may replace, even with --overwrite: the names
    given, the files GDAL reads behind them (a GeoPackage behind its table, a product's images)
    and the mask."""
    files = [before, after, *(pair.before.GetFileList() or []), *(pair.after_source.GetFileList() or [])]
    if options.area is not None and options.area.mask is not None:
        files.append(options.area.mask)
    return files


def _window_text(window: Optional[Window]) -> str:
    return "" if window is None else f" (the area of interest, from column {window[0]}, row {window[1]})"


def _read_tile(pair: _Pair, position: Tuple[int, int], tiles: TileGrid, stretches: Tuple[ImageStretch, ImageStretch],
               bundle: ModelBundle, into: Callable[[Tuple[int, int]], Tuple[np.ndarray, np.ndarray]],
               windows: Callable[[_Pair], Tuple[WindowReader, WindowReader]],
               helper: Optional[Executor] = None) -> _Tile:
    """One normalised tile, in a thread that alone uses ``pair`` (the before image in ``helper``'s
    one thread when given, side by side with the after image). ``into(position)``: the (before,
    after) arrays of the tile's size to normalise into (slots of a batch,
    :class:`~deepcl_core.batches.BatchSlots`); a last tile's part past the image's edge is 0, and
    ``valid`` the size of the part inside it. ``windows(pair)``: the functions that give a window of
    the before and of the after image (strips of whole rows of blocks, :mod:`~deepcl_core.row_strips`)."""
    x, y = position
    before, after = into(position)
    height, width = tiles.inside(x, y)
    window_before, window_after = windows(pair)
    read_before = partial(_read_normalised, window_before, stretches[0], bundle, x, y, before[:, :height, :width])
    future = helper.submit(read_before) if helper is not None else None
    valid_a = _read_normalised(window_after, stretches[1], bundle, x, y, after[:, :height, :width])
    valid_b = future.result() if future is not None else read_before()
    valid = valid_b & valid_a
    invalid = None if valid.all() else ~valid  # each image was normalised with its own mask: both get the pair's
    for image in (before, after):
        if invalid is not None:
            np.copyto(image[:, :height, :width], 0.0, where=invalid)
        image[:, height:] = image[:, :, width:] = 0.0  # past the image: never seen by the network (run_network)
    return _Tile(x, y, before, after, valid)


def _shared_windows(shared: Tuple[SharedRowStrip, SharedRowStrip], pair: _Pair) -> Tuple[WindowReader, WindowReader]:
    """Windows of the shared strips, read through a reader thread's own handles ``pair``, whose
    GDAL cache is dropped after each row of blocks (no other thread reads through them)."""
    return (partial(shared[0].window, pair.before, [pair.before]),
            partial(shared[1].window, pair.after, pair.after_datasets()))


def _keeps_decoded(pair: _Pair) -> bool:
    """Whether GDAL keeps every block it decodes for ``pair`` in its cache (up to GDAL_CACHEMAX, by
    default 5 % of the RAM) for the whole run, reading in turn: when the whole pair decoded fits in
    :data:`KEEP_DECODED_BYTES`, so the blocks the statistics decoded serve the tiles too; larger
    pairs drop them after each read of a :class:`RowStrip`, so memory does not grow with the image."""
    return _decoded_bytes(pair) <= KEEP_DECODED_BYTES


def _decoded_bytes(pair: _Pair) -> int:
    """The pixels of every band of each dataset of ``pair`` (a warped after image and its source both)."""
    return sum(d.RasterXSize * d.RasterYSize * sum(gdal.GetDataTypeSize(d.GetRasterBand(i).DataType) // 8
                                                   for i in range(1, d.RasterCount + 1))
               for d in pair.datasets())


def _read_normalised(window: WindowReader, stretch: ImageStretch, bundle: ModelBundle, x: int, y: int,
                     out: np.ndarray) -> np.ndarray:
    """The window at (x, y) of one image the size of ``out`` (bands, h, w), normalised into ``out``;
    returns its validity. ``window(x, y, width, height)`` gives its pixels (integers kept) and validity."""
    pixels, valid = window(x, y, out.shape[2], out.shape[1])
    normalize(pixels, stretch, bundle.normalization, valid, out)
    return valid


# Values other tools write where an image has no data (0: the black collar of a mosaic or a warped
# image, a Sentinel-2 swath edge); no ground has them in every band over a hundredth of an image
# (nor do the darkest shadows of any image in ../shared/data: tests/test_detect.py). Taken as ground
# they stretch the image and show as change wherever one date has them.
FILL_VALUES = (0.0, -9999.0, -32768.0, float(np.finfo(np.float32).min))
FILL_FRACTION_WARNED = 0.01


def _declares_nodata(dataset: gdal.Dataset, bands: Sequence[int]) -> bool:
    """Whether the image says where it has no data (a nodata value, a mask or an alpha band): then
    values such as 0 elsewhere are its ground, not fill it forgot to declare."""
    return any(dataset.GetRasterBand(index).GetMaskFlags() != gdal.GMF_ALL_VALID for index in bands)


def _fill_warning(dataset: gdal.Dataset, bands: Sequence[int], sample: np.ndarray, valid: np.ndarray,
                  role: str) -> Optional[str]:
    """:func:`_undeclared_fill` of an image that declares no nodata (one that does knows its fill)."""
    return None if _declares_nodata(dataset, bands) else _undeclared_fill(sample, valid, role)


def _undeclared_fill(sample: np.ndarray, valid: np.ndarray, role: str) -> Optional[str]:
    for value in FILL_VALUES:
        fraction = float(((sample == value).all(axis=0) & valid).sum()) / float(valid.sum())
        if fraction >= FILL_FRACTION_WARNED:
            return (f"{fraction:.0%} of the {role} image's sampled pixels are {value:g} in every band, which the "
                    f"image does not declare as nodata: if that is fill, declare it (gdal_edit.py -a_nodata "
                    f"{value:g} FILE, or the layer's Transparency ▸ No data value in QGIS) and run again")
    return None


# A band at its data type's largest value over this share of an image is saturated beyond what any
# image of ../shared/data shows (tests/test_detect.py); the true-colour image (TCI) of a Sentinel-2
# product of a bright desert is (tests/test_sentinel2.py).
SATURATED_FRACTION_WARNED = 0.3


def _saturation_warning(dataset: gdal.Dataset, bands: Sequence[int], sample: np.ndarray, valid: np.ndarray,
                        role: str) -> Optional[str]:
    """Whether a band of the image is mostly at the largest value it can hold: brightness beyond
    it is lost, and the network compares flat white where the ground differs."""
    data_type = gdal_array.GDALTypeCodeToNumericTypeCode(dataset.GetRasterBand(bands[0]).DataType)
    if data_type is None or not np.issubdtype(data_type, np.integer) or not valid.any():
        return None
    largest = np.iinfo(data_type).max
    fraction = max(float((band[valid] == largest).mean()) for band in sample)
    if fraction < SATURATED_FRACTION_WARNED:
        return None
    border = ("" if _declares_nodata(dataset, bands) else
              f"; if it is a border of fill, declare it (gdal_edit.py -a_nodata {largest} FILE)")
    other = ("of the product, its 10 m bands rather than its true-colour image (TCI)"
             if dataset.GetMetadataItem("PROCESSING_LEVEL") in ("Level-1C", "Level-2A") else "if there is one")
    return (f"{fraction:.0%} of the {role} image's sampled pixels are at {largest}, the largest value its band can "
            f"hold (saturated): differences brighter than that are lost, and change there is missed or invented; "
            f"use an image that keeps them, {other}{border}")


def _predict_batch(network: torch.nn.Module, batch: List[_Tile], inputs: Tuple[np.ndarray, np.ndarray],
                   device: torch.device, with_distance: bool, budget: MemoryBudget, scale: int,
                   platt_scaling: PlattScaling, keep_on_device: bool) -> Callable[[], List[Optional[Tuple[Maps, ...]]]]:
    """The network launched on ``batch``, whose inputs ``inputs`` holds (its
    :class:`~deepcl_core.batches.BatchSlots` arrays, free for reuse when this returns). Returns a
    function that gives the network's channels (probability[, distance]) for each tile, waiting for
    them if need be (tensors on ``device`` with ``keep_on_device``, see
    :func:`~deepcl_core.network_on_tiles.launch_network`); None for a tile without a valid pixel. On
    the CPU such a tile is not computed; on CUDA the batch keeps its shape (cuDNN prepares each new
    shape once, slowly) and the tile's result is dropped."""
    work = [i for i, tile in enumerate(batch) if tile.valid.any()]
    if not work:
        return lambda: [None] * len(batch)
    if len(work) == len(batch) or device.type == "cuda":
        before, after, rows = inputs[0], inputs[1], work
        computed = batch + [None] * (len(before) - len(batch))  # the slots padding the batch: whole
    else:
        before, after = (_stacked([getattr(batch[i], date) for i in work]) for date in ("before", "after"))
        rows = list(range(len(work)))
        computed = [batch[i] for i in work]
    inside = [tile.valid.shape if tile is not None else before.shape[-2:] for tile in computed]
    maps = run_within_memory(network, before, after, device, with_distance, budget, scale, keep_on_device,
                             platt_scaling, inside)
    return partial(_per_tile, maps, rows, work, len(batch))


def _per_tile(maps: Pending, rows: List[int], tiles: List[int],
              count: int) -> List[Optional[Tuple[Maps, ...]]]:
    """Row ``rows[k]`` of ``maps``' channels for tile ``tiles[k]`` of ``count``; None for the others."""
    probability, distance = maps.result()
    predictions: List[Optional[Tuple[Maps, ...]]] = [None] * count
    for k, i in zip(rows, tiles):
        predictions[i] = (probability[k],) if distance is None else (probability[k], distance[k])
    return predictions


def _stacked(arrays: List[np.ndarray]) -> np.ndarray:
    """``np.stack``, without its copy for one array."""
    return arrays[0][np.newaxis] if len(arrays) == 1 else np.stack(arrays)


def _blend_batch(blender: Blender, tiles: TileGrid, placed: List[Tuple[int, int, np.ndarray]],
                 predictions: Callable[[], List[Optional[Tuple[Maps, ...]]]]) -> None:
    """Each tile's channels, by its (x, y, valid), into ``blender``: of a last tile reaching past the
    image, the part inside it."""
    for (x, y, valid), channels in zip(placed, predictions()):
        if channels is None:
            blender.mark_valid(valid, x, y)
        else:
            weights = tiles.blend_weights(x, y)
            h, w = weights.shape
            blender.add([channel[:h, :w] for channel in channels], weights, valid, x, y)


class _Counts:
    """Running totals of valid and changed pixels, and their ground area."""

    def __init__(self, pixel_areas: Optional[np.ndarray]) -> None:
        self.pixel_areas = pixel_areas
        self.changed = self.valid = 0
        self.changed_m2 = self.valid_m2 = 0.0

    def add(self, top: int, change: np.ndarray, valid: np.ndarray) -> None:
        changed_per_row = np.count_nonzero(change == 1, axis=1)
        valid_per_row = np.count_nonzero(valid, axis=1)
        self.changed += int(changed_per_row.sum())
        self.valid += int(valid_per_row.sum())
        if self.pixel_areas is not None:
            areas = self.pixel_areas[top:top + change.shape[0]]
            self.changed_m2 += float(changed_per_row @ areas)
            self.valid_m2 += float(valid_per_row @ areas)


def _finish_rows(files: WriteBehind, writer: RasterOutputs, specs: List[RasterSpec], blender: Blender,
                 until: int, threshold: float, counts: _Counts) -> None:
    """The blender's final rows, those above ``until``, handed to ``files`` to be finished, counted
    and written."""
    files.submit(partial(_finish_and_write, writer, specs, blender.flush_later(until), threshold, counts))


def _finish_and_write(writer: RasterOutputs, specs: List[RasterSpec],
                      flushed: Callable[[], Tuple[int, np.ndarray, np.ndarray]], threshold: float,
                      counts: _Counts) -> None:
    """Flushed rows as maps finished in place in the fresh arrays the blender hands over (no copies
    of a full-width band of rows), counted and written."""
    top, blended, valid = flushed()
    invalid = None if valid.all() else ~valid  # None: no nodata to mark (most rows of most images)
    confidence = blended[0]
    if not np.isfinite(confidence).all():  # NaN passes the clipping below, and would count as no change
        _refuse_scores_that_are_not_numbers(confidence, valid, top)
    np.maximum(confidence, 0.0, out=confidence)
    np.minimum(confidence, 1.0, out=confidence)
    change = (confidence >= threshold).view(np.uint8)
    if invalid is not None:
        np.copyto(confidence, FLOAT_NODATA, where=invalid)
        np.copyto(change, CHANGE_NODATA, where=invalid)
    counts.add(top, change, valid)
    maps = [change, confidence]
    if len(specs) > 2:
        distance = blended[1]
        if invalid is not None:
            np.copyto(distance, FLOAT_NODATA, where=invalid)
        maps.append(distance)
    for spec, rows in zip(specs, maps):
        writer.write(spec.path, rows, top)


def _refuse_scores_that_are_not_numbers(confidence: np.ndarray, valid: np.ndarray, top: int) -> None:
    """Stop the run where the network scored valid pixels NaN (or infinite): weights that a
    diverged training wrote, or an overflow of reduced precision."""
    count = int(np.count_nonzero(~np.isfinite(confidence) & valid))
    if count:
        raise ModelFileError(f"the network gave no number as its score for {count} valid pixels from row {top} "
                             "on: its weights cannot detect (a training that diverged writes such weights), or, "
                             "on a GPU, its reduced precision overflowed (try --precision fp32); no output was written")
