"""Opening and reading rasters: inputs opened with clear errors (dataset names GDAL resolves,
subdatasets, Sentinel-2 products, images placed by ground control points, paletted images as their
colours), labels read with 0 as no change, windowed reads with validity, and the sample windows
image statistics are taken from. Band choice is :mod:`.band_choice`'s, grids and alignment
:mod:`.grid`'s."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal

from . import sentinel2
from .errors import InputError
from .gdal_utils import alpha_band, collect_gdal_errors

# Names GDAL resolves itself rather than files on disk: a virtual file system (/vsizip/…,
# /vsicurl/https://…) or a driver's prefix (NETCDF:"f.nc":var, GPKG:f.gpkg:table,
# SENTINEL2_L2A:…:10m:EPSG_32633, https://…); two letters at least, so a Windows drive is a file.
_GDAL_DATASET_NAME = re.compile(r"^(/vsi[a-z0-9_]+/|[A-Za-z][A-Za-z0-9_]+:)")


def is_gdal_dataset_name(name: str) -> bool:
    """Whether ``name`` is for GDAL to resolve (:data:`_GDAL_DATASET_NAME`), not a file to check."""
    return bool(_GDAL_DATASET_NAME.match(name))


def open_raster(path: str | os.PathLike, role: str) -> gdal.Dataset:
    """Open a raster read-only: a file, or any dataset name GDAL opens, given as it is (a
    :class:`~pathlib.Path` would fold /vsicurl/https:// into https:/). ``role`` ("before",
    "after", …) names it in error messages."""
    name = os.fspath(path)
    if not is_gdal_dataset_name(name) and Path(name).is_dir():  # a folder may be a vector dataset, not a raster
        name = sentinel2.product_metadata(Path(name)) or ""  # a SAFE folder: the product's refusal below
        if not name:
            raise InputError(f"{role} image {os.fspath(path)} is a folder; give the raster file inside it")
    dataset = open_dataset(name, f"{role} image", gdal.OF_RASTER, open_options=sentinel2.open_options(name))
    if dataset.RasterCount < 1 and dataset.GetSubDatasets():
        raise InputError(_choose_a_subdataset(dataset, name, role))
    if dataset.RasterXSize < 1 or dataset.RasterYSize < 1 or dataset.RasterCount < 1:
        raise InputError(f"{role} image {name} has no pixels or no bands")
    if dataset.GetDriver().ShortName == sentinel2.DRIVER:  # its unreached part and clouds as nodata
        dataset = sentinel2.with_valid_pixels(dataset, name)
    if not has_geotransform(dataset) and dataset.GetGCPCount() and dataset.GetGCPProjection():
        dataset = placed_by_gcps(dataset, name, role)
    return dataset


def placed_by_gcps(dataset: gdal.Dataset, name: str, role: str) -> gdal.Dataset:
    """An image placed by ground control points only (a scanned map, a raw satellite scene) as QGIS
    draws it: warped north-up by the polynomial through them, as an in-memory VRT (nothing
    copied) whose alpha band marks the image's footprint; nearest neighbour, as QGIS, which also
    keeps a label's classes."""
    with collect_gdal_errors() as errors:
        warped = gdal.Warp("", dataset, format="VRT", resampleAlg="near", dstAlpha=True)
    if warped is None:
        raise InputError(f"the {role} image {name} is placed by ground control points that GDAL cannot warp by "
                         f"({errors.last('no reason given')}); georeference it first (QGIS Georeferencer)")
    return warped


def _choose_a_subdataset(dataset: gdal.Dataset, name: str, role: str, listed: int = 6) -> str:
    """The message for a container of images (a Sentinel-2 product, a NetCDF file of several
    variables, …): which names open one of them."""
    parts = dataset.GetSubDatasets()
    names = "; ".join(f"{part} ({description})" for part, description in parts[:listed])
    more = f"; and {len(parts) - listed} more (gdalinfo lists them)" if len(parts) > listed else ""
    return (f"{role} image {name} holds {len(parts)} images (subdatasets), not one; give one of them by its "
            f"name: {names}{more}")


