"""Which bands of an image are the model's: the user's choice checked, or found by the bands'
descriptions (words, Sentinel-2 and Landsat codes) or colour interpretation, else the first ones,
with a warning when that was a guess."""
from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple

from osgeo import gdal

from .errors import InputError
from .gdal_utils import is_alpha

# Band names a model may ask for, with the words and Sentinel-2 band codes that identify them.
BAND_ALIASES = {
    "red": {"red", "b04", "b4"}, "green": {"green", "b03", "b3"}, "blue": {"blue", "b02", "b2"},
    "nir": {"nir", "b08", "b8"},
}
_COLOR_INTERP = {"red": gdal.GCI_RedBand, "green": gdal.GCI_GreenBand, "blue": gdal.GCI_BlueBand}


def choose_bands(dataset: gdal.Dataset, requested: Optional[Sequence[int]], expected: Sequence[str],
                 role: str) -> Tuple[int, ...]:
    """1-based band indices for the model's ``expected`` bands. ``requested`` (the user's choice)
    is checked; otherwise bands are found by description or colour interpretation, else the first
    ``len(expected)`` bands are taken."""
    count = dataset.RasterCount
    needed = len(expected)
    repeated = sorted({name for name in expected if list(expected).count(name) > 1})
    if repeated:  # e.g. training with --bands red red red: one band fed three times, or three under one name
        raise InputError(f"the band names {', '.join(expected)} name {', '.join(repeated)} more than once; "
                         "give each band once")
    if requested:
        bands = tuple(int(b) for b in requested)
        bad = [b for b in bands if not 1 <= b <= count]
        if bad:
            raise InputError(f"{role} image has bands 1 to {count}; band {bad[0]} does not exist")
        if len(set(bands)) != len(bands):
            raise InputError(f"{role} bands {list(bands)} name the same band twice; choose {needed} different bands")
        if len(bands) != needed:
            raise InputError(f"the model needs {needed} {role} bands ({', '.join(expected)}); "
                             f"{len(bands)} were given")
        return bands
    if count < needed:
        raise InputError(f"the model needs {needed} bands ({', '.join(expected)}) but the {role} image "
                         f"has {count}; choose another image or a model for {count} band(s)")
    found = _found_bands(dataset, expected)
    if _each_found_once(found):
        return found  # type: ignore[return-value]
    names = sensor_band_names(dataset)
    if names:  # the file names its bands, and not the model's: taking the first ones would be a guess
        missing = [name for name, index in zip(expected, found) if not index]
        raise InputError(f"the model needs the bands {', '.join(expected)}; the {role} image's bands are "
                         f"{', '.join(names)}, without {', '.join(missing)}: choose an image that holds "
                         "them (of a Sentinel-2 product, its 10m subdataset) or choose the bands by hand")
    return tuple(range(1, needed + 1))


# How a file says which band is which, for whoever cannot choose bands (training, evaluation)
NAME_THE_BANDS = ("name them in the files, e.g. gdal_edit.py -colorinterp_3 red -colorinterp_2 green -colorinterp_1 "
                  "blue FILE for blue, green, red")


def unnamed_bands_warning(dataset: gdal.Dataset, requested: Optional[Sequence[int]], expected: Sequence[str],
                          role: str, advice: str = f"choose the bands by hand, or {NAME_THE_BANDS}") -> Optional[str]:
    """A warning when :func:`choose_bands` took the first bands of an image with more bands than
    the model's, none named: a guess (e.g. blue, green, red, near infrared read as red, green, blue).
    ``advice``: what to do if they are in another order."""
    needed = len(expected)
    image_bands = [i for i in range(1, dataset.RasterCount + 1) if not is_alpha(dataset.GetRasterBand(i))]
    if requested or len(image_bands) <= needed or _each_found_once(_found_bands(dataset, expected)):
        return None
    which = f"{', '.join(expected[:-1])} or {expected[-1]}" if needed > 1 else expected[0]
    return (f"the {role} image's {len(image_bands)} bands do not say which is {which} "
            f"(no description or colour interpretation): bands "
            f"{', '.join(str(i) for i in range(1, needed + 1))} were taken as {', '.join(expected)}; if they "
            f"are in another order, {advice}")


def _found_bands(dataset: gdal.Dataset, expected: Sequence[str]) -> Tuple[Optional[int], ...]:
    """Each of the model's bands found by description or colour interpretation (None: not found)."""
    return tuple(_find_band(dataset, name) for name in expected)


def _each_found_once(found: Sequence[Optional[int]]) -> bool:
    return all(found) and len(set(found)) == len(found)


# A band named by its sensor's code (Sentinel-2 B1…B12 and B8A, Landsat B1…B11)
_BAND_CODE = re.compile(r"^b(?:0?[1-9]|1[0-2]|8a)$")


def sensor_band_names(dataset: gdal.Dataset) -> List[str]:
    """What each band is, when every band says: its sensor code (from its description) or its colour
    interpretation (red, green, blue: a PNG's, a JPEG's); else nothing."""
    names = []
    for index in range(1, dataset.RasterCount + 1):
        band = dataset.GetRasterBand(index)
        if is_alpha(band):
            continue
        codes = [w for w in re.findall(r"[a-z0-9]+", (band.GetDescription() or "").lower()) if _BAND_CODE.match(w)]
        colour = next((name for name, interp in _COLOR_INTERP.items() if band.GetColorInterpretation() == interp), None)
        if not codes and colour is None:
            return []
        names.append(codes[0].upper() if codes else colour)
    return names


def _find_band(dataset: gdal.Dataset, name: str) -> Optional[int]:
    aliases = BAND_ALIASES.get(name.lower(), {name.lower()})
    for index in range(1, dataset.RasterCount + 1):
        band = dataset.GetRasterBand(index)
        words = set(re.findall(r"[a-z0-9]+", (band.GetDescription() or "").lower()))
        if words & aliases and "edge" not in words:
            return index
    for index in range(1, dataset.RasterCount + 1):
        if dataset.GetRasterBand(index).GetColorInterpretation() == _COLOR_INTERP.get(name.lower(), -1):
            return index
    return None
