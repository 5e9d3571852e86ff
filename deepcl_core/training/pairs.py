"""Labelled image pairs for training and evaluation: finding them below data folders (one folder
per pair with before.*/after.*/label.*, or the LEVIR-CD layout A/ B/ label/), checking them, and
loading each one once into memory on the before grid, normalised as detection normalises."""
from __future__ import annotations

import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

import numpy as np
from osgeo import gdal

from ..area import ground_pixel_size, pixel_size_warning
from ..band_choice import band_choice_warnings, choose_bands
from ..errors import InputError
from ..gdal_utils import is_alpha
from ..grid import Grid, align_after_to_before, label_on_grid
from ..normalization import ImageStretch, NormalizationSpec, normalize
from ..pair_statistics import read_pair_sample
from ..raster_io import (has_geotransform, open_dataset, open_image, open_raster, placed_by_gcps, read_window,
                         rgb_colour_table, zero_means_no_change)

LOG = logging.getLogger(__name__)

_ROLES = ("before", "after", "label")
_LEVIR_DIRS = ("A", "B", "label")
# Sidecar files GDAL, QGIS or viewers leave next to rasters (statistics, overviews, masks, world files,
# QGIS's style and metadata, the headers, overviews, spill and statistics files of ENVI, ERDAS and ESRI
# formats beside their x.dat, x.img or x.bil), a shapefile's companions (its .shp is the one named: a vector label is
# refused with what to do), and files file managers leave in any folder (matched lower case); never
# a pair's image.
_IGNORED_SUFFIXES = {".aux", ".xml", ".ovr", ".msk", ".txt", ".md", ".json", ".prj", ".qpj", ".gpkg-wal", ".gpkg-shm",
                     ".wld", ".tfw", ".tifw", ".tiffw", ".pgw", ".pngw", ".jgw", ".jpgw", ".jpegw", ".j2w",
                     ".gfw", ".gifw", ".bpw", ".bmpw", ".qml", ".qmd", ".sld",
                     ".hdr", ".rrd", ".ige", ".stx", ".blw", ".shx", ".dbf", ".cpg", ".qix", ".sbn", ".sbx"}
_IGNORED_NAMES = {"thumbs.db", "desktop.ini", ".ds_store"}


@dataclass(frozen=True)
class PairFiles:
    """Where one labelled pair lies. ``group`` names its data set (the folder above the pair),
    so that a validation split can hold out pairs from every data set."""

    name: str
    before: Path
    after: Path
    label: Path
    group: str

    def to_dict(self) -> Dict[str, str]:
        return {"name": self.name, "before": str(self.before), "after": str(self.after),
                "label": str(self.label), "group": self.group}

    def files(self) -> Tuple[Path, Path, Path]:
        return self.before, self.after, self.label

    def resolved(self) -> PairFiles:
        """With real, absolute paths: a record that means the same from any working folder."""
        return replace(self, before=self.before.resolve(), after=self.after.resolve(), label=self.label.resolve())


@dataclass
class LoadedPair:
    """A pair in memory on the before grid: images (bands, h, w) normalised and zeroed where
    invalid, label (h, w) uint8 in {0, 1}, valid (h, w) bool where both images and the label have data."""

    files: PairFiles
    before: np.ndarray
    after: np.ndarray
    label: np.ndarray
    valid: np.ndarray
    pixel_size_m: Optional[float] = None  # ground size of a before pixel; None without georeference

    @property
    def name(self) -> str:
        return self.files.name

    @property
    def shape(self) -> Tuple[int, int]:
        return self.label.shape  # type: ignore[return-value]

    @property
    def has_change(self) -> bool:
        return bool(((self.label > 0) & self.valid).any())


