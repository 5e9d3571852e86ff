"""A Sentinel-2 Level-1C or Level-2A product (SAFE folder) made from real Sentinel-2 pixels, for
the tests of inputs named as a product's subdataset (``SENTINEL2_L1C:…/MTD_MSIL1C.xml:10m:EPSG_32640``,
the name QGIS gives such a layer).

No product is in ../shared/data, but its OSCD images are Sentinel-2 L1C bands (B04, B03, B02, B08)
in EPSG:4326. They are warped back onto a 10 m UTM grid, as ESA delivers them, leaving the corners
the rotation uncovers at 0, as a tile's part beyond the satellite's swath is; each band is written
as a lossless JPEG 2000 file, with the true-colour image (TCI: red, green, blue in 1-255, 0 where
there is no data), and described by the two metadata files GDAL's SENTINEL2 driver reads: the
product's (its granules and bands, the special values) and the granule's (CRS, size and position
at 10 m). Everything else of a real product is left out, Level-2A's other bands and its offset
of 1000 (processing baseline 04.00 on) among them: the pixels are the same for both levels."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import NamedTuple, Sequence, Tuple

import numpy as np
from osgeo import gdal

from core_test_helpers import crop

# OSCD band order, and the driver's 10 m bands
BANDS = ("B04", "B03", "B02", "B08")


class Product(NamedTuple):
    metadata: Path  # MTD_MSIL1C.xml or MTD_MSIL2A.xml
    subdataset: str  # the 10 m bands, as GDAL and QGIS name them
    reference: Path  # the same pixels as a GeoTIFF with nodata 0
    true_colour: str  # the TCI
    true_colour_reference: Path


# A Level-2A product's scene classes (its SCL) for the tests: clear land everywhere but for these
# rectangles of (class, first and last row, first and last column) in the 20 m grid.
Hidden = Sequence[Tuple[int, int, int, int, int]]
CLEAR_LAND = 5  # "not vegetated"


def write_product(image: Path, folder: Path, epsg: int, sensing: str, level: str = "L1C",
                  scene: Hidden = ()) -> Product:
    """``image`` (OSCD: 4 bands, UInt16) as a product of ``level`` (L1C or L2A) in ``folder``, on a
    10 m grid of UTM ``epsg`` (326zz), sensed at ``sensing`` (YYYYMMDDTHHMMSS). A Level-2A product
    gets a scene classification of ``scene`` on clear land; the references are nodata where it
    hides the ground (cloud, shadow, cirrus: ``deepcl_core.sentinel2.HIDDEN_SCENE_CLASSES``)."""
    folder.mkdir(parents=True, exist_ok=True)
    reference = folder / f"reference_{epsg}.tif"
    warped = gdal.Warp(str(reference), str(image), dstSRS=f"EPSG:{epsg}", xRes=10, yRes=10,
                       targetAlignedPixels=True, resampleAlg="bilinear", dstNodata=0)
    assert warped is not None, f"cannot warp {image}"
    x0, _, _, y0, _, _ = warped.GetGeoTransform()
    width, height = warped.RasterXSize, warped.RasterYSize
    tile = f"T{epsg % 100:02d}RBN"
    safe = folder / f"S2A_MSI{level}_{sensing}_N0204_R063_{tile}_{sensing}.SAFE"
    granule = f"{level}_{tile}_A000000_{sensing}"
    # Level-2A keeps each resolution in a folder of its own and names it in the file
    images, suffix = ("IMG_DATA/R10m", "_10m") if level == "L2A" else ("IMG_DATA", "")
    (safe / "GRANULE" / granule / images).mkdir(parents=True)
    stems = [f"GRANULE/{granule}/{images}/{tile}_{sensing}_{band}{suffix}" for band in BANDS]
    for index, stem in enumerate(stems, start=1):
        written = gdal.Translate(str(safe / f"{stem}.jp2"), warped, bandList=[index], format="JP2OpenJPEG",
                                 creationOptions=["QUALITY=100", "REVERSIBLE=YES", "BLOCKXSIZE=1024",
                                                  "BLOCKYSIZE=1024"])
        assert written is not None
        written = None
    true_colour_reference = folder / f"true_colour_{epsg}.tif"
    _true_colour(warped, true_colour_reference)
    stems.append(f"GRANULE/{granule}/{images}/{tile}_{sensing}_TCI{suffix}")
    written = gdal.Translate(str(safe / f"{stems[-1]}.jp2"), str(true_colour_reference), format="JP2OpenJPEG",
                             creationOptions=["QUALITY=100", "REVERSIBLE=YES"])
    written = warped = None
    if level == "L2A":
        scene_file = safe / "GRANULE" / granule / "IMG_DATA" / "R20m" / f"{tile}_{sensing}_SCL_20m.jp2"
        hidden = _write_scene(scene_file, scene, reference)
        for path in (reference, true_colour_reference):
            _hide(path, hidden)
    for sidecar in safe.rglob("*.aux.xml"):  # GDAL's notes of nodata and names: a product has none
        sidecar.unlink()
    (safe / "GRANULE" / granule / "MTD_TL.xml").write_text(_granule_metadata(level, epsg, width, height, x0, y0))
    metadata = safe / f"MTD_MSI{level}.xml"
    metadata.write_text(_product_metadata(level, safe.name, sensing, granule, stems))
    return Product(metadata, f"SENTINEL2_{level}:{metadata}:10m:EPSG_{epsg}", reference,
                   f"SENTINEL2_{level}:{metadata}:TCI:EPSG_{epsg}", true_colour_reference)


def abudhabi_products(city: Path, folder: Path, level: str = "L1C") -> Tuple[Product, Product]:
    """OSCD abudhabi's 2016 and 2018 images (``city``; a 192×160 crop) as products of two UTM
    zones, so the after image must be warped onto the before grid, as for a pair of tiles from
    neighbouring zones; at Level-2A, a cloud with its shadow in the before image and cirrus in the
    after image (and, in each, a water body and snow, which stay)."""
    before = crop(city / "before.tif", folder / "before_4326.tif", 100, 120, 192, 160)
    after = crop(city / "after.tif", folder / "after_4326.tif", 98, 118, 200, 170)
    return (write_product(before, folder / "before", 32640, "20160120T065212", level,
                          scene=[(9, 10, 25, 40, 60), (3, 30, 35, 40, 60), (6, 60, 70, 10, 20)]),
            write_product(after, folder / "after", 32639, "20180328T065621", level,
                          scene=[(10, 50, 65, 20, 40), (11, 5, 10, 5, 15)]))


def zipped(product: Product, archive: Path) -> Product:
    """The product as users download it, one zip holding the SAFE folder, named through /vsizip/."""
    safe = product.metadata.parent
    with zipfile.ZipFile(archive, "w") as packed:
        for path in sorted(safe.rglob("*")):
            packed.write(path, path.relative_to(safe.parent).as_posix())
    metadata = f"/vsizip/{archive}/{safe.name}/{product.metadata.name}"
    return product._replace(metadata=Path(metadata),
                            subdataset=product.subdataset.replace(str(product.metadata), metadata),
                            true_colour=product.true_colour.replace(str(product.metadata), metadata))


def _write_scene(path: Path, scene: Hidden, image: Path) -> np.ndarray:
    """The scene classification on the 20 m grid of ``image``'s granule, as a lossless JPEG 2000
    file; returns where it hides the ground at each 10 m pixel (the nearest 20 m class)."""
    from deepcl_core.sentinel2 import HIDDEN_SCENE_CLASSES

    bands = gdal.Open(str(image))
    width, height = bands.RasterXSize, bands.RasterYSize
    classes = np.full(((height + 1) // 2, (width + 1) // 2), CLEAR_LAND, np.uint8)
    for value, row0, row1, column0, column1 in scene:
        classes[row0:row1 + 1, column0:column1 + 1] = value
    x0, dx, _, y0, _, dy = bands.GetGeoTransform()
    memory = gdal.GetDriverByName("MEM").Create("", classes.shape[1], classes.shape[0], 1, gdal.GDT_Byte)
    memory.SetGeoTransform((x0, 2 * dx, 0, y0, 0, 2 * dy))
    memory.SetProjection(bands.GetProjection())
    memory.GetRasterBand(1).WriteArray(classes)
    path.parent.mkdir(parents=True)
    written = gdal.Translate(str(path), memory, format="JP2OpenJPEG", creationOptions=["QUALITY=100", "REVERSIBLE=YES"])
    assert written is not None
    written = None
    path.with_name(path.name + ".aux.xml").unlink(missing_ok=True)
    return np.isin(classes, HIDDEN_SCENE_CLASSES).repeat(2, axis=0).repeat(2, axis=1)[:height, :width]


def _hide(path: Path, hidden: np.ndarray) -> None:
    """Set the ``hidden`` pixels of a reference image to its nodata, 0."""
    dataset = gdal.Open(str(path), gdal.GA_Update)
    for index in range(1, dataset.RasterCount + 1):
        band = dataset.GetRasterBand(index)
        band.WriteArray(np.where(hidden, 0, band.ReadAsArray()))
    dataset = None


def _true_colour(bands: gdal.Dataset, target: Path) -> None:
    """Red, green and blue reflectance from 0 to 0.2 (digital numbers 0-2000) as 1-255, 0 where
    there is no data: the TCI's scale."""
    values = bands.ReadAsArray()[:3].astype(np.float64)
    colours = np.where(values == 0, 0, np.clip(np.round(values / 2000 * 254) + 1, 1, 255)).astype(np.uint8)
    image = gdal.GetDriverByName("GTiff").Create(str(target), bands.RasterXSize, bands.RasterYSize, 3, gdal.GDT_Byte)
    image.SetGeoTransform(bands.GetGeoTransform())
    image.SetProjection(bands.GetProjection())
    for index in range(3):
        image.GetRasterBand(index + 1).WriteArray(colours[index])
        image.GetRasterBand(index + 1).SetNoDataValue(0)
    image = None


