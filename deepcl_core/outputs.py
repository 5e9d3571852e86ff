"""Output rasters on the before grid, written under temporary names and renamed into place only
when the whole run succeeded: a failed or cancelled run leaves no output file behind."""
from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal

from .errors import Cancelled, OutputError
from .gdal_utils import GdalErrors, collect_gdal_errors, interruptible, thread_config
from .grid import GDAL_DEFAULT_GEOTRANSFORM, Grid

CHANGE_NODATA = 255
CHANGE_DESCRIPTION = "change (1) / no change (0)"  # the change map's band, however it is written
FLOAT_NODATA = -1.0
BLOCK_SIZE = 256  # pixels per side of the output GeoTIFFs' tiles
# ZSTD (level 1) compresses the float confidence map about as small as DEFLATE level 1 in well under
# the time, which the writer thread would take from the network on a CPU. GDAL reads it from 2.3 on
# (QGIS 3.4 on); DEFLATE is the choice for software that does not.
COMPRESSIONS = {"zstd": ["COMPRESS=ZSTD", "ZSTD_LEVEL=1"], "deflate": ["COMPRESS=DEFLATE", "ZLEVEL=1"]}
DEFAULT_COMPRESSION = "zstd"
# Horizontal differencing for the float maps too, as for the change map: on the bundled model's
# confidence of real pairs the floating-point predictor (3) made files 12 % smaller but took 2.1×
# the time to write and 2.6× to read (``python -m benchmarks.float_predictor PAIR_FOLDER...``).
# Writing is the file thread's work that sets the pace beside a GPU, and reading is QGIS drawing the layer.
FLOAT_PREDICTOR = "2"
# Overviews (pyramids) in the outputs, on request, so that QGIS draws a large map at any zoom without
# reading every pixel: the change map's by the nearest pixel (classes stay classes), the float maps'
# by the mean of the valid pixels. Compressed as the maps are: with GDAL's default for overviews
# they took 2.18 s instead of 1.41 s on the 8,192² benchmark pair (`python -m benchmarks.overviews`).
OVERVIEW_RESAMPLING = {gdal.GDT_Byte: "NEAREST", gdal.GDT_Float32: "AVERAGE"}


@dataclass(frozen=True)
class RasterSpec:
    """One output raster: where it goes, its data type, nodata, band description and the file's
    metadata (what made it: a delivered map says so without its log)."""

    path: Path
    data_type: int
    nodata: float
    description: str
    metadata: Tuple[Tuple[str, str], ...] = ()


# What each kind of output is written as, and the file name endings that say so: a GeoTIFF named
# .img or .png would mislead whoever opens it.
OUTPUT_FORMATS = {"raster": ("GeoTIFF", (".tif", ".tiff")), "polygons": ("GeoPackage", (".gpkg",))}


def check_output_name(path: os.PathLike, what: str, kind: str) -> None:
    """``path``, where ``what`` (e.g. "change map") goes, must end as its ``kind``'s format does
    (:data:`OUTPUT_FORMATS`)."""
    format_name, suffixes = OUTPUT_FORMATS[kind]
    path = Path(path)
    check_not_virtual(path)
    if not path.name:  # "" (as Path, "."), or a folder such as "/": "… instead of " with nothing after it
        raise OutputError(f"the {what}'s file name is empty; give a {suffixes[0]} file name")
    if path.suffix.lower() not in suffixes:
        raise OutputError(f"the {what} is written as a {format_name}; give a {suffixes[0]} file name instead of "
                          f"{path.name}")


# GDAL's virtual file systems: /vsimem/, /vsizip/, /vsicurl/, /vsis3/, …
_VIRTUAL_PATH = re.compile(r"/vsi[a-z0-9_]+(/|$)", re.IGNORECASE)


def check_not_virtual(path: os.PathLike) -> None:
    """Outputs are written under temporary names, renamed into place and checked on disk: a GDAL
    virtual file name was refused as "output folder /vsimem does not exist"."""
    if _VIRTUAL_PATH.match(Path(path).as_posix()):
        raise OutputError(f"output {path}: GDAL virtual file systems (/vsimem/, /vsizip/ …) are not supported for "
                          "outputs; write to a folder on disk")