def find_pairs(data_dirs: Sequence[os.PathLike]) -> List[PairFiles]:
    """All complete pairs below ``data_dirs`` (searched recursively), sorted by path, each found once.
    An incomplete pair is skipped with a warning that says what it lacks, since a user who left a
    file out expects to train or evaluate on that pair too."""
    if isinstance(data_dirs, (str, bytes, os.PathLike)):  # would be searched letter by letter
        raise InputError(f"folders of pairs come as a list; got the one folder {data_dirs!r}: give [{data_dirs!r}]")
    folders: Dict[Path, Path] = {}  # each folder searched once, when data folders overlap
    for data_dir in data_dirs:
        root = Path(data_dir)
        if root.is_file():
            raise InputError(f"data folder {root} is a file; give the folder that holds the labelled pairs")
        if not root.is_dir():
            raise InputError(f"data folder not found: {root}")
        for folder in _folders_below(root):
            folders.setdefault(folder.resolve(), folder)
    found: Dict[Path, Tuple[Path, PairFiles]] = {}
    for folder in folders.values():
        for named_after, pair in _pairs_in(folder):
            found.setdefault(pair.before.resolve(), (named_after, pair))
    return _unique_names([found[key] for key in sorted(found)])


def _folders_below(root: Path) -> List[Path]:
    """``root`` and every folder below it, sorted by path. Links to folders are followed (a data set
    linked into a data folder is searched too, where Path.rglob would skip it), but each real folder
    is entered once, so that a link to an ancestor does not loop."""
    folders: List[Path] = []
    entered: Set[Path] = set()
    stack = [root]
    while stack:  # depth first, children in name order: the order of sorted paths
        folder = stack.pop()
        real = folder.resolve()
        if real in entered:
            continue
        entered.add(real)
        folders.append(folder)
        try:
            with os.scandir(folder) as entries:
                names = [entry.name for entry in entries if entry.is_dir()]  # is_dir follows links
        except PermissionError:  # as rglob: an unreadable folder is passed over
            continue
        stack.extend(folder / name for name in sorted(names, reverse=True))
    return folders


def _unique_names(pairs: Sequence[Tuple[Path, PairFiles]]) -> List[PairFiles]:
    """The pairs, those whose names clash ("site" in two data folders) with as many of their
    parent folders prefixed as make every name unique ("dup1/site", "dup2/site"): reports and
    thresholds are keyed by name, and a clash would drop a pair from them silently. ``pairs``:
    (path, pair), where the pair's name is the path's last parts."""
    names = [pair.name for _, pair in pairs]
    parts = [Path(os.path.abspath(path)).parts[1:] for path, _ in pairs]  # without the root or drive
    depth = [len(Path(name).parts) for name in names]
    while True:
        counts = Counter(names)
        clashing = [i for i, name in enumerate(names) if counts[name] > 1]
        if not clashing:
            break
        for i in clashing:
            depth[i] += 1
            # Past the root the whole before path, unique by then (pairs are found once each).
            names[i] = ("/".join(parts[i][-depth[i]:]) if depth[i] <= len(parts[i])
                        else Path(os.path.abspath(pairs[i][1].before)).as_posix())
    return [pair if pair.name == name else replace(pair, name=name) for (_, pair), name in zip(pairs, names)]


def _pairs_in(folder: Path) -> List[Tuple[Path, PairFiles]]:
    """The pairs in ``folder``, each with the path its name ends (for names made unique)."""
    named = _raster_named(folder)
    if len(named) == len(_ROLES):
        return [(folder, PairFiles(folder.name, named["before"], named["after"], named["label"], folder.parent.name))]
    if named:  # a pair folder with a file missing; one with none is a data set's or LEVIR-CD's folder
        has = " and ".join(role for role in _ROLES if role in named)
        lacks = " or ".join(f"{role}.*" for role in _ROLES if role not in named)
        LOG.warning("skipped folder %s/%s: it has %s but no %s", folder.parent.name, folder.name, has, lacks)
    return _levir_pairs(folder)


