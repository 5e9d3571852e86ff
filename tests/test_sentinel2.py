"""Sentinel-2 products as inputs: a product's 10 m subdataset (the name QGIS gives the layer), in a
SAFE folder or in the zip users download, is read as its red, green and blue bands, and the part of
a tile the swath does not reach (filled with 0, without a nodata value) is nodata, not black land.
The products are made from real Sentinel-2 pixels of OSCD (``sentinel2_product``)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
from osgeo import gdal

from deepcl_core.detect import DetectOptions, DetectOutputs, detect_changes
from deepcl_core.errors import InputError
from deepcl_core.outputs import CHANGE_NODATA
from deepcl_core.raster_io import decoded_block_size, open_raster
from deepcl_core.row_strips import RowStrip

from sentinel2_product import Product, abudhabi_products, zipped

FAST = dict(tile_size=128, overlap=32, device="cpu")


@pytest.fixture(scope="module", params=["L1C", "L2A"])
def products(request, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Tuple[Product, Product]:
    """The abudhabi pair as products of two UTM zones, of either processing level."""
    return abudhabi_products(data_dir / "oscd" / "abudhabi", tmp_path_factory.mktemp("sentinel2"), request.param)


def _detect(before: str, after: str, folder: Path, model) -> Dict[str, np.ndarray]:
    folder.mkdir()
    outputs = DetectOutputs(change=folder / "change.tif", confidence=folder / "confidence.tif")
    detect_changes(before, after, outputs, DetectOptions(**FAST), model=model)
    return {name: gdal.Open(str(getattr(outputs, name))).ReadAsArray() for name in ("change", "confidence")}


def test_a_products_10m_bands_give_the_outputs_of_the_same_pixels_in_geotiffs(products, tiny_model, tmp_path):
    """The before product from its SAFE folder, the after product from its zip, against GeoTIFFs of
    the same pixels with nodata 0: the same change and confidence, and the before tile's unreached
    corners are nodata in both outputs."""
    before, after = products
    from_products = _detect(before.subdataset, zipped(after, tmp_path / "after.zip").subdataset,
                            tmp_path / "products", tiny_model)
    from_geotiffs = _detect(str(before.reference), str(after.reference), tmp_path / "geotiffs", tiny_model)
    np.testing.assert_array_equal(from_products["change"], from_geotiffs["change"])
    np.testing.assert_array_equal(from_products["confidence"], from_geotiffs["confidence"])
    unreached = (gdal.Open(str(before.reference)).ReadAsArray() == 0).all(axis=0)
    assert 500 < unreached.sum() < 0.2 * unreached.size  # the corners a rotation to UTM uncovers
    assert (from_products["change"][unreached] == CHANGE_NODATA).all()
    assert (from_products["change"][~unreached] != CHANGE_NODATA).mean() > 0.95  # the after image covers the rest
    assert not list(before.metadata.parent.rglob("*.aux.xml"))  # nothing written into the product


def test_the_10m_bands_are_red_green_and_blue_then_nir_with_an_alpha_band(products):
    """The alpha band is 0 where the tile holds no data and, at Level-2A, where the scene
    classification finds cloud, shadow or cirrus; water and snow stay (the references' zeros)."""
    for product in products:
        dataset = open_raster(product.subdataset, "before")
        names = [dataset.GetRasterBand(index).GetDescription().split(",")[0] for index in range(1, 5)]
        assert names == ["B4", "B3", "B2", "B8"]
        assert dataset.GetRasterBand(5).GetColorInterpretation() == gdal.GCI_AlphaBand
        reference = gdal.Open(str(product.reference)).ReadAsArray()
        np.testing.assert_array_equal(dataset.GetRasterBand(5).ReadAsArray() > 0, (reference != 0).any(axis=0))
        scene_classes = list(product.metadata.parent.rglob("*_SCL_20m.jp2"))
        assert len(scene_classes) == ("MSIL2A" in product.subdataset)


@pytest.mark.parametrize("given_as", ["metadata", "safe_folder", "zip"])
def test_the_product_itself_is_refused_naming_its_images(products, tiny_model, tmp_path, given_as):
    """The product (its metadata file, its SAFE folder or its zip) holds four images of other bands
    and resolutions: the refusal names them, the 10 m bands' among them, and no output is written."""
    product = zipped(products[0], tmp_path / "before.zip") if given_as == "zip" else products[0]
    given = {"metadata": str(product.metadata), "safe_folder": str(product.metadata.parent),
             "zip": str(tmp_path / "before.zip")}[given_as]
    outputs = DetectOutputs(change=tmp_path / "change.tif", confidence=tmp_path / "confidence.tif")
    with pytest.raises(InputError) as refused:
        detect_changes(given, str(products[1].reference), outputs, DetectOptions(**FAST), model=tiny_model)
    message = str(refused.value)
    assert "holds 4 images (subdatasets)" in message
    assert f"{product.subdataset} (Bands B2, B3, B4, B8 with 10m resolution, UTM 40N)" in message
    assert not list(tmp_path.glob("*.tif"))


def test_reads_follow_the_blocks_of_the_jpeg2000_files_behind_the_product(products):
    """The driver shows the product as a VRT of 128² blocks; a read that stops inside a block of the
    JPEG 2000 file behind it decodes that block again for the next read once GDAL's cache has let it
    go, so the strips and the statistics' sample take the file's blocks."""
    dataset = open_raster(products[0].subdataset, "before")
    behind = gdal.Open(str(next(products[0].metadata.parent.rglob("*_B04*.jp2"))))
    assert dataset.GetRasterBand(1).GetBlockSize() == [128, 128]
    assert behind.GetRasterBand(1).GetBlockSize() != [128, 128]
    assert decoded_block_size(dataset, 1) == tuple(behind.GetRasterBand(1).GetBlockSize())
    assert RowStrip(dataset, (1, 2, 3), "before").block_rows == behind.GetRasterBand(1).GetBlockSize()[1]


def test_the_true_colour_image_gives_the_outputs_of_the_same_pixels_in_geotiffs(products, tiny_model, tmp_path):
    """The TCI (8-bit red, green, blue; the driver gives it no alpha band) with its unreached corners
    nodata: the outputs of GeoTIFFs of the same pixels with nodata 0."""
    before, after = products
    from_products = _detect(before.true_colour, after.true_colour, tmp_path / "products", tiny_model)
    from_geotiffs = _detect(str(before.true_colour_reference), str(after.true_colour_reference),
                            tmp_path / "geotiffs", tiny_model)
    np.testing.assert_array_equal(from_products["change"], from_geotiffs["change"])
    np.testing.assert_array_equal(from_products["confidence"], from_geotiffs["confidence"])
    unreached = (gdal.Open(str(before.true_colour_reference)).ReadAsArray() == 0).all(axis=0)
    assert unreached.sum() > 500 and (from_products["change"][unreached] == CHANGE_NODATA).all()


def test_an_unreadable_scene_classification_is_refused_in_words(products, tmp_path):
    """A Level-2A product whose SCL file is empty (an interrupted copy): a refusal naming it."""
    if "MSIL2A" not in products[0].subdataset:
        pytest.skip("Level-1C products have no scene classification")
    copy = tmp_path / products[0].metadata.parent.name
    shutil.copytree(products[0].metadata.parent, copy)
    next(copy.rglob("*_SCL_20m.jp2")).write_bytes(b"")
    with pytest.raises(InputError, match=r"cannot read the scene classification .*_SCL_20m\.jp2 of a Sentinel-2"):
        open_raster(products[0].subdataset.replace(str(products[0].metadata.parent), str(copy)), "before")


def test_a_level_2a_date_all_cloud_is_refused_saying_why(data_dir, tiny_model, tmp_path):
    """Its scene classification calls every pixel cloud: "no valid pixel (all nodata or not finite)"
    said nothing of why, of a date that looks like an image in QGIS."""
    from sentinel2_product import write_product

    city = data_dir / "oscd" / "abudhabi"
    before = write_product(city / "before.tif", tmp_path / "before", 32640, "20160120T065212", "L2A")
    after = write_product(city / "after.tif", tmp_path / "after", 32640, "20180328T065621", "L2A",
                          scene=[(9, 0, 9999, 0, 9999)])  # cloud of high probability everywhere
    with pytest.raises(InputError, match="the after image has no valid pixel .*scene classification calls cloud"):
        _detect(before.subdataset, after.subdataset, tmp_path / "out", tiny_model)
    nodata = tmp_path / "nodata.tif"  # a GeoTIFF all nodata: no word of clouds
    assert gdal.Translate(str(nodata), str(after.reference), noData=0, scaleParams=[[0, 65535, 0, 0]]) is not None
    with pytest.raises(InputError, match=r"no valid pixel \(all nodata or not finite\) in the area it shares "
                                         r"with the other image$"):
        _detect(str(before.reference), str(nodata), tmp_path / "out2", tiny_model)


def test_a_mostly_saturated_true_colour_image_is_warned_of(data_dir, tiny_model, tmp_path):
    """The true-colour image (TCI) of a desert is mostly at 255 (the product's 10 m bands are not):
    it ran without a word, and the network compared flat white where the ground differs."""
    from core_test_helpers import crop
    from sentinel2_product import write_product

    city = data_dir / "oscd" / "abudhabi"
    images = {role: crop(city / f"{role}.tif", tmp_path / f"{role}_crop.tif", 200, 200, 256, 256)
              for role in ("before", "after")}
    before = write_product(images["before"], tmp_path / "before", 32640, "20160120T065212")
    after = write_product(images["after"], tmp_path / "after", 32640, "20180328T065621")
    warnings = {}
    for kind, images in (("tci", (before.true_colour, after.true_colour)),
                         ("bands", (before.subdataset, after.subdataset))):
        (tmp_path / kind).mkdir()
        outputs = DetectOutputs(change=tmp_path / kind / "change.tif", confidence=tmp_path / kind / "confidence.tif")
        warnings[kind] = detect_changes(*images, outputs, DetectOptions(**FAST), model=tiny_model).warnings
    saturated = [warning for warning in warnings["tci"] if "the largest value its band can hold (saturated)" in warning]
    assert len(saturated) == 2, warnings["tci"]
    assert "its 10 m bands rather than its true-colour image (TCI)" in saturated[0]
    assert not any("saturated" in warning for warning in warnings["bands"]), warnings["bands"]