def open_image(path: str | os.PathLike, role: str, expand_palette: bool = True) -> gdal.Dataset:
    """:func:`open_raster` for an image to be looked at, by the network or a person. One band of
    colour-table indices (a paletted PNG, GIF or TIFF) is read as the colours QGIS draws, in red,
    green and blue bands, unless ``expand_palette`` is false (the user chose bands of the file):
    indices are no radiometry, and resampling them would mix unrelated colours."""
    dataset = open_raster(path, role)
    return palette_as_colours(dataset, role) if expand_palette else dataset


def palette_as_colours(dataset: gdal.Dataset, role: str) -> gdal.Dataset:
    """A one-band paletted image as an in-memory VRT of its colours (nothing copied); any other
    image as it is. An alpha band comes too when some pixels are transparent (a nodata index, or
    colours of the table that are not opaque), so they stay nodata instead of turning black."""
    table = rgb_colour_table(dataset)
    if table is None:
        return dataset
    band = dataset.GetRasterBand(1)
    transparent = band.GetNoDataValue() is not None or any(
        table.GetColorEntry(index)[3] < 255 for index in range(table.GetCount()))
    with collect_gdal_errors() as errors:
        colours = gdal.Translate("", dataset, format="VRT", rgbExpand="rgba" if transparent else "rgb")
    if colours is None:
        raise InputError(f"cannot read the colours of the {role} image's colour table: "
                         f"{errors.last('GDAL gave no reason')}")
    return colours


def rgb_colour_table(dataset: gdal.Dataset) -> Optional[gdal.ColorTable]:
    """The colour table of a one-band image of RGB colour-table indices; None for any other image."""
    band = dataset.GetRasterBand(1)
    table = band.GetColorTable()
    if (dataset.RasterCount != 1 or table is None or band.GetColorInterpretation() != gdal.GCI_PaletteIndex
            or table.GetPaletteInterpretation() != gdal.GPI_RGB):
        return None
    return table


# GDAL's file systems that reach a server (cloud storage, HTTP)
_NETWORK_FILE_SYSTEMS = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift", "/vsiwebhdfs",
                         "/vsihdfs")


def open_dataset(name: str, what: str, kind: int, open_options: Sequence[str] = ()) -> gdal.Dataset:
    """Open ``name`` read-only as a raster or a vector dataset (``kind``: ``gdal.OF_RASTER`` or
    ``gdal.OF_VECTOR``), with errors in words; ``what`` names it in them ("before image", "mask")."""
    if not is_gdal_dataset_name(name):
        file = Path(name)
        if not file.exists():
            raise InputError(f"{what} not found: {name}")
        if file.is_file() and file.stat().st_size == 0:
            raise InputError(f"{what} {name} is an empty (0-byte) file")
    elif name.startswith("/vsi"):  # GDAL's file systems (a zip, a server) say why only when asked
        with collect_gdal_errors():
            gdal.ErrorReset()
            found = gdal.VSIStatL(name) is not None
            reason = gdal.GetLastErrorMsg()  # a server's silence is only a warning ("HTTP response code …: 0")
        if not found:
            where = " or its server cannot be reached" if name.startswith(_NETWORK_FILE_SYSTEMS) else ""
            raise InputError(f"{what} not found{where}: {name}" + (f" ({reason})" if reason else ""))
    with collect_gdal_errors() as errors:
        dataset = gdal.OpenEx(name, kind | gdal.OF_READONLY, open_options=list(open_options))
    if dataset is None:
        raise InputError(f"{what} {name} is not {'a raster' if kind == gdal.OF_RASTER else 'a vector file'} GDAL "
                         "can read" + (f" ({errors.last()})" if errors.messages else ""))
    return dataset


def is_georeferenced(dataset: gdal.Dataset) -> bool:
    return has_geotransform(dataset) and bool(dataset.GetProjection())


def has_geotransform(dataset: gdal.Dataset) -> bool:
    """Whether the raster is placed by a geotransform (its own or a world file's), CRS or not."""
    return dataset.GetGeoTransform(can_return_null=True) is not None