def _levir_pairs(folder: Path) -> List[Tuple[Path, PairFiles]]:
    """LEVIR-CD layout: A/x.png, B/x.png, label/x.png share a name, whatever their endings (DSIFN-CD:
    A/x.jpg, B/x.jpg, label/x.png), as before.* does in a pair folder; a name missing from one of
    the three folders is skipped with a warning, and so is a folder with two of the three (labels/
    or gt/ for label/), which would otherwise give no pair without a word."""
    dirs = [folder / name for name in _LEVIR_DIRS]
    present = [d.is_dir() for d in dirs]
    if sum(present) == 2:
        has = " and ".join(f"{name}/" for name, there in zip(_LEVIR_DIRS, present) if there)
        lacks = next(name for name, there in zip(_LEVIR_DIRS, present) if not there)
        LOG.warning("skipped folder %s/%s: it has %s but no %s/ folder%s", folder.parent.name, folder.name, has,
                    lacks, _rename_hint(folder, lacks))
    if not all(present):
        return []
    files = [_rasters_by_stem(d) for d in dirs]
    endings = [_usual_ending(in_dir) for in_dir in files]  # a missing file named with its folder's ending
    pairs = []
    for stem in sorted(set().union(*files)):
        pair_name = f"{folder.name}/{stem}"
        if all(stem in in_dir for in_dir in files):
            pairs.append((folder / stem, PairFiles(pair_name, *(in_dir[stem] for in_dir in files), folder.name)))
            continue
        lacks = [f"{d}/{stem}{ending}" for d, in_dir, ending in zip(_LEVIR_DIRS, files, endings) if stem not in in_dir]
        LOG.warning("skipped %s: no %s", pair_name, " and no ".join(lacks))
    return pairs


def _rasters_by_stem(folder: Path) -> Dict[str, Path]:
    """A LEVIR-CD folder's rasters by name without their ending; two with one name (x.jpg beside
    x.png) are refused rather than one taken at random, as two before.* are in a pair folder."""
    return _rasters_by(folder, lambda path: path.stem, lambda stem, count, names: (
        f"folder {folder} has {count} images named {stem} ({names}): the pair's images are matched by name "
        "across A/, B/ and label/; keep one"))


def _usual_ending(files: Dict[str, Path]) -> str:
    """The ending most of ``files`` have (.png), else ".*" (none, or as many of two endings)."""
    ranked = Counter(path.suffix for path in files.values()).most_common(2)
    return ranked[0][0] if ranked and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]) else ".*"


# Folder names other data sets give a LEVIR-style role (CDD: OUT/), matched lower case
_LEVIR_LOOKALIKES = {"A": ("a", "t1", "im1", "image1", "before"), "B": ("b", "t2", "im2", "image2", "after"),
                     "label": ("label", "labels", "gt", "mask", "masks", "out", "cm", "ground_truth", "groundtruth")}


def _rename_hint(folder: Path, role: str) -> str:
    """"; rename labels/ to label/" where ``folder`` has a folder that looks meant for ``role``."""
    lookalikes = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.lower() in _LEVIR_LOOKALIKES[role])
    return f"; rename {lookalikes[0]}/ to {role}/" if lookalikes else ""


def _raster_named(folder: Path) -> Dict[str, Path]:
    """The folder's before, after and label rasters; two files for one role (a quicklook next to the
    image) are refused rather than one taken at random."""
    return _rasters_by(folder, lambda path: path.stem.lower() if path.stem.lower() in _ROLES else None,
                       lambda role, count, names: f"pair folder {folder} has {count} {role} images ({names}); keep one")


def _rasters_by(folder: Path, key: Callable[[Path], Optional[str]],
                refusal: Callable[[str, str, str], str]) -> Dict[str, Path]:
    """The folder's rasters by ``key`` (None: not one of them); two or more for one key are refused with
    ``refusal(key, count, file names)`` rather than one taken at random."""
    found: Dict[str, List[Path]] = {}
    for path in sorted(folder.iterdir()):
        name = key(path) if _is_raster_file(path) else None
        if name is not None:
            found.setdefault(name, []).append(path)
    for name, paths in found.items():
        if len(paths) > 1:
            raise InputError(refusal(name, "two" if len(paths) == 2 else str(len(paths)),
                                     ", ".join(p.name for p in paths)))
    return {name: paths[0] for name, paths in found.items()}


def _is_raster_file(path: Path) -> bool:
    return (path.is_file() and not path.name.startswith(".") and path.name.lower() not in _IGNORED_NAMES
            and path.suffix.lower() not in _IGNORED_SUFFIXES)