# Files GDAL and QGIS keep beside a raster (pyramids, mask, statistics and metadata): an output's go with it.
SIDECAR_SUFFIXES = (".ovr", ".msk", ".aux.xml")


def check_output_paths(paths: Iterable[Optional[os.PathLike]], inputs: Iterable[os.PathLike],
                       overwrite: bool, make_folders: bool = False) -> None:
    """Fail before any work when an output cannot be written or would clobber something.
    ``make_folders``: a missing folder is fine when it can be made (the writer makes it), so that a
    refused run leaves no empty folders behind."""
    resolved_inputs = {Path(p).resolve() for p in inputs}
    input_files = {_file_id(p) for p in resolved_inputs} - {None}
    seen = set()
    for path in paths:
        if path is None:
            continue
        path = Path(path)
        check_not_virtual(path)
        # First: a name the file system cannot hold makes every later look at it raise
        is_geopackage = path.suffix.lower() == ".gpkg"
        check_name_fits(path, GEOPACKAGE_SIDECARS if is_geopackage else ())
        if is_geopackage:
            _check_geopackage_path(path)
        target = path.resolve()
        # Or the same file by another name: a hard link, or the name in other capitals where the
        # file system ignores them (macOS), which putting the output in place would replace
        if target in resolved_inputs or _file_id(path) in input_files:
            raise OutputError(f"output {path} is one of the input images; choose another file name")
        if target in seen:
            raise OutputError(f"{path} is given for two outputs; give each output its own file")
        seen.add(target)
        folder = _nearest_existing(path.parent) if make_folders else path.parent
        if not folder.is_dir():
            raise OutputError(f"output folder {folder} is a file" if folder.exists() else
                              f"output folder {folder} does not exist; create it or choose another")
        if not _can_create_in(folder):
            raise OutputError(f"output folder {folder} is not writable; choose another")
        if path.is_dir():
            raise OutputError(f"output {path} is a folder; give a file name")
        if path.is_symlink() and not path.exists() and not overwrite:
            # exists() follows the link: without this, the link was found only when the finished
            # run put its output in place, and all its work was thrown away
            raise OutputError(f"output {path} is a broken symbolic link (to {os.readlink(path)}); remove it or allow "
                              "overwriting (--overwrite), which replaces the link, not a file it points to")
        if path.exists() and not overwrite:
            raise OutputError(f"output {path} exists; remove it or allow overwriting (--overwrite)")


def same_file(first: Path, second: Path) -> bool:
    """Whether two names are one file: the same real path, or a hard link, or other capitals where the
    file system ignores them (as :func:`check_output_paths` tells an output from its inputs)."""
    return first.resolve() == second.resolve() or _file_id(first) is not None and _file_id(first) == _file_id(second)


