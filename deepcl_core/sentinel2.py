"""Sentinel-2 products as GDAL's SENTINEL2 driver shows them (``SENTINEL2_L2A:…/MTD_MSIL2A.xml:10m:
EPSG_32633``): which pixels are a view of the ground, and the blocks decoding really works in.

A tile is filled with the product's NODATA value (0) where the swath does not reach, and the
driver sets no nodata value for it; a Level-2A product also classifies every pixel (its scene
classification, SCL), clouds and their shadows among the classes. Both would otherwise read as
ground, and show as change. The image is returned as a VRT over the driver's with one alpha band
for both (nothing copied). The driver shows 128² blocks over JPEG 2000 files of 1024² blocks; the
VRT records the files' blocks, so that reads can follow them."""
from __future__ import annotations

import posixpath
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence, Tuple

from osgeo import gdal

from .errors import InputError
from .gdal_utils import alpha_band, collect_gdal_errors

DRIVER = "SENTINEL2"
OPEN_OPTIONS = ["ALPHA=YES"]  # the driver's alpha band: 0 where the tile holds NODATA
_IMAGE_PREFIXES = ("SENTINEL2_L1C:", "SENTINEL2_L2A:")  # how GDAL names a product's images
# Scene classes that are no clear view of the ground: no data, saturated or defective, cloud
# shadow, cloud of medium and of high probability, thin cirrus. (Snow, water, dark areas stay.)
HIDDEN_SCENE_CLASSES = (0, 1, 3, 8, 9, 10)
_BLOCK_DOMAIN, _BLOCK_ITEM = "DEEPCL", "DECODED_BLOCK_SIZE"  # where the VRT records the files' blocks


def open_options(name: str) -> Sequence[str]:
    """The open options for the dataset ``name``: :data:`OPEN_OPTIONS` for a product's image."""
    return OPEN_OPTIONS if name.upper().startswith(_IMAGE_PREFIXES) else ()


def product_metadata(folder: Path) -> Optional[str]:
    """The metadata file of a product's SAFE folder (GDAL 3.6 does not open the folder), or None."""
    found = sorted(folder.glob("MTD_MSIL*.xml"))
    return str(found[0]) if found else None


def with_valid_pixels(dataset: gdal.Dataset, name: str) -> gdal.Dataset:
    """``dataset`` (``name`` opened with :data:`OPEN_OPTIONS`) with one alpha band: 0 where the
    tile holds no data, and, in a Level-2A product, where its scene classification finds cloud,
    cloud shadow, cirrus or a defect. The dataset itself where the driver's alpha band is that."""
    alpha = dataset.RasterCount if alpha_band(dataset) is not None else None
    scene = _scene_classification(dataset)
    if alpha is not None and scene is None:
        return dataset  # the driver's alpha band says it all; a VRT over it would only cost reading time
    block = files_block_size(dataset)
    bands = [index for index in range(1, dataset.RasterCount + 1) if index != alpha]
    root = ET.fromstring(gdal.Translate("", dataset, format="VRT", bandList=bands).GetMetadata("xml:VRT")[0])
    # Data where the driver's alpha band says so (the true-colour image has none: where its red
    # is not the product's NODATA value, 0), and where the scene is clear.
    sources = [_source(name, alpha or 1, "0:0,1:255,65535:255")]
    if scene is not None:
        sources.append(_scene_source(scene, dataset))
    root.append(_alpha_band(len(bands) + 1, sources))
    with collect_gdal_errors() as errors:
        wrapped = gdal.Open(ET.tostring(root, encoding="unicode"))
    if wrapped is None:
        raise InputError(f"cannot read the Sentinel-2 image {name}: {errors.last('GDAL gave no reason')}")
    if block is not None:
        wrapped.SetMetadataItem(_BLOCK_ITEM, f"{block[0]} {block[1]}", _BLOCK_DOMAIN)
    return wrapped


def masked_note(dataset: gdal.Dataset) -> str:
    """For a message on an image without a valid pixel: what a Level-2A product's image leaves out
    (a date all cloud looks like an image in QGIS, and "all nodata" said nothing of why); "" else."""
    if dataset.GetMetadataItem("PROCESSING_LEVEL") != "Level-2A":
        return ""
    return ("; of a Sentinel-2 Level-2A product, the pixels its scene classification calls cloud, cloud shadow, "
            "thin cirrus, saturated or defective are no data, as is the part of its tile the swath does not reach: "
            "choose a clearer date, or a product that covers this ground")