def split_pairs(pairs: Sequence[PairFiles], fraction: float, seed: int) -> Tuple[List[PairFiles], List[PairFiles]]:
    """(training, validation): from each data set (``group``) of at least two pairs, ceil(fraction · n)
    pairs are held out at random with ``seed``; a data set of one pair stays in training."""
    if not 0.0 < fraction < 1.0:
        raise InputError(f"validation fraction must lie between 0 and 1 (exclusive); got {fraction}")
    rng = np.random.default_rng(seed)
    held_out = set()
    groups: Dict[str, List[PairFiles]] = {}
    for pair in pairs:
        groups.setdefault(pair.group, []).append(pair)
    for group in sorted(groups):
        members = groups[group]
        if len(members) < 2:
            continue
        count = min(len(members) - 1, math.ceil(fraction * len(members)))
        for index in rng.choice(len(members), size=count, replace=False):
            held_out.add(members[int(index)].before.resolve())
    validation = [p for p in pairs if p.before.resolve() in held_out]
    if not validation:
        raise InputError(f"a validation fraction of {fraction} holds out no pair from {len(pairs)} pair(s) "
                         "(a data set needs two pairs to give one); give validation folders with --val, or train "
                         "without validation with --val-fraction 0")
    return [p for p in pairs if p.before.resolve() not in held_out], validation


def load_pair(files: PairFiles, band_names: Sequence[str], spec: NormalizationSpec) -> LoadedPair:
    """Read, check and normalise one pair; every problem is an :class:`InputError` naming the pair."""
    before_ds, after_ds, aligned, bands_before, bands_after = open_pair(files, band_names)
    pixel_size = ground_pixel_size(Grid.of(before_ds))
    # Detection warns of the same; training takes bands by name only: the files must say which is which
    warnings = [*band_choice_warnings(before_ds, None, band_names, "before", can_choose=False),
                *band_choice_warnings(after_ds, None, band_names, "after", can_choose=False),
                pixel_size_warning(pixel_size, ground_pixel_size(Grid.of(after_ds)))]
    for warning in warnings:
        if warning:
            LOG.warning("pair %s: %s", files.name, warning)
    label, label_valid = read_label(files, before_ds)
    roles = (f"{files.name}: before", f"{files.name}: after")
    stretches = read_pair_sample(before_ds, bands_before, aligned, bands_after, roles).stretches(spec)
    before, valid_b = _read_normalised(before_ds, bands_before, stretches[0], spec, roles[0])
    after, valid_a = _read_normalised(aligned, bands_after, stretches[1], spec, roles[1])
    valid = valid_b & valid_a & label_valid
    if not valid.any():
        raise nothing_to_score(files.name)
    return LoadedPair(files, before * valid, after * valid, label, valid, pixel_size)


class OpenedPair(NamedTuple):
    before: gdal.Dataset
    after: gdal.Dataset  # as the file holds it
    aligned: gdal.Dataset  # the after image on the before grid
    bands_before: List[int]
    bands_after: List[int]


def open_pair(files: PairFiles, band_names: Sequence[str]) -> OpenedPair:
    """The pair's images opened, the model's bands found in each and the after image put on the
    before grid; every problem is an :class:`InputError` that begins with the pair's name."""
    try:
        before_ds, after_ds = open_image(files.before, "before"), open_image(files.after, "after")
        bands_before = choose_bands(before_ds, None, band_names, "before", can_choose=False)
        bands_after = choose_bands(after_ds, None, band_names, "after", can_choose=False)
        aligned = align_after_to_before(before_ds, after_ds)
    except InputError as exc:  # "pair 3_4: … the before image has 3" (it read "the 3_4: before image")
        raise InputError(f"pair {files.name}: {exc}") from None
    return OpenedPair(before_ds, after_ds, aligned, list(bands_before), list(bands_after))


def nothing_to_score(name: str) -> InputError:
    """The error for a pair without a pixel that before, after and label all cover (a label placed
    elsewhere, or all nodata): training, calibration and evaluation refuse it alike."""
    return InputError(f"pair {name} has no pixel where before, after and label all have data")


def load_pairs(pairs: Sequence[PairFiles], band_names: Sequence[str], spec: NormalizationSpec) -> List[LoadedPair]:
    return [load_pair(files, band_names, spec) for files in pairs]


def _read_normalised(dataset: gdal.Dataset, bands: Sequence[int], stretch: ImageStretch, spec: NormalizationSpec,
                     role: str) -> Tuple[np.ndarray, np.ndarray]:
    """The whole image normalised with ``stretch``, from the same pair sample detection uses
    (:mod:`~deepcl_core.pair_statistics`), so that training sees exactly what detection will feed
    the network."""
    pixels, valid = read_window(dataset, bands, 0, 0, dataset.RasterXSize, dataset.RasterYSize, role)
    return normalize(pixels, stretch, spec), valid