def zero_means_no_change(label: gdal.Dataset, what: str) -> gdal.Dataset:
    """A change label (or reference) as an in-memory VRT without the nodata value of its bands
    whose nodata is 0: 0 is the "no change" class, and QGIS's Rasterize declares it nodata by
    default, which would hide every unchanged pixel when read or warped. Other nodata values, and
    alpha or mask bands, still mark pixels without a label."""
    zero = [i for i in range(1, label.RasterCount + 1) if label.GetRasterBand(i).GetNoDataValue() == 0]
    if not zero:
        return label
    with collect_gdal_errors() as errors:
        vrt = gdal.Translate("", label, format="VRT")
    if vrt is None:
        raise InputError(f"cannot read {what}: {errors.last('unknown GDAL error')}")
    for index in zero:
        vrt.GetRasterBand(index).DeleteNoDataValue()
    return vrt


_FLOATING_TYPES = {gdal.GDT_Float32, gdal.GDT_Float64, gdal.GDT_CFloat32, gdal.GDT_CFloat64}
_SMALL_INTEGER_TYPES = {gdal.GDT_Byte: np.uint8, gdal.GDT_UInt16: np.uint16, gdal.GDT_Int16: np.int16}


def read_window(dataset: gdal.Dataset, bands: Sequence[int], x: int, y: int, width: int, height: int,
                role: str, keep_integers: bool = False,
                out: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Pixels (bands, h, w) and validity (h, w) bool for one window. A pixel is valid when every
    chosen band has data there (GDAL mask: nodata value, alpha or mask band) and every value is
    finite. Pixels come as float32, or with ``keep_integers`` in the bands' own type when they all
    hold the same integers of up to 16 bits (exact in float32 later; GDAL skips a conversion).
    ``out``: arrays of those shapes and of :func:`window_dtype`'s type to read into."""
    if out is None:
        pixels = np.empty((len(bands), height, width), window_dtype(dataset, bands, keep_integers))
        valid = np.ones((height, width), bool)
    else:
        pixels, valid = out
        valid.fill(True)
    alpha_used = floating = False
    with collect_gdal_errors() as errors:
        for i, index in enumerate(bands):
            band = dataset.GetRasterBand(index)
            floating |= band.DataType in _FLOATING_TYPES
            if band.ReadAsArray(x, y, width, height, buf_obj=pixels[i]) is None:
                raise InputError(f"cannot read the {role} image at pixel ({x}, {y}): "
                                 f"{errors.last('the file may be truncated or damaged')}")
            flags = band.GetMaskFlags()
            if flags != gdal.GMF_ALL_VALID:
                valid &= _read_mask(band.GetMaskBand(), x, y, width, height, role, errors)
                alpha_used |= bool(flags & gdal.GMF_ALPHA)
        alpha = alpha_band(dataset)
        if alpha is not None and not alpha_used:
            valid &= _read_mask(alpha, x, y, width, height, role, errors)
    if floating:  # integers read as float32 are always finite: skip a pass over the tile
        valid &= np.isfinite(pixels).all(axis=0)
    return pixels, valid


def window_dtype(dataset: gdal.Dataset, bands: Sequence[int], keep_integers: bool) -> np.dtype:
    """The type :func:`read_window` gives the pixels of ``bands``."""
    types = {dataset.GetRasterBand(index).DataType for index in bands}
    small = _SMALL_INTEGER_TYPES.get(types.pop()) if keep_integers and len(types) == 1 else None
    return np.dtype(small or np.float32)


def _read_mask(band: gdal.Band, x: int, y: int, width: int, height: int, role: str, errors) -> np.ndarray:
    mask = band.ReadAsArray(x, y, width, height)
    if mask is None:
        raise InputError(f"cannot read the {role} image's nodata mask at ({x}, {y}): "
                         f"{errors.last('the file may be damaged')}")
    return mask > 0


def decoded_block_size(dataset: gdal.Dataset, band: int) -> Tuple[int, int]:
    """Width and height of the blocks GDAL decodes to read ``band``: the band's own, or for a
    Sentinel-2 product, a VRT of 128² blocks over JPEG 2000 files of 1024² blocks, the files'. A
    read that stops inside such a block decodes it whole, and again for the next read once GDAL's
    cache has let it go."""
    size = tuple(dataset.GetRasterBand(band).GetBlockSize())
    behind = sentinel2.files_block_size(dataset)
    return size if behind is None else tuple(max(own, theirs) for own, theirs in zip(size, behind))


# Block pixels the statistics' sample may decode: 64 blocks of 512² (GeoTIFF tiles of 256² or 512²
# keep 64 windows of 128²; JPEG 2000 blocks of 1024² get 16 windows of 256², the same pixels).
SAMPLE_DECODED_PIXELS = 64 * 512 * 512


Window = Tuple[int, int, int, int]  # column, row, width, height in pixels


def read_sample(dataset: gdal.Dataset, bands: Sequence[int], role: str, max_side: int = 1024,
                windows_per_side: int = 8, window: int = 128,
                windows: Optional[Sequence[Window]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """A sample of the image for its statistics, at ``windows`` (another image's
    :func:`sample_plan`, to sample two images of one grid at the same places) or at its own
    plan. Returns concatenated pixels (bands, 1, n), in the bands' own type as :func:`read_window`
    keeps it, and validity (1, n)."""
    if windows is None:
        windows = sample_plan(dataset, bands[0], max_side, windows_per_side, window)
    pieces, masks = [], []
    for x, y, w, h in windows:
        pixels, valid = read_window(dataset, bands, x, y, w, h, role, keep_integers=True)
        pieces.append(pixels.reshape(len(bands), -1))
        masks.append(valid.reshape(-1))
    return np.concatenate(pieces, axis=1)[:, None, :], np.concatenate(masks)[None, :]


def sample_plan(dataset: gdal.Dataset, band: int, max_side: int = 1024, windows_per_side: int = 8,
                window: int = 128) -> List[Window]:
    """Where to sample an image for its statistics: the whole image when small, else a regular grid
    of windows (:func:`sample_windows`), so that the cost does not grow with the image."""
    width, height = dataset.RasterXSize, dataset.RasterYSize
    if width <= max_side and height <= max_side:
        return [(0, 0, width, height)]
    block = decoded_block_size(dataset, band)
    per_side = windows_per_side
    # Each window decodes the blocks it touches whole: with large blocks (JPEG 2000's are often
    # 1024²) 64 windows decoded the whole image. Fewer, larger windows sample as many pixels.
    while per_side > 1 and _decoded_pixels(width, height, window * windows_per_side // per_side, block,
                                           per_side) > SAMPLE_DECODED_PIXELS:
        per_side //= 2
    w, h = (min(window * windows_per_side // per_side, side) for side in (width, height))
    return [(x, y, w, h) for x, y in sample_windows(width, height, w, h, block, per_side)]


def _decoded_pixels(width: int, height: int, window: int, block: Tuple[int, int], per_side: int) -> int:
    """Pixels of the blocks that ``per_side``² sample windows of ``window``² touch."""
    w, h = min(window, width), min(window, height)
    touched = {(bx, by) for x, y in sample_windows(width, height, w, h, block, per_side)
               for bx in range(x // block[0], (x + w - 1) // block[0] + 1)
               for by in range(y // block[1], (y + h - 1) // block[1] + 1)}
    return len(touched) * block[0] * block[1]


def sample_windows(width: int, height: int, window_width: int, window_height: int, block: Tuple[int, int],
                   per_side: int) -> List[Tuple[int, int]]:
    """Top-left corners of ``per_side``² windows spread evenly over the image. Where the windows lie
    at least a block of the file apart, each is moved by less than its size to lie within one
    block (width, height): a window across four blocks would decode all four, four times the work
    for the same number of pixels. Closer windows share blocks already."""
    xs = _spread(width, window_width, block[0], per_side)
    return [(x, y) for y in _spread(height, window_height, block[1], per_side) for x in xs]


def _spread(size: int, length: int, block: int, per_side: int) -> List[int]:
    starts = [int((size - length) * (g + 0.5) / per_side) for g in range(per_side)]
    if not length <= block <= (size - length) / per_side:
        return starts
    return [_within_one_block(start, length, block, size) for start in starts]


def _within_one_block(start: int, length: int, block: int, size: int) -> int:
    """``start`` of a ``length`` long window (on an axis ``size`` long) where the window lies inside
    its ``block`` already, else moved back to that block's end or on to the next block, whichever
    is nearer and fits."""
    first = start // block * block
    candidates = [min(start, first + block - length), first + block]
    return min((c for c in candidates if c + length <= size), key=lambda c: abs(c - start))