def files_block_size(dataset: gdal.Dataset) -> Optional[Tuple[int, int]]:
    """The blocks of the JPEG 2000 files behind a product's image (the driver's, or this module's
    VRT over it); None for any other dataset, or where no file lies behind the first pixel."""
    recorded = dataset.GetMetadataItem(_BLOCK_ITEM, _BLOCK_DOMAIN)
    if recorded:
        width, height = recorded.split()
        return int(width), int(height)
    if dataset.GetDriver().ShortName != DRIVER:
        return None
    location = dataset.GetRasterBand(1).GetMetadataItem("Pixel_0_0", "LocationInfo") or ""
    file = ET.fromstring(location).findtext("File") if location.startswith("<") else None
    return _file_block_size(file) if file else None


@lru_cache(maxsize=32)
def _file_block_size(path: str) -> Optional[Tuple[int, int]]:
    """The blocks of the raster file ``path``, opened once per file: the strips and the statistics'
    sample of every image ask."""
    with collect_gdal_errors():
        source = gdal.Open(path)
    return tuple(source.GetRasterBand(1).GetBlockSize()) if source is not None else None


def _scene_classification(dataset: gdal.Dataset) -> Optional[str]:
    """The 20 m scene classification file (``IMG_DATA/R20m/*_SCL_20m.jp2``) of the one granule
    behind a Level-2A image; None for Level-1C, or where it is missing or several granules lie
    behind (older products)."""
    if dataset.GetMetadataItem("PROCESSING_LEVEL") != "Level-2A":
        return None
    paths = [path.replace("\\", "/") for path in dataset.GetFileList() or []]  # Windows' separators too
    folders = {path.split("/IMG_DATA/")[0] for path in paths if "/IMG_DATA/" in path}
    if len(folders) != 1:
        return None
    scene_folder = posixpath.join(folders.pop(), "IMG_DATA", "R20m")
    found = [entry for entry in gdal.ReadDir(scene_folder) or [] if entry.endswith("_SCL_20m.jp2")]
    return posixpath.join(scene_folder, found[0]) if len(found) == 1 else None


def _source(name: str, band: int, lut: str) -> ET.Element:
    """A source reading ``band`` of the driver's image through ``lut``."""
    source = ET.Element("ComplexSource")
    ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = name
    options = ET.SubElement(source, "OpenOptions")
    for option in open_options(name):
        key, value = option.split("=")
        ET.SubElement(options, "OOI", key=key).text = value
    ET.SubElement(source, "SourceBand").text = str(band)
    ET.SubElement(source, "LUT").text = lut
    return source


def _scene_source(path: str, image: gdal.Dataset) -> ET.Element:
    """The scene classification, its nearest class at each of ``image``'s pixels, as 1 where the
    ground is seen and 0 where it is hidden (a factor of the alpha band)."""
    with collect_gdal_errors() as errors:
        scene = gdal.Open(path)
    if scene is None:
        raise InputError(f"cannot read the scene classification {path} of a Sentinel-2 product: "
                         f"{errors.last('the file may be damaged')}")
    x0, dx, _, y0, _, dy = image.GetGeoTransform()
    sx0, sdx, _, sy0, _, sdy = scene.GetGeoTransform()
    source = ET.Element("ComplexSource", resampling="nearest")
    ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = path
    ET.SubElement(source, "SourceBand").text = "1"
    ET.SubElement(source, "SrcRect", xOff=repr((x0 - sx0) / sdx), yOff=repr((y0 - sy0) / sdy),
                  xSize=repr(image.RasterXSize * dx / sdx), ySize=repr(image.RasterYSize * dy / sdy))
    ET.SubElement(source, "DstRect", xOff="0", yOff="0", xSize=str(image.RasterXSize),
                  ySize=str(image.RasterYSize))
    ET.SubElement(source, "LUT").text = ",".join(
        f"{value}:{0 if value in HIDDEN_SCENE_CLASSES else 1}" for value in range(256))
    return source


def _alpha_band(index: int, sources: list) -> ET.Element:
    """An alpha band, the product of ``sources``: 255 where the first is and every factor is 1
    (GDAL's "mul" takes two sources or more)."""
    band = ET.Element("VRTRasterBand", dataType="Byte", band=str(index))
    ET.SubElement(band, "ColorInterp").text = "Alpha"
    if len(sources) > 1:
        band.set("subClass", "VRTDerivedRasterBand")
        ET.SubElement(band, "PixelFunctionType").text = "mul"
    band.extend(sources)
    return band