def read_label(files: PairFiles, before_ds: gdal.Dataset) -> Tuple[np.ndarray, np.ndarray]:
    """The label on the before grid as uint8 {0, 1} with its validity. 0/1 and 0/255 labels are
    accepted; anything else is an :class:`InputError`, and so is a vector label (polygons), with
    how to rasterise it. How its values, colours and nodata are read: :class:`LabelReader`."""
    reader = LabelReader(_open_label(files, before_ds), before_ds, files.label, f"the label of pair {files.name}",
                         "the before image", f"{files.name}: label",
                         place=lambda label_ds: _placed_as_the_before(label_ds, files))
    change, valid = reader.read(0, reader.dataset.RasterYSize)
    reader.warn()
    return change.astype(np.uint8), valid


class LabelReader:
    """A change label on a target's grid, read window by window of whole rows, so that a reference
    larger than memory can be scored strip by strip (Processing's evaluation) as the engine reads a
    pair's label in one window: the same values, refusals and warnings.

    0 always means no change: a band's nodata value of 0 is not taken as nodata (QGIS's Rasterize
    sets it by default, and it would hide every unchanged pixel); other nodata values and alpha or
    mask bands still mark pixels without a label. A label of several bands (white or a colour of
    full channels on black: each band 0/1 or 0/255) marks change where any band but alpha is
    non-zero, and is valid where all of them are. A paletted label is read by the colours QGIS draws
    when they follow the same rule (black for no change), whatever their indices: a palette of two
    colours may hold red at index 0; one whose colours do not (a dark red for class 1) is read as its
    indices. Values in between (an orange, a grey, anti-aliased edges) are refused rather than
    guessed at. A label whose pixels are all change where it has any is warned of when others lack
    a label (a change mask painted on a transparent layer), and so is one declaring its change nodata.

    ``subject`` names the label in messages ("the label of pair x"), ``target_what`` the target ("the
    before image"), ``role`` the label in read errors, ``noun`` what it is called in a refusal of its values
    (which names the values read until then); ``place`` gives an unplaced label a placement before it is
    put on the target's grid."""

    ROWS_PER_READ = 512  # of a paletted label's first pass: bounded memory

    def __init__(self, label_ds: gdal.Dataset, target: gdal.Dataset, path: Path, subject: str, target_what: str,
                 role: str, place: Callable[[gdal.Dataset], gdal.Dataset] = lambda label_ds: label_ds,
                 noun: str = "label") -> None:
        label_ds = zero_means_no_change(label_ds, subject)
        palette = rgb_colour_table(label_ds)  # taken before warping, which need not keep the colour table
        self._unlabelled_by = _unlabelled_by(label_ds)
        self.dataset = label_on_grid(place(label_ds), target, subject, target_what)
        self.path, self.subject, self.target_what, self.role, self.noun = path, subject, target_what, role, noun
        self._bands = [i for i in range(1, self.dataset.RasterCount + 1)
                       if not is_alpha(self.dataset.GetRasterBand(i))] or [1]
        self._palette = palette
        # Whether a palette is read as drawn depends on every index the label holds: found at the first read
        self._coloured: Optional[List[int]] = None
        self._coloured_known = palette is None
        # What the whole label shows, for the warnings once every row is read
        self._present = np.empty(0)  # the values where it has a label (none: nothing labelled)
        self._unlabelled = 0
        self._all_changed = True  # every pixel with a label is change
        self._zero_beneath = True  # the pixels without a label hold 0 (a flattened label would show no change)

    def read(self, top: int, rows: int) -> Tuple[np.ndarray, np.ndarray]:
        """Change (bool) and validity of rows ``top`` to ``top + rows``, each (rows, width); an
        :class:`InputError` once a value is read that a binary label does not hold."""
        values, valid = read_window(self.dataset, self._bands, 0, top, self.dataset.RasterXSize, rows, self.role)
        if not self._coloured_known:  # a whole label's read holds every index; a strip's, not
            whole = top == 0 and rows == self.dataset.RasterYSize
            present = np.unique(values[:, valid]) if whole else self._indices_present()
            self._coloured, self._coloured_known = _coloured_indices(present, self._palette), True
        if self._coloured is not None:
            values = np.isin(values, self._coloured).astype(values.dtype)
        self._present = np.union1d(self._present, np.unique(values[:, valid]))
        self._refuse_values_between()
        change = (values > 0).any(axis=0)
        self._zero_beneath &= not values[:, ~valid].any()
        self._unlabelled += int((~valid).sum())
        self._all_changed &= bool(change[valid].all())
        return change, valid

    def warn(self) -> None:
        """Log what the whole label shows that its figures alone would hide; after every row is read."""
        self._warn_of_change_declared_nodata()
        self._warn_of_no_unchanged_pixel()

    def _indices_present(self) -> np.ndarray:
        """The indices a paletted label holds where it has a label, read in strips."""
        height, width, found = self.dataset.RasterYSize, self.dataset.RasterXSize, []
        for top in range(0, height, self.ROWS_PER_READ):
            values, valid = read_window(self.dataset, self._bands, 0, top, width,
                                        min(self.ROWS_PER_READ, height - top), self.role)
            found.append(np.unique(values[:, valid]))
        return np.unique(np.concatenate(found))

    def _refuse_values_between(self) -> None:
        present = self._present
        if not present.size or set(present.tolist()) <= {0.0, 1.0} or set(present.tolist()) <= {0.0, 255.0}:
            return
        shown = ", ".join(f"{v:g}" for v in present[:6]) + (", …" if present.size > 6 else "")
        colour = (" in every band: a colour label is white, red, green, blue, yellow, cyan or magenta on black"
                  if len(self._bands) > 1 else
                  ", or draw them in black (no change) and white or a colour of full channels (change) in its "
                  "colour table" if self._palette is not None else "")
        raise InputError(f"{self.noun} {self.path} is not binary (values {shown}); a {self.noun} must hold "
                         f"0 (no change) and 1 or 255 (change) only{colour}")

    def _warn_of_no_unchanged_pixel(self) -> None:
        """A label that is change wherever it has a label, while other pixels have none: a change mask
        painted on a transparent layer (alpha 0 where nothing changed) leaves every unchanged pixel out,
        and precision reads 1. Alpha, masks and nodata do mean "no label" (outside a warped footprint),
        so the pixels stay out and the user is told, with the gdal_translate options that drop what
        hides them when 0 lies beneath (flattened, they read as no change)."""
        if not self._unlabelled or not self._present.size or not self._all_changed:  # none labelled, or not all change
            return
        flatten = self._unlabelled_by if self._zero_beneath else None
        if flatten:
            how = (f"flatten it onto black (gdal_translate {' '.join(flatten)} {self.path} "
                   f"{self.path.with_name('flat' + self.path.suffix)}) and put that in its place")
        else:
            target = self.target_what[4:] if self.target_what.startswith("the ") else self.target_what  # "the whole"
            how = ("write 0 in them and remove what marks them unlabelled (its alpha band, mask or nodata value), "
                   f"and draw it over the whole {target}")
        LOG.warning("%s has no unchanged pixel: it marks change wherever it has a label, and its %d "
                    "pixels without a label (transparent, masked, nodata or outside it) are left out. If they mean no "
                    "change, %s", self.subject, self._unlabelled, how)

    def _warn_of_change_declared_nodata(self) -> None:
        """A label whose declared nodata is a value of change (1 or 255) and that shows no change
        elsewhere: a 0/255 label written with nodata 255 reads as a pair without change, silently.
        A 0/1 label that keeps 255 for unlabelled pixels shows its change in 1s and is not warned of."""
        nodata = self.dataset.GetRasterBand(1).GetNoDataValue()
        if nodata not in (1.0, 255.0) or (self._present > 0).any() or not self._unlabelled:  # change shown
            return
        LOG.warning("%s declares %g, a value of change, as nodata, and shows no change besides: "
                    "its %d pixels of %g are read as unlabelled. If they mark change, remove the nodata value "
                    "(gdal_edit.py -unsetnodata %s)", self.subject, nodata, self._unlabelled, nodata, self.path)


