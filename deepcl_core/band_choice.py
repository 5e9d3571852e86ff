"""Which bands of an image are the model's: the user's choice checked, or found by the bands'
descriptions (words, Sentinel-2 and Landsat codes) or colour interpretation, else the first ones,
with a warning when that was a guess, when Landsat codes were read with an assumed satellite's
meanings, or when bands chosen by hand are named as other colours than the model's."""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Sequence, Set, Tuple

from osgeo import gdal

from .errors import InputError
from .gdal_utils import is_alpha

# Band names a model may ask for, with the words and Sentinel-2 band codes that identify them.
BAND_ALIASES = {
    "red": {"red", "b04", "b4"}, "green": {"green", "b03", "b3"}, "blue": {"blue", "b02", "b2"},
    "nir": {"nir", "b08", "b8"},
}
# Landsat 4-7 (TM, ETM+) number blue, green, red, near infrared 1 to 4; Landsat 8/9 (OLI) put a coastal band
# first (B2 to B5; B8 is panchromatic). Collection 2 names both SR_Bn (ST_Bn thermal): the name alone does not
# say which.
_LANDSAT_4_7_ALIASES = {"red": {"red", "b3"}, "green": {"green", "b2"}, "blue": {"blue", "b1"}, "nir": {"nir", "b4"}}
_LANDSAT_8_9_ALIASES = {"red": {"red", "b4"}, "green": {"green", "b3"}, "blue": {"blue", "b2"}, "nir": {"nir", "b5"}}
_LANDSAT_ALIASES = {**dict.fromkeys((4, 5, 7), _LANDSAT_4_7_ALIASES), 8: _LANDSAT_8_9_ALIASES, 9: _LANDSAT_8_9_ALIASES}
Codes = Dict[str, Set[str]]
_COLOR_INTERP = {"red": gdal.GCI_RedBand, "green": gdal.GCI_GreenBand, "blue": gdal.GCI_BlueBand}
# How warnings name the model's bands
_SPOKEN = {"red": "red", "green": "green", "blue": "blue", "nir": "near infrared"}


def check_band_names(names: Sequence[str]) -> None:
    """Refuse a model's band names that name one band more than once (training with --bands red red
    blue): one band would be fed twice, or two under one name."""
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:
        raise InputError(f"the band names {', '.join(names)} name {', '.join(repeated)} more than once; "
                         "give each band once")


def choose_bands(dataset: gdal.Dataset, requested: Optional[Sequence[int]], expected: Sequence[str],
                 role: str, can_choose: bool = True) -> Tuple[int, ...]:
    """1-based band indices for the model's ``expected`` bands. ``requested`` (the user's choice)
    is checked; otherwise bands are found by description or colour interpretation, else the first
    ``len(expected)`` bands are taken. ``can_choose``: whether the user can choose bands by hand
    (detection), which a refusal then offers (training and evaluation cannot)."""
    count = dataset.RasterCount
    needed = len(expected)
    check_band_names(expected)
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
    found = _found_bands(dataset, expected, _codes(dataset)[0])
    if _each_found_once(found):
        return found  # type: ignore[return-value]
    names = sensor_band_names(dataset)
    if names:  # the file names its bands, and not the model's: taking the first ones would be a guess
        missing = [name for name, index in zip(expected, found) if not index]
        by_hand = " or choose the bands by hand" if can_choose else ""
        raise InputError(f"the model needs the bands {', '.join(expected)}; the {role} image's bands are "
                         f"{', '.join(names)}, without {', '.join(missing)}: choose an image that holds "
                         f"them (of a Sentinel-2 product, its 10m subdataset){by_hand}")
    return tuple(range(1, needed + 1))


# How a file says which band is which, for whoever cannot choose bands (training, evaluation)
NAME_THE_BANDS = ("name them in the files, e.g. gdal_edit.py -colorinterp_3 red -colorinterp_2 green -colorinterp_1 "
                  "blue FILE for blue, green, red")


def unnamed_bands_warning(dataset: gdal.Dataset, requested: Optional[Sequence[int]], expected: Sequence[str],
                          role: str, advice: str = f"choose the bands by hand, or {NAME_THE_BANDS}",
                          table: Optional[Codes] = None) -> Optional[str]:
    """A warning when :func:`choose_bands` took the first bands of an image with more bands than
    the model's, none named: a guess (e.g. blue, green, red, near infrared read as red, green, blue).
    ``advice``: what to do if they are in another order; ``table``: the image's band codes, where
    already known."""
    needed = len(expected)
    image_bands = [i for i in range(1, dataset.RasterCount + 1) if not is_alpha(dataset.GetRasterBand(i))]
    found = _found_bands(dataset, expected, table if table is not None else _codes(dataset)[0])
    if requested or len(image_bands) <= needed or _each_found_once(found):
        return None
    which = f"{', '.join(expected[:-1])} or {expected[-1]}" if needed > 1 else expected[0]
    return (f"the {role} image's {len(image_bands)} bands do not say which is {which} "
            f"(no description or colour interpretation): bands "
            f"{', '.join(str(i) for i in range(1, needed + 1))} were taken as {', '.join(expected)}; if they "
            f"are in another order, {advice}")