def _file_id(path: Path) -> Optional[Tuple[int, int]]:
    """The file behind ``path`` (device and inode), whatever its name; None for no file one may look at
    (missing, a folder, a GDAL dataset name, a folder one may not search: other checks say what)."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    return (status.st_dev, status.st_ino) if stat.S_ISREG(status.st_mode) else None


# SQLite writes its journal beside a GeoPackage under the file's name and this ending, whenever the
# file is changed (by QGIS's editing too), and takes 512 bytes for the longest full path it opens.
GEOPACKAGE_SIDECARS = ("-journal",)
SQLITE_PATH_MAX = 512


def check_name_fits(path: os.PathLike, suffixes: Sequence[str] = ()) -> None:
    """Fail before any work when the file system cannot hold ``path``: its name, or its name
    followed by one of ``suffixes`` (files written beside it, e.g. a GeoPackage's "-journal"),
    longer than the folder's limit on a name (``PC_NAME_MAX``, else 255 bytes); a folder still to
    be made with too long a name; or the whole path, or a temporary file's beside it, too long."""
    path = Path(path)
    folder = _nearest_existing(path.parent)
    limit = _name_limit(folder)
    for part in path.parent.relative_to(folder).parts:  # folders the writer makes
        if _name_length(part) > limit:
            raise OutputError(f"folder name {part} is {_name_length(part)} bytes long, more than the {limit} the file "
                              f"system of {folder} allows{_BYTES_NOTE}; choose a shorter name")
    if _name_length(path.name) > limit:
        raise OutputError(f"output name {path.name} is {_name_length(path.name)} bytes long, more than the {limit} "
                          f"the file system of {folder} allows{_BYTES_NOTE}; choose a shorter name")
    for suffix in suffixes:
        beside = path.name + suffix
        if _name_length(beside) > limit:
            raise OutputError(f"output name {path.name} is too long: {beside}, written beside it, would be "
                              f"{_name_length(beside)} bytes, more than the {limit} the file system of {folder} "
                              f"allows{_BYTES_NOTE}; choose a name {_name_length(beside) - limit} bytes shorter")
    written = [path.name, *(path.name + suffix for suffix in suffixes), temporary_path(path).name]
    length = len(os.fsencode(os.path.join(os.path.abspath(path.parent), max(written, key=_name_length))))
    path_limit = _limit(folder, "PC_PATH_MAX", 4096)
    if length >= path_limit:
        raise OutputError(f"output path {path} is too long: written there, it would take {length} bytes as a full "
                          f"path, more than the {path_limit - 1} the system allows; choose a shorter folder or name")


_BYTES_NOTE = " (letters outside ASCII take 2 to 4 bytes each)"


def _check_geopackage_path(path: Path) -> None:
    """SQLite opens no GeoPackage whose full path, with its journal's ending, passes its limit: the
    polygons failed after the whole run, and a longer final path QGIS could not open either."""
    lengths = []
    for name in (path.name, temporary_path(path).name):  # the hidden file SQLite creates first, too
        for folder in (os.path.abspath(path.parent), os.path.realpath(path.parent)):  # SQLite follows links
            lengths.append(len(os.fsencode(os.path.join(folder, name))) + len(GEOPACKAGE_SIDECARS[0]))
    if max(lengths) > SQLITE_PATH_MAX:
        raise OutputError(f"path too long for a GeoPackage: SQLite allows {SQLITE_PATH_MAX} bytes, including the "
                          f"{len(GEOPACKAGE_SIDECARS[0])} of its journal's ending, and {path} (or the hidden name it "
                          f"is written under first) would take {max(lengths)} as a full path; choose a folder or "
                          f"name {max(lengths) - SQLITE_PATH_MAX} bytes shorter")


def _name_length(name: str) -> int:
    """What a file system counts: bytes, or on Windows UTF-16 units."""
    return len(name.encode("utf-16-le")) // 2 if os.name == "nt" else len(os.fsencode(name))


def _name_limit(folder: Path) -> int:
    return _limit(folder, "PC_NAME_MAX", 255)


def _limit(folder: Path, name: str, default: int) -> int:
    try:
        value = os.pathconf(folder, name)
    except (AttributeError, OSError, ValueError):  # Windows has no pathconf; some file systems say nothing
        return default
    return value if value > 0 else default  # -1: no limit it can tell


def _nearest_existing(folder: Path) -> Path:
    # os.path.exists: Path.exists raises on a name too long for the file system
    while not os.path.exists(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def _can_create_in(folder: Path) -> bool:
    """Try it: permission bits say nothing to root, nor about read-only file systems."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


@lru_cache(maxsize=None)
def compression_available(compression: str) -> bool:
    """Whether this GDAL's GeoTIFF driver can write ``compression`` (a key of :data:`COMPRESSIONS`)."""
    options = gdal.GetDriverByName("GTiff").GetMetadataItem("DMD_CREATIONOPTIONLIST") or ""
    return f"<Value>{compression.upper()}</Value>" in options


def creation_options(compression: str, predictor: str, threads: int = 1) -> List[str]:
    """GeoTIFF creation options of an output map: tiled, compressed (a key of
    :data:`COMPRESSIONS`) with ``predictor``, blocks compressed in ``threads`` threads."""
    # Level 1: these maps come out about as small as at higher levels (the predictor does most of
    # the work) in less time.
    options = ["TILED=YES", f"BLOCKXSIZE={BLOCK_SIZE}", f"BLOCKYSIZE={BLOCK_SIZE}", *COMPRESSIONS[compression],
               f"PREDICTOR={predictor}", "BIGTIFF=IF_SAFER"]
    return options + [f"NUM_THREADS={threads}"] if threads > 1 else options


def overview_factors(width: int, height: int) -> List[int]:
    """2, 4, 8, … while the overview's longer side is still at least a block (:data:`BLOCK_SIZE`)."""
    factors, factor = [], 2
    while max(width, height) // factor >= BLOCK_SIZE:
        factors.append(factor)
        factor *= 2
    return factors


def add_overviews(path: Path, data_type: int, compression: str, cancel: Callable[[], bool] = lambda: False,
                  name: Optional[Path] = None) -> None:
    """Overviews (:func:`overview_factors`, :data:`OVERVIEW_RESAMPLING`) inside the closed GeoTIFF
    ``path``, compressed with ``compression`` (a key of :data:`COMPRESSIONS`). ``cancel()`` is
    polled as they are built; when true, :class:`Cancelled` is raised. ``name``: the file as the
    user knows it, for messages."""
    settings = {f"{key}_OVERVIEW": value for key, value in (option.split("=") for option in COMPRESSIONS[compression])}
    settings["PREDICTOR_OVERVIEW"] = "2"

    def build(stopped: Callable[[], bool]) -> Tuple[int, GdalErrors]:
        # In interruptible()'s worker thread, so set there: GDAL's thread-local options and error handler
        with thread_config(settings), collect_gdal_errors() as errors:
            dataset = gdal.Open(str(path), gdal.GA_Update)
            factors = overview_factors(dataset.RasterXSize, dataset.RasterYSize) if dataset is not None else []
            status = dataset.BuildOverviews(OVERVIEW_RESAMPLING[data_type], factors,
                                            callback=lambda *_: not (stopped() or cancel())) if factors else 0
            dataset = None  # closing writes them
        return status, errors

    status, errors = interruptible(build)  # Ctrl-C or SIGTERM meanwhile: raised here, files closed
    if cancel():  # GDAL's "User terminated" was this cancel, not a write that failed
        raise Cancelled()
    if status != 0 or errors.messages:
        raise OutputError(f"building the overviews of {name or path} failed: {errors.last('unknown error')} "
                          f"{_likely_cause(Path(path))}")


def _likely_cause(path: Path) -> str:
    """What to look at when GDAL could not write ``path`` (GDAL's words, in the system's language, are
    those of the failed call): its folder gone, or else most likely a full disk."""
    if not path.parent.is_dir():
        return "(was the output folder moved or deleted during the run?)"
    return "(is the disk full?)"


def usable_compression(compression: str = DEFAULT_COMPRESSION) -> str:
    """``compression``, or DEFLATE where this GDAL cannot write it."""
    return compression if compression_available(compression) else "deflate"


def put_in_place(tmp: Path, final: Path, overwrite: bool) -> None:
    """Rename the finished ``tmp`` to ``final``. Without ``overwrite`` a file that appeared at
    ``final`` while the run worked (another run given the same output) is kept and the run fails:
    the check before the run cannot see it, and a rename would replace it without a word."""
    if not overwrite:
        try:
            os.link(tmp, final)  # fails if final exists, atomically
            tmp.unlink()
            return
        except OSError as error:  # not FileExistsError: a file system without hard links, checked here
            if isinstance(error, FileExistsError) or final.exists():
                raise OutputError(f"output {final} appeared while this run worked (another run writing the "
                                  "same file?) and was kept; this run's outputs were not written") from None
    os.replace(tmp, final)


TEMPORARY_STEM_BYTES = 16  # of the output's name kept in its temporary's, to tell whose it is


def temporary_path(path: Path) -> Path:
    """A hidden, unique name beside ``path`` to write it under. Short whatever ``path``'s length
    (about 50 bytes): the output's whole name in it made a name that fits too long for the file
    system, which failed the run only when the finished outputs were put in place."""
    suffix = path.suffix if 0 < len(os.fsencode(path.suffix)) <= 8 else ".tif"  # GDAL's drivers go by it
    return path.with_name(f".{cut_to_bytes(path.stem, TEMPORARY_STEM_BYTES)}.partial-{os.getpid()}-"
                          f"{secrets.token_hex(4)}{suffix}")


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write(handle)`` into a hidden file beside ``path``, synced, then renamed over it: an error
    or a crash mid-write never leaves a broken file at ``path``, and a symbolic link given as
    ``path`` is replaced, not the file it points to. The file gets the permissions any new file
    gets (the umask's), not mkstemp's owner-only ones. The hidden name is short whatever
    ``path``'s length: a name that fits stays writable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{cut_to_bytes(path.name, TEMPORARY_STEM_BYTES)}.{secrets.token_hex(6)}.partial"
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def cut_to_bytes(text: str, limit: int) -> str:
    """``text``'s start of at most ``limit`` bytes in the file system's encoding, whole characters only."""
    while len(os.fsencode(text)) > limit:
        text = text[:-1]
    return text


def _remove_if_there(path: Path) -> None:
    """Delete ``path`` if it is there, as a clean-up: a failure to do so adds nothing to the error
    being reported."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _move_statistics(tmp: Path, final: Path) -> None:
    """GDAL's statistics file of ``tmp`` (``.aux.xml``), if it wrote one, to go with ``final``; dropped
    where ``final``'s name leaves no room for the ending (GDAL could not keep one beside it either)."""
    statistics = Path(f"{tmp}.aux.xml")
    if not statistics.exists():
        return
    try:
        os.replace(statistics, f"{final}.aux.xml")
    except OSError as error:
        if error.errno != errno.ENAMETOOLONG:
            raise
        statistics.unlink(missing_ok=True)


class RasterOutputs:
    """The output GeoTIFFs of one run: tiled, compressed, on ``grid``; committed together.
    ``compression_threads`` above 1 lets GDAL compress blocks side by side (beside a GPU one thread
    compressing the confidence map would hold the network back: ``python -m benchmarks.runs --run io``).
    ``compression``: a key of :data:`COMPRESSIONS`; ZSTD falls back to DEFLATE where GDAL lacks it."""

    def __init__(self, specs: List[RasterSpec], grid: Grid, compression_threads: int = 1,
                 compression: str = DEFAULT_COMPRESSION, overwrite: bool = False) -> None:
        self.grid = grid
        self.overwrite = overwrite
        self.compression_threads = compression_threads
        self.compression = usable_compression(compression)
        self.specs = specs
        self.datasets: Dict[Path, gdal.Dataset] = {}
        self.temporary: Dict[Path, Path] = {}
        self.staged: Dict[Path, List[np.ndarray]] = {}  # rows waiting for a whole row of blocks
        self.staged_from: Dict[Path, int] = {}
        try:
            for spec in specs:
                self._create(spec)
        except BaseException:
            self.abort()
            raise

    def _create(self, spec: RasterSpec) -> None:
        tmp = temporary_path(spec.path)
        self.temporary[spec.path] = tmp
        predictor = FLOAT_PREDICTOR if spec.data_type == gdal.GDT_Float32 else "2"
        options = creation_options(self.compression, predictor, self.compression_threads)
        with collect_gdal_errors() as errors:
            dataset = gdal.GetDriverByName("GTiff").Create(
                str(tmp), self.grid.width, self.grid.height, 1, spec.data_type, options)
        if dataset is None:
            raise OutputError(f"cannot create {spec.path}: {errors.last('unknown error')}")
        if self.grid.crs_wkt or self.grid.geotransform != GDAL_DEFAULT_GEOTRANSFORM:  # the latter: a cut's place
            dataset.SetGeoTransform(self.grid.geotransform)
        if self.grid.crs_wkt:
            dataset.SetProjection(self.grid.crs_wkt)
        dataset.SetMetadata(dict(spec.metadata))
        band = dataset.GetRasterBand(1)
        band.SetNoDataValue(spec.nodata)
        band.SetDescription(spec.description)
        self.datasets[spec.path] = dataset

    def temporary_for(self, final: Path) -> Path:
        """A temporary name for another output of the run (the polygons), put in place by
        :meth:`commit` with the maps, or deleted by :meth:`abort`."""
        self.temporary[final] = temporary_path(final)
        return self.temporary[final]

    def write(self, path: Path, rows: np.ndarray, y: int) -> None:
        """Queue ``rows`` (written top to bottom, without gaps) starting at image row ``y``. Whole
        rows of blocks go to the file and leave GDAL's cache at once, so memory does not grow with
        the image and no compressed block is written twice."""
        staged = self.staged.setdefault(path, [])
        staged.append(rows)
        first = self.staged_from.setdefault(path, y)
        end = first + sum(len(chunk) for chunk in staged)
        complete = end if end == self.grid.height else first + (end - first) // BLOCK_SIZE * BLOCK_SIZE
        if complete > first:
            block = staged[0] if len(staged) == 1 else np.concatenate(staged)
            self._write_now(path, block[:complete - first], first)
            self.staged[path] = [block[complete - first:]]
            self.staged_from[path] = complete

    def _write_now(self, path: Path, rows: np.ndarray, y: int) -> None:
        dataset = self.datasets[path]
        with collect_gdal_errors() as errors:
            status = dataset.GetRasterBand(1).WriteArray(rows, 0, y)
            dataset.FlushCache()
        # A raised error's traceback keeps this frame alive: without this, the file would close
        # (and report the full disk again on stderr) only after the user was told, not in abort().
        dataset = None
        if status != 0 or errors.messages:
            raise OutputError(f"writing {path} failed: {errors.last('unknown error')} {_likely_cause(path)}")

    def temporary_file(self, path: Path) -> Path:
        return self.temporary[path]

    def close(self) -> None:
        """Flush and close all datasets, raising if the flush fails (e.g. disk full)."""
        problems, failed = [], []
        for path in list(self.datasets):
            with collect_gdal_errors() as errors:
                dataset = self.datasets.pop(path)
                dataset.FlushCache()
                # The last reference: GDAL writes the TIFF directory now, so a full disk is seen here.
                dataset = None
            if errors.messages:
                problems.append(f"{path}: {errors.last()}")
                failed.append(path)
        if problems:
            raise OutputError(f"writing outputs failed: {'; '.join(problems)} {_likely_cause(failed[-1])}")

    def build_overviews(self, cancel: Callable[[], bool]) -> None:
        """After :meth:`close`: :func:`add_overviews` to each file."""
        for spec in self.specs:
            add_overviews(self.temporary[spec.path], spec.data_type, self.compression, cancel, name=spec.path)

    def commit(self) -> None:
        """Put every output in place, or none: one that cannot be (see :func:`put_in_place`, or any
        error of the file system) takes back those this run already put in place, and brings back
        the earlier files they replaced (with ``overwrite``) and their side files."""
        self.close()
        placed: List[Path] = []
        set_aside: List[Tuple[Path, Path]] = []  # (earlier file, its hidden name meanwhile)
        final = None
        try:
            for final, tmp in self.temporary.items():
                # A replaced map's external overviews, mask and statistics would be shown with the new one
                sidecars = [Path(f"{final}{suffix}") for suffix in SIDECAR_SUFFIXES]
                for path in sidecars + ([final] if self.overwrite else []):
                    if os.path.lexists(path):  # False too for a name the file system cannot hold
                        hidden = temporary_path(path)
                        os.replace(path, hidden)  # refused on Windows while QGIS has the layer open
                        set_aside.append((path, hidden))
                put_in_place(tmp, final, self.overwrite)
                placed.append(final)
                _move_statistics(tmp, final)
        except (OutputError, OSError) as error:
            for done in placed:
                _remove_if_there(done)
                _remove_if_there(Path(f"{done}.aux.xml"))
            for path, hidden in reversed(set_aside):
                os.replace(hidden, path)
            if isinstance(error, OutputError):
                raise
            raise OutputError(f"cannot put {final} in place ({error.strerror or error}); none of this run's outputs "
                              "were kept, and the files they were to replace are as they were") from None
        for _, hidden in set_aside:
            _remove_if_there(hidden)
        self.temporary.clear()

    def abort(self) -> None:
        """Close and delete every temporary file; never raises."""
        with collect_gdal_errors():  # closing a file on a full disk fails again: not news, keep stderr clean
            self.datasets.clear()  # dropping the references closes them
        for tmp in self.temporary.values():
            for leftover in (tmp, tmp.with_name(tmp.name + ".aux.xml")):
                try:
                    leftover.unlink(missing_ok=True)
                except OSError:
                    pass
        self.temporary.clear()