def _open_label(files: PairFiles, before_ds: gdal.Dataset) -> gdal.Dataset:
    """The label as a raster; a vector label (a shapefile or GeoPackage of change polygons) is
    refused with the command that rasterises it onto the before grid, since it cannot be read as one."""
    try:
        return open_raster(files.label, f"{files.name}: label")
    except InputError:
        if not _is_vector(files.label):
            raise
    example = ""
    if has_geotransform(before_ds):  # the command for polygons in the before image's CRS, onto its grid
        grid = Grid.of(before_ds)
        x_min, y_min, x_max, y_max = grid.bounds()
        example = (f", e.g. for polygons in the before image's CRS: gdal_rasterize -burn 1 -init 0 -ot Byte "
                   f"-te {x_min!r} {y_min!r} {x_max!r} {y_max!r} -ts {grid.width} {grid.height} {files.label} "
                   f"{files.label.with_suffix('.tif')}, then remove {files.label.name}")
    raise InputError(f"label {files.label} is a vector layer (polygons of change), not a raster; rasterise it onto "
                     "the before image's grid first, 1 inside the polygons and 0 outside (QGIS: Raster ▸ Conversion "
                     f"▸ Rasterize){example}")


def _is_vector(path: Path) -> bool:
    """Whether GDAL opens ``path`` as a vector dataset with layers (closed again at once)."""
    try:
        vector = open_dataset(str(path), "label", gdal.OF_VECTOR)
    except (InputError, RuntimeError):  # RuntimeError: GDAL's exceptions on in a caller that is no entry point
        return False
    return vector.GetLayerCount() > 0


