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
# first (B2 to B5), as Sentinel-2 does. Collection 2 names both SR_Bn (ST_Bn thermal): the name alone
# does not say which.
_LANDSAT_4_7_ALIASES = {"red": {"red", "b3"}, "green": {"green", "b2"}, "blue": {"blue", "b1"}, "nir": {"nir", "b4"}}
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
                 role: str) -> Tuple[int, ...]:
    """1-based band indices for the model's ``expected`` bands. ``requested`` (the user's choice)
    is checked; otherwise bands are found by description or colour interpretation, else the first
    ``len(expected)`` bands are taken."""
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


def band_choice_warnings(dataset: gdal.Dataset, requested: Optional[Sequence[int]], expected: Sequence[str],
                         role: str, can_choose: bool = True) -> List[str]:
    """What a run should say of how :func:`choose_bands` took the image's bands: a guess
    (:func:`unnamed_bands_warning`), Landsat codes read as an assumed satellite's, or bands chosen by
    hand that the file names as other colours than the model takes them for. ``can_choose``: whether
    the user can choose bands by hand (detection), which the advice then offers (training cannot)."""
    advice = f"choose the bands by hand, or {NAME_THE_BANDS}" if can_choose else NAME_THE_BANDS
    warnings = (unnamed_bands_warning(dataset, requested, expected, role, advice),
                named_bands_warning(dataset, requested, expected, role, can_choose))
    return [warning for warning in warnings if warning]


def named_bands_warning(dataset: gdal.Dataset, requested: Optional[Sequence[int]], expected: Sequence[str],
                        role: str, can_choose: bool = True) -> Optional[str]:
    """What the bands' names cast doubt on: Landsat codes read as an assumed satellite's (bands found
    by name), or bands chosen by hand that the file names as other colours than the model's."""
    if requested:
        return _contradicted_bands_warning(dataset, requested, expected, role)
    return _assumed_landsat_warning(dataset, requested, expected, role, can_choose)


def _assumed_landsat_warning(dataset: gdal.Dataset, requested: Optional[Sequence[int]], expected: Sequence[str],
                             role: str, can_choose: bool) -> Optional[str]:
    """Bands found by Landsat Collection 2 codes (SR_B4) in a file that does not say which satellite
    took it: read as Landsat 8/9's (SR_B4 red), which on Landsat 4-7 is near infrared."""
    found = _found_bands(dataset, expected)
    if requested or not _each_found_once(found) or not _landsat_codes_ambiguous(dataset):
        return None
    if not any(_LANDSAT_C2_CODE.search(_description(dataset, index)) for index in found):  # found by other names
        return None
    spoken = ", ".join(_SPOKEN.get(name.lower(), name) for name in expected)
    older = tuple(_find_band(dataset, name, _LANDSAT_4_7_ALIASES) for name in expected)
    if _each_found_once(older):
        how = "choose them by hand, or say so in the file" if can_choose else "say so in the file"
        fix = (f"its {spoken} are bands {_listed(older)} ({_descriptions(dataset, older)}): {how} "
               "(gdal_edit.py -mo SPACECRAFT_ID=LANDSAT_5 FILE) and they are found by their names")
    else:
        fix = "say so in the file (gdal_edit.py -mo SPACECRAFT_ID=LANDSAT_5 FILE)"
    return (f"the {role} image's bands are named with Landsat codes (SR_Bn), which mean other colours on Landsat "
            "4, 5 and 7 than on Landsat 8 and 9, and the file does not say which satellite took it: they were "
            f"read as Landsat 8/9's, bands {_listed(found)} ({_descriptions(dataset, found)}) as {spoken}; "
            f"if the image is from Landsat 4, 5 or 7, {fix}")


def _contradicted_bands_warning(dataset: gdal.Dataset, requested: Optional[Sequence[int]], expected: Sequence[str],
                                role: str) -> Optional[str]:
    """Bands chosen by hand that the file names as another of the model's colours than the one each
    is fed as (band 4 of a Sentinel-2 10 m image, B8, given as red): the network would read near
    infrared as red. Bands whose names are unknown, or agree, are taken without a word."""
    if not requested:
        return None
    clashes = []
    for index, name in zip((int(b) for b in requested), expected):
        meaning = _band_meaning(dataset, index)
        if meaning is None or name.lower() not in BAND_ALIASES or meaning[0] == name.lower():
            continue
        subject = f"band {index} of the {role} image" if not clashes else f"band {index}"
        clashes.append(f"{subject} is {meaning[1]} but is used as {_SPOKEN[name.lower()]}")
    if not clashes:
        return None
    spoken = ", ".join(_SPOKEN.get(name.lower(), name) for name in expected)
    found = _found_bands(dataset, expected)
    advice = (f", which the file says are bands {_listed(found)}: choose those, unless the file names its bands "
              "wrongly" if _each_found_once(found) else ": check the bands chosen")
    return f"{'; '.join(clashes)}: the model takes {spoken} in this order{advice}"