def _product_metadata(level: str, safe: str, sensing: str, granule: str, stems: list) -> str:
    when = f"{sensing[:4]}-{sensing[4:6]}-{sensing[6:8]}T{sensing[9:11]}:{sensing[11:13]}:{sensing[13:15]}.000Z"
    files = "\n".join(f"          <IMAGE_FILE>{stem}</IMAGE_FILE>" for stem in stems)
    quantification = ('<QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>' if level == "L1C" else
                      '<QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit="none">10000'
                      '</BOA_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>')
    root = f"Level-{level[1:]}_User_Product"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:{root} xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-{level[1:]}.xsd">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>{when}</PRODUCT_START_TIME>
      <PRODUCT_URI>{safe}</PRODUCT_URI>
      <PROCESSING_LEVEL>Level-{level[1:]}</PROCESSING_LEVEL>
      <Datatake datatakeIdentifier="GS2A_{sensing}_000000_N02.04">
        <SPACECRAFT_NAME>Sentinel-2A</SPACECRAFT_NAME>
        <DATATAKE_SENSING_START>{when}</DATATAKE_SENSING_START>
      </Datatake>
      <Query_Options completeSingleTile="true">
        <PRODUCT_FORMAT>SAFE_COMPACT</PRODUCT_FORMAT>
        <Band_List>
          <BAND_NAME>B2</BAND_NAME>
          <BAND_NAME>B3</BAND_NAME>
          <BAND_NAME>B4</BAND_NAME>
          <BAND_NAME>B8</BAND_NAME>
        </Band_List>
      </Query_Options>
      <Product_Organisation>
        <Granule_List>
          <Granule granuleIdentifier="{granule}" imageFormat="JPEG2000">
{files}
          </Granule>
        </Granule_List>
      </Product_Organisation>
    </Product_Info>
    <Product_Image_Characteristics>
      <Special_Values>
        <SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT>
        <SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX>
      </Special_Values>
      <Special_Values>
        <SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT>
        <SPECIAL_VALUE_INDEX>65535</SPECIAL_VALUE_INDEX>
      </Special_Values>
      {quantification}
    </Product_Image_Characteristics>
  </n1:General_Info>
</n1:{root}>
"""


def _granule_metadata(level: str, epsg: int, width: int, height: int, x0: float, y0: float) -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-{level[1:]}_Tile_ID
    xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-{level[1:]}_Tile_Metadata.xsd">
  <n1:Geometric_Info>
    <Tile_Geocoding metadataLevel="Brief">
      <HORIZONTAL_CS_NAME>WGS84 / UTM zone {epsg % 100}N</HORIZONTAL_CS_NAME>
      <HORIZONTAL_CS_CODE>EPSG:{epsg}</HORIZONTAL_CS_CODE>
      <Size resolution="10">
        <NROWS>{height}</NROWS>
        <NCOLS>{width}</NCOLS>
      </Size>
      <Geoposition resolution="10">
        <ULX>{x0:.0f}</ULX>
        <ULY>{y0:.0f}</ULY>
        <XDIM>10</XDIM>
        <YDIM>-10</YDIM>
      </Geoposition>
    </Tile_Geocoding>
  </n1:Geometric_Info>
</n1:Level-{level[1:]}_Tile_ID>
"""