def _coloured_indices(present: np.ndarray, table: gdal.ColorTable) -> Optional[List[int]]:
    """Of a paletted label's indices ``present``, those drawn white or in a colour of full channels
    (change), when every one is drawn so or black (the label is then read as drawn); else None (read
    as its indices). The colours' alpha is left aside: transparency is GDAL's nodata (a transparent
    index 0 is no change, as any nodata of 0), and the colour table of :func:`palette_as_colours`
    would hide the no-change pixels of a PNG whose black is transparent."""
    if any(v != int(v) or not 0 <= v < table.GetCount() for v in present.tolist()):
        return None
    indices = [int(v) for v in present]
    colours = [table.GetColorEntry(index)[:3] for index in indices]
    if not all(channel in (0, 255) for colour in colours for channel in colour):
        return None
    return [index for index, colour in zip(indices, colours) if any(colour)]


def _unlabelled_by(label_ds: gdal.Dataset) -> List[str]:
    """The gdal_translate options that drop what marks pixels without a label in ``label_ds``: its
    alpha band (the bands to keep), a mask, a nodata value."""
    options: List[str] = []
    alpha = [i for i in range(1, label_ds.RasterCount + 1) if is_alpha(label_ds.GetRasterBand(i))]
    if alpha:
        options += [part for i in range(1, label_ds.RasterCount + 1) if i not in alpha for part in ("-b", str(i))]
    flags = label_ds.GetRasterBand(1).GetMaskFlags()
    if flags & gdal.GMF_PER_DATASET and not flags & (gdal.GMF_ALPHA | gdal.GMF_NODATA):
        options += ["-mask", "none"]
    if any(label_ds.GetRasterBand(i).GetNoDataValue() is not None for i in range(1, label_ds.RasterCount + 1)):
        options += ["-a_nodata", "none"]
    return options


def _placed_as_the_before(label_ds: gdal.Dataset, files: PairFiles) -> gdal.Dataset:
    """A label without georeference drawn on the pixels of a before image that ground control
    points place is placed by the same points, so that it is warped as the before image is."""
    if has_geotransform(label_ds) or label_ds.GetGCPCount():
        return label_ds
    raw = gdal.OpenEx(str(files.before), gdal.OF_RASTER | gdal.OF_READONLY)
    if (raw is None or has_geotransform(raw) or not raw.GetGCPCount()
            or (raw.RasterXSize, raw.RasterYSize) != (label_ds.RasterXSize, label_ds.RasterYSize)):
        return label_ds
    with_points = gdal.Translate("", label_ds, format="VRT", GCPs=raw.GetGCPs(), outputSRS=raw.GetGCPProjection())
    return placed_by_gcps(with_points, str(files.label), f"{files.name}: label")
