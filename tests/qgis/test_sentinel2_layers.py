"""Layers of Sentinel-2 products, as QGIS adds a product's 10 m subdataset: detected through
Processing like GeoTIFFs of the same pixels, and put in date order by the panel."""
from __future__ import annotations

from datetime import date
from typing import Tuple

import numpy as np
import pytest

from plugin_test_helpers import pair, read, run
from sentinel2_product import Product, abudhabi_products, zipped

ALG = "deepcl:detectchanges"


@pytest.fixture(scope="module")
def products(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Product, Product]:
    return abudhabi_products(pair("oscd", "abudhabi"), tmp_path_factory.mktemp("sentinel2"))


def _layer(product: Product, true_colour: bool = False):
    from qgis.core import QgsRasterLayer

    name = product.true_colour if true_colour else product.subdataset
    layer = QgsRasterLayer(name, "MTD_MSIL1C", "gdal")  # no date in the layer's name
    assert layer.isValid() and layer.bandCount() == (3 if true_colour else 4)
    return layer


def test_product_layers_give_the_outputs_of_the_same_pixels_in_geotiffs(deepcl_provider, tiny_model, tmp_path,
                                                                        products):
    results = {}
    for name, before, after in (("layers", _layer(products[0]), _layer(products[1])),
                                ("geotiffs", str(products[0].reference), str(products[1].reference))):
        (tmp_path / name).mkdir()
        results[name] = run(ALG, {"BEFORE": before, "AFTER": after, "MODEL": str(tiny_model), "TILE_SIZE": 128,
                                  "OVERLAP": 16, "DEVICE": "cpu", "CHANGE": str(tmp_path / name / "change.tif"),
                                  "CONFIDENCE": str(tmp_path / name / "confidence.tif")})
    for output in ("CHANGE", "CONFIDENCE"):
        np.testing.assert_array_equal(read(results["layers"][output]), read(results["geotiffs"][output]))
    change = read(results["layers"]["CHANGE"])
    valid = change != 255  # the change map's nodata
    assert results["layers"]["VALID_PIXELS"] == valid.sum() < 0.98 * valid.size  # without the unreached corners


def test_the_panel_orders_product_layers_by_their_sensing_date(qgis_app, products):
    from deepcl_qgis.dock.layer_choice import acquisition_date, preselect

    before, after = _layer(products[0]), _layer(products[1])
    assert (acquisition_date(before), acquisition_date(after)) == (date(2016, 1, 20), date(2018, 3, 28))
    assert preselect([before, after]) == preselect([after, before]) == (before, after)


def test_the_panel_orders_product_layers_added_from_their_zips_by_their_sensing_date(qgis_app, products, tmp_path):
    """A product's image in its zip, as QGIS adds it from the downloaded file: its dates were read
    from the zip's name alone (GDAL: "Invalid syntax"), and the newer product could be the before one."""
    from deepcl_qgis.dock.layer_choice import acquisition_date, preselect

    before, after = (_layer(zipped(product, tmp_path / f"{name}.zip"))
                     for name, product in (("S2A_MSIL1C_a", products[0]), ("S2A_MSIL1C_b", products[1])))
    assert (acquisition_date(before), acquisition_date(after)) == (date(2016, 1, 20), date(2018, 3, 28))
    assert preselect([after, before]) == (before, after)


def test_the_panel_pairs_images_of_two_products_not_two_of_one(qgis_app, products):
    """Each product added with its 10 m bands and its TCI (QGIS's dialog lists all of a product's
    images): the newest layer, the after product's TCI, is paired with the before product's TCI,
    not with the after product's own 10 m bands, which are of its date."""
    from deepcl_qgis.dock.layer_choice import preselect

    before_bands, before_colour = _layer(products[0]), _layer(products[0], true_colour=True)
    after_bands, after_colour = _layer(products[1]), _layer(products[1], true_colour=True)
    assert preselect([after_colour, after_bands, before_colour, before_bands]) == (before_colour, after_colour)
    assert preselect([after_bands, before_colour, before_bands]) == (before_bands, after_bands)


def test_a_training_pair_from_level_2a_layers_leaves_out_what_detection_leaves_out(qgis_app, tmp_path):
    """Training from product layers (deepcl:trainmodel's pair folder) read the unreached corners and
    the clouds as valid pixels, of no change, or of change under a changed-area polygon."""
    from osgeo import gdal, ogr

    from deepcl_core.normalization import NormalizationSpec
    from deepcl_core.training.pairs import find_pairs, load_pair
    from deepcl_qgis.training_pair import write_pair_folder

    (tmp_path / "products").mkdir()
    before, after = abudhabi_products(pair("oscd", "abudhabi"), tmp_path / "products", level="L2A")
    x0, dx, _, y0, _, dy = gdal.Open(str(before.reference)).GetGeoTransform()
    changed = ogr.CreateGeometryFromWkt(f"POLYGON(({x0} {y0}, {x0 + 120 * dx} {y0}, {x0 + 120 * dx} {y0 + 90 * dy}, "
                                        f"{x0} {y0 + 90 * dy}, {x0} {y0}))")  # over the corner's unreached part
    valid = {}
    for name, sources in (("layers", (before.subdataset, after.subdataset)),
                          ("geotiffs", (str(before.reference), str(after.reference)))):
        write_pair_folder(*sources, [bytes(changed.ExportToWkb())], None, tmp_path / name / "pair")
        loaded = load_pair(find_pairs([tmp_path / name])[0], ["red", "green", "blue"], NormalizationSpec())
        valid[name] = loaded.valid
    hidden = (gdal.Open(str(before.reference)).ReadAsArray() == 0).all(0)  # the before date's corners and clouds
    assert hidden.any() and not (valid["layers"] & hidden).any()
    np.testing.assert_array_equal(valid["layers"], valid["geotiffs"])


def test_a_runs_group_names_two_products_by_their_folders(qgis_app, products, tmp_path):
    """Both layers are named after the product's metadata file: the group read "MTD_MSIL1C →
    MTD_MSIL1C"; each product's SAFE folder names its date."""
    from deepcl_qgis.layer_styling import pair_names, run_group_name

    for before, after in ((products[0], products[1]),
                          (zipped(products[0], tmp_path / "a.zip"), zipped(products[1], tmp_path / "b.zip"))):
        name = run_group_name(pair_names("MTD_MSIL1C", "MTD_MSIL1C", before.subdataset, after.subdataset))
        assert name == f"DeepCL changes: {before.metadata.parent.name} → {after.metadata.parent.name}"
        assert "20160120" in before.metadata.parent.name and "20180328" in after.metadata.parent.name