def _band_meaning(dataset: gdal.Dataset, index: int) -> Optional[Tuple[str, str]]:
    """Which of the model's colours band ``index`` is by its description, else by its colour
    interpretation, with how the file says so; None when it does not say (or names two colours, or
    is a Landsat code of unknown satellite)."""
    band = dataset.GetRasterBand(index)
    words = _description_words(band)
    ambiguous = _landsat_codes_ambiguous(dataset) and _LANDSAT_C2_CODE.search(_description(dataset, index))
    if "edge" not in words and not ambiguous:
        meanings = [name for name, aliases in _aliases(dataset).items() if words & aliases]
        if len(meanings) == 1:
            return meanings[0], f"named \"{band.GetDescription()}\" ({_SPOKEN[meanings[0]]})"
        if meanings:
            return None
    colour = next((name for name, interp in _COLOR_INTERP.items() if band.GetColorInterpretation() == interp), None)
    return (colour, f"{colour} by its colour interpretation") if colour else None


def _listed(indices: Sequence[Optional[int]]) -> str:
    return ", ".join(str(index) for index in indices)


def _description(dataset: gdal.Dataset, index: int) -> str:
    return (dataset.GetRasterBand(index).GetDescription() or "").lower()


def _descriptions(dataset: gdal.Dataset, indices: Sequence[Optional[int]]) -> str:
    return ", ".join(dataset.GetRasterBand(index).GetDescription() for index in indices if index)


def _description_words(band: gdal.Band) -> Set[str]:
    return set(re.findall(r"[a-z0-9]+", (band.GetDescription() or "").lower()))


# Landsat Collection 2 band names: SR_B4 (surface reflectance), ST_B6 (surface temperature)
_LANDSAT_C2_CODE = re.compile(r"(?:^|[^a-z0-9])s[rt]_b\d{1,2}(?![0-9a-z])")
# The satellite as metadata names it (SPACECRAFT_ID=LANDSAT_5 in a scene's MTL), or a scene's product ID
# (LT05_L2SP_…, LE07_…, LC08_…: sensor, then satellite) in its metadata or file name
_LANDSAT_NAMED = re.compile(r"landsat[ _-]?0?([4-9])(?![0-9])")
_LANDSAT_PRODUCT_ID = re.compile(r"(?:^|[^a-z0-9])l[cote]0([4-9])_")


def landsat_number(dataset: gdal.Dataset) -> Optional[int]:
    """Which Landsat satellite took the image, where its metadata or file name says; None otherwise."""
    texts = [f"{key}={value}".lower() for key, value in (dataset.GetMetadata() or {}).items()]
    for pattern in (_LANDSAT_NAMED, _LANDSAT_PRODUCT_ID):
        for text in texts:
            match = pattern.search(text)
            if match:
                return int(match.group(1))
    match = _LANDSAT_PRODUCT_ID.search(os.path.basename(dataset.GetDescription() or "").lower())
    return int(match.group(1)) if match else None


def _aliases(dataset: gdal.Dataset) -> Dict[str, Set[str]]:
    """The band codes of the image's satellite: Landsat 4-7's where its metadata says so, else
    Sentinel-2's, which Landsat 8/9 share for blue, green and red."""
    return _LANDSAT_4_7_ALIASES if landsat_number(dataset) in (4, 5, 7) else BAND_ALIASES


def _landsat_codes_ambiguous(dataset: gdal.Dataset) -> bool:
    """Whether bands are named by Landsat Collection 2 codes and nothing says which satellite took them."""
    return (any(_LANDSAT_C2_CODE.search(_description(dataset, index)) for index in range(1, dataset.RasterCount + 1))
            and landsat_number(dataset) is None)


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


def _find_band(dataset: gdal.Dataset, name: str, table: Optional[Dict[str, Set[str]]] = None) -> Optional[int]:
    """The band ``name`` by description (read with ``table``, else the image's satellite's codes), else
    by colour interpretation."""
    aliases = (table or _aliases(dataset)).get(name.lower(), {name.lower()})
    for index in range(1, dataset.RasterCount + 1):
        words = _description_words(dataset.GetRasterBand(index))
        if words & aliases and "edge" not in words:
            return index
    for index in range(1, dataset.RasterCount + 1):
        if dataset.GetRasterBand(index).GetColorInterpretation() == _COLOR_INTERP.get(name.lower(), -1):
            return index
    return None
