"""Checks on a before/after pair of raster layers and the model that will read them, worded for a
GIS user. Each raises QgsProcessingException with the message to show; they run in
``checkParameterValues`` so that the dialog and ``qgis_process`` refuse before any work starts."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from qgis.core import QgsCoordinateReferenceSystem, QgsProcessingException, QgsRaster, QgsRasterLayer

from .engine import core_module
from .paths import bundled_model_path


def raster_source_problem(value: Any, role: str) -> str:
    """Why a raster given as a file path cannot be read, in the engine's words, or ''. Processing
    itself says only "not found", even for a folder, an empty file or a text file."""
    if not isinstance(value, str) or not value.strip():
        return ""  # a layer object, or nothing: Processing's own checks apply
    path = value.split("|")[0]
    if "/" not in path and "\\" not in path:
        return ""  # a layer id or name in the project, resolved by Processing
    raster_io = core_module("raster_io")
    try:
        raster_io.open_raster(path, role)
    except core_module("errors").DeepCLError as exc:
        message = str(exc)
        return message[:1].upper() + message[1:] + "."
    return ""


def check_distinct(before: QgsRasterLayer, after: QgsRasterLayer) -> None:
    if before.id() == after.id() or before.source() == after.source():
        raise QgsProcessingException(
            f"The same layer ('{before.name()}') is chosen as both the before and the after image; "
            "choose the image taken after the change as the after layer.")


def check_overlap(before_file: str, after_file: str) -> None:
    """The engine's own alignment of the pair, made on the files (``raster_file`` names) before the
    run, no pixel read: CRSs, geotransforms and overlap as the run will see them. A CRS assigned to a
    layer in QGIS but not written in its file is not seen by the run, so not taken from the layer."""
    raster_io = core_module("raster_io")
    core_module("grid").align_after_to_before(raster_io.open_image(before_file, "before"),
                                              raster_io.open_image(after_file, "after"))


def assigned_crs_warning(layer_crs: QgsCoordinateReferenceSystem, name: str) -> str:
    """The warning for a layer with a CRS in QGIS (assigned there) after a run that found none in
    the files it read: it treated the images as without a CRS, and its outputs have none."""
    if not layer_crs.isValid():
        return ""
    return (f"The layer '{name}' has the CRS {layer_crs.authid() or layer_crs.description()} in QGIS, but its file "
            "holds none, and the run reads the file: it ran without a CRS, so the outputs have none and the "
            "changed area is in pixels. To use that CRS, save the layer with it (Export ▸ Save As…) and run on "
            "the copy.")


def check_bands(layer: QgsRasterLayer, bands: Sequence[int], role: str) -> None:
    missing = [band for band in bands if not 1 <= band <= layer.bandCount()]
    if missing:
        raise QgsProcessingException(
            f"Band {missing[0]} does not exist in the {role} image '{layer.name()}', which has "
            f"{layer.bandCount()} band(s); choose bands 1 to {layer.bandCount()}.")
    if len(set(bands)) != len(bands):
        raise QgsProcessingException(f"The {role} bands name the same band twice; choose different bands.")


def check_band_counts(bands_before: Sequence[int], bands_after: Sequence[int]) -> None:
    if bands_before and bands_after and len(bands_before) != len(bands_after):
        raise QgsProcessingException(
            f"{len(bands_before)} before band(s) but {len(bands_after)} after band(s) are chosen; "
            "choose the same bands, in the same order, for both images.")


def model_file_problem(path: str) -> str:
    """Why ``path`` cannot be used as a model file, or an empty string."""
    if not path:
        return "No model file is given; choose a DeepCL model file (.pt)."
    model = Path(path)
    if model.is_dir():
        return f"The model file {model} is a folder; choose the DeepCL model file (.pt) inside it."
    if model.is_file():
        # Processing's own check of the ending says only "Incorrect parameter value for MODEL"; a training
        # checkpoint (.ckpt, which it lets through) is named as such when it is loaded
        return "" if model.suffix.lower() in (".pt", ".ckpt") else (
            f"The model file {model} does not end in .pt, as DeepCL model files do; choose a DeepCL model file.")
    if model.resolve() == bundled_model_path().resolve():
        return ("No trained model is bundled with this copy of the DeepCL plugin yet (expected "
                f"{model}). Choose a DeepCL model file (.pt) as 'Model file', or train one with "
                "'Train a change detection model'.")
    return f"The model file {model} does not exist; choose a DeepCL model file (.pt)."


def check_model(path: str, layer: QgsRasterLayer, bands: Sequence[int], role: str) -> None:
    """The model exists, loads, and takes as many bands as are chosen (or as the image has)."""
    problem = model_file_problem(path)
    if problem:
        raise QgsProcessingException(problem)
    bundle = loaded_model(path)
    names, in_channels = tuple(bundle.bands), int(bundle.config.in_channels)
    wanted = f"{in_channels} band(s) ({', '.join(names)})"
    if bands and len(bands) != in_channels:
        raise QgsProcessingException(
            f"The model {Path(path).name} takes {wanted} but {len(bands)} {role} band(s) are chosen; "
            f"choose {in_channels} {role} bands or a model made for {len(bands)}.")
    available = image_band_count(layer)
    if not bands and available < in_channels:
        raise QgsProcessingException(
            f"The model {Path(path).name} takes {wanted} but the {role} image '{layer.name()}' has "
            f"{available}; choose another image or a model made for {available} band(s).")


def image_band_count(layer: QgsRasterLayer) -> int:
    """The bands the engine reads from ``layer`` when none are chosen: a one-band paletted image
    gives its colours, red, green and blue (``raster_io.open_image``)."""
    if layer.bandCount() == 1 and layer.dataProvider().colorInterpretation(1) == QgsRaster.PaletteIndex:
        return 3
    return layer.bandCount()


def loaded_model(path: str) -> Any:
    """The model file's bundle, loaded once per file version and shared with the detection that
    follows: the dialog checks parameters often, and the panel asks for the threshold whenever the
    before layer changes (in the main thread)."""
    return core_module("model_file").shared_model(path)