def band_choice_warnings(dataset: gdal.Dataset, requested: Optional[Sequence[int]], expected: Sequence[str],
                         role: str, can_choose: bool = True) -> List[str]:
    """What a run should say of how :func:`choose_bands` took the image's bands: bands chosen by hand
    that the file names as other colours than the model takes them for; else a guess
    (:func:`unnamed_bands_warning`) or Landsat codes read as an assumed satellite's. ``can_choose``:
    whether the user can choose bands by hand (detection), which the advice then offers (training cannot)."""
    codes = _codes(dataset)
    if requested:
        warnings = [_contradicted_bands_warning(dataset, requested, expected, role, codes)]
    else:
        advice = f"choose the bands by hand, or {NAME_THE_BANDS}" if can_choose else NAME_THE_BANDS
        warnings = [unnamed_bands_warning(dataset, None, expected, role, advice, codes[0]),
                    _assumed_landsat_warning(dataset, expected, role, can_choose, codes)]
    return [warning for warning in warnings if warning]


def _assumed_landsat_warning(dataset: gdal.Dataset, expected: Sequence[str], role: str,
                             can_choose: bool, codes: Tuple[Codes, bool]) -> Optional[str]:
    """Bands found by Landsat Collection 2 codes (SR_B4) in a file that does not say which satellite
    took it: read as Landsat 8/9's (SR_B4 red), which on Landsat 4-7 is near infrared. ``codes``: :func:`_codes`'s."""
    table, assumed = codes
    found = _found_bands(dataset, expected, table)
    if not assumed or not _each_found_once(found) or not any(_is_c2_code(dataset.GetRasterBand(i)) for i in found):
        return None  # a satellite named, a band missing, or all found by other names
    older = _found_bands(dataset, expected, _LANDSAT_4_7_ALIASES)
    if _each_found_once(older):
        how = "choose them by hand, or say so in the file" if can_choose else "say so in the file"
        fix = (f"its {_spoken(expected)} are bands {_listed(older)} ({_descriptions(dataset, older)}): {how} "
               "(gdal_edit.py -mo SPACECRAFT_ID=LANDSAT_5 FILE) and they are found by their names")
    else:
        fix = "say so in the file (gdal_edit.py -mo SPACECRAFT_ID=LANDSAT_5 FILE)"
    return (f"the {role} image's bands are named with Landsat codes (SR_Bn), which mean other colours on Landsat "
            "4, 5 and 7 than on Landsat 8 and 9, and the file does not say which satellite took it: they were "
            f"read as Landsat 8/9's, bands {_listed(found)} ({_descriptions(dataset, found)}) as "
            f"{_spoken(expected)}; if the image is from Landsat 4, 5 or 7, {fix}")


def _contradicted_bands_warning(dataset: gdal.Dataset, requested: Sequence[int], expected: Sequence[str],
                                role: str, codes: Tuple[Codes, bool]) -> Optional[str]:
    """Bands chosen by hand whose descriptions name another of the model's colours than the one each
    is fed as (band 4 of a Sentinel-2 10 m image, B8, as red). Colour interpretation is no evidence:
    GDAL gives every 3- or 4-band Byte GeoTIFF or PNG red, green, blue, whatever their order. ``codes``:
    :func:`_codes`'s."""
    table, assumed = codes
    clashes = []
    for index, name in zip((int(b) for b in requested), expected):
        band = dataset.GetRasterBand(index)
        words = _description_words(band)
        meanings = [] if "edge" in words or (assumed and _is_c2_code(band)) else [  # a code of a satellite assumed
            colour for colour, aliases in table.items() if aliases.intersection(words)]
        if len(meanings) != 1 or name.lower() not in _SPOKEN or meanings[0] == name.lower():
            continue  # not named, named as two colours, or named so
        subject = f"band {index} of the {role} image" if not clashes else f"band {index}"
        clashes.append(f'{subject} is named "{band.GetDescription()}" ({_SPOKEN[meanings[0]]}) but is used as '
                       f"{_SPOKEN[name.lower()]}")
    if not clashes:
        return None
    found = _found_bands(dataset, expected, table)
    advice = (f", which the file says are bands {_listed(found)}: choose those, unless the file names its bands "
              "wrongly" if _each_found_once(found) else ": check the bands chosen")
    return f"{'; '.join(clashes)}: the model takes {_spoken(expected)} in this order{advice}"


def _spoken(names: Sequence[str]) -> str:
    return ", ".join(_SPOKEN.get(name.lower(), name) for name in names)


def _listed(indices: Sequence[Optional[int]]) -> str:
    return ", ".join(str(index) for index in indices)


def _descriptions(dataset: gdal.Dataset, indices: Sequence[Optional[int]]) -> str:
    return ", ".join(dataset.GetRasterBand(index).GetDescription() for index in indices if index)


def _description_words(band: gdal.Band) -> List[str]:
    return re.findall(r"[a-z0-9]+", (band.GetDescription() or "").lower())


def _colour(band: gdal.Band) -> Optional[str]:
    """The model's colour ``band`` is by its colour interpretation (red, green, blue), if any."""
    return next((name for name, interp in _COLOR_INTERP.items() if band.GetColorInterpretation() == interp), None)


# Landsat Collection 2 band names: SR_B4 (surface reflectance), ST_B6 (surface temperature)
_LANDSAT_C2_CODE = re.compile(r"(?:^|[^a-z0-9])s[rt]_b\d{1,2}(?![0-9a-z])")
# The satellite as metadata names it (SPACECRAFT_ID=LANDSAT_5 in a scene's MTL), or a scene's product ID
# (LT05_L2SP_…, LE07_…, LC08_…: sensor, then satellite) in its metadata or opening its file name
_LANDSAT_NAMED = re.compile(r"(?<![a-z0-9])landsat[ _-]?0?([4-9])(?![0-9])")
_LANDSAT_PRODUCT_ID = re.compile(r"(?<![a-z0-9])l[cote]0([4-9])_")


def _is_c2_code(band: gdal.Band) -> bool:
    return bool(_LANDSAT_C2_CODE.search((band.GetDescription() or "").lower()))


def landsat_number(dataset: gdal.Dataset) -> Optional[int]:
    """Which Landsat satellite took the image, where its metadata or file name says; None where
    nothing says, or where they name different satellites (a composite)."""
    texts = [f"{key}={value}".lower() for key, value in (dataset.GetMetadata() or {}).items()]
    numbers = {int(number) for text in texts for pattern in (_LANDSAT_NAMED, _LANDSAT_PRODUCT_ID)
               for number in pattern.findall(text)}
    named = _LANDSAT_PRODUCT_ID.match(os.path.basename(dataset.GetDescription() or "").lower())
    if named:
        numbers.add(int(named.group(1)))
    return numbers.pop() if len(numbers) == 1 else None


def _codes(dataset: gdal.Dataset) -> Tuple[Codes, bool]:
    """The band codes of the image's satellite, and whether assumed: the Landsat the file names, else
    Landsat 8/9's (assumed) for Collection 2 codes (SR_B4), else Sentinel-2's."""
    number = landsat_number(dataset)
    if number is not None:
        return _LANDSAT_ALIASES.get(number, BAND_ALIASES), False
    if any(_is_c2_code(dataset.GetRasterBand(index)) for index in range(1, dataset.RasterCount + 1)):
        return _LANDSAT_8_9_ALIASES, True
    return BAND_ALIASES, False


def _found_bands(dataset: gdal.Dataset, expected: Sequence[str], table: Codes) -> Tuple[Optional[int], ...]:
    """Each of the model's bands by :func:`_find_band` (None: not found)."""
    return tuple(_find_band(dataset, name, table) for name in expected)


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
        code = next((word.upper() for word in _description_words(band) if _BAND_CODE.match(word)), _colour(band))
        if code is None:
            return []
        names.append(code)
    return names


def _find_band(dataset: gdal.Dataset, name: str, table: Codes) -> Optional[int]:
    """The band ``name`` by description, read with ``table``, else by colour interpretation."""
    aliases = table.get(name.lower(), {name.lower()})
    bands = [dataset.GetRasterBand(index) for index in range(1, dataset.RasterCount + 1)]
    named = [i for i, words in enumerate(map(_description_words, bands), 1)
             if aliases.intersection(words) and "edge" not in words]
    coloured = [i for i, band in enumerate(bands, 1) if _colour(band) == name.lower()]
    return (named + coloured + [None])[0]
