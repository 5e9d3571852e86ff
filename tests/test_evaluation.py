"""Evaluation against hand-computed values: a model whose output is known (every weight zero, the
head's bias ±10, so p ≈ 1 or 0 everywhere and the distance map is constant) on constructed pairs,
and ROC-AUC on small score lists."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deepcl_core.cli import main
from deepcl_core.errors import InputError
from deepcl_core.evaluation import EvaluateOptions, evaluate, roc_auc, write_pseudo_change
from deepcl_core.model import build_network
from deepcl_core.model_file import ModelBundle, save_model
from deepcl_core.raster_io import open_raster, read_window

from core_test_helpers import (ROTATION_PX, SHIFT_PX, TINY_CONFIG, coordinates, displacement,
                               files_open_in_this_process, needs_proc)

SIZE = 64
GEOTRANSFORM = (500000.0, 10.0, 0.0, 5000000.0, 0.0, -10.0)


def constant_model(path: Path, head_bias: float) -> Path:
    state = {k: torch.zeros_like(v) for k, v in build_network(TINY_CONFIG).state_dict().items()}
    for key in state:
        if key.endswith("running_var"):
            state[key] = torch.ones_like(state[key])
    state["head.bias"] = torch.full_like(state["head.bias"], head_bias)
    save_model(ModelBundle(TINY_CONFIG, state, trained=True), path)
    return path


@pytest.fixture
def pairs(tmp_path, write_raster) -> Path:
    """Two georeferenced 64×64 RGB pairs: one with a 16×16 changed square, one unchanged."""
    rng = np.random.default_rng(0)
    for name, changed in (("square", True), ("nothing", False)):
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        for date in ("before", "after"):
            image = rng.integers(0, 255, (3, SIZE, SIZE)).astype(np.uint8)
            write_raster(f"{name}_{date}.tif", image, GEOTRANSFORM, 32633).rename(folder / f"{date}.tif")
        label = np.zeros((SIZE, SIZE), np.uint8)
        if changed:
            label[8:24, 30:46] = 1
        write_raster(f"{name}_label.tif", label, GEOTRANSFORM, 32633).rename(folder / "label.tif")
    return tmp_path / "data"


def test_roc_auc_by_hand():
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert roc_auc(np.array([0.5, 0.5, 0.5]), np.array([0, 1, 0])) == pytest.approx(0.5)  # ties count half
    assert roc_auc(np.array([3.0, 1.0, 2.0, 2.0]), np.array([1, 0, 1, 0])) == pytest.approx(0.875)
    assert roc_auc(np.array([1.0, 2.0]), np.array([0, 0])) is None


def test_everything_called_change(pairs, tmp_path):
    model = constant_model(tmp_path / "all_change.pt", 10.0)
    report = evaluate(EvaluateOptions(model=model, data_dirs=[pairs], device="cpu", pseudo_change=True))
    square = report["per_pair"]["square"]
    n, changed = SIZE * SIZE, 16 * 16
    assert (square["tp"], square["fp"], square["fn"], square["tn"]) == (changed, n - changed, 0, 0)
    assert square["precision"] == pytest.approx(changed / n) and square["recall"] == 1.0
    assert square["f1"] == pytest.approx(2 * changed / (2 * changed + n - changed))
    assert square["iou"] == pytest.approx(changed / n) and square["kappa"] == pytest.approx(0.0)
    assert square["auc_confidence"] == 0.5  # a constant map separates nothing: all ties
    # The network's distance map is constant too, but torch's bilinear upsampling to the image leaves
    # 1-ulp differences on some CPUs (3 distinct values on an AMD EPYC), which the ranks see: 0.497 there.
    assert square["auc_distance"] == pytest.approx(0.5, abs=0.01)
    assert report["per_pair"]["nothing"]["auc_distance"] is None
    assert square["threshold"] == report["threshold"] == 0.5  # the model has no threshold by pixel size
    pooled = report["pooled"]
    assert (pooled["tp"], pooled["fp"], pooled["fn"], pooled["tn"]) == (changed, 2 * n - changed, 0, 0)
    assert pooled["precision"] == pytest.approx(changed / (2 * n))
    assert report["pseudo_change"]["false_positive_rate"] == 1.0


def test_nothing_called_change(pairs, tmp_path):
    model = constant_model(tmp_path / "no_change.pt", -10.0)
    report = evaluate(EvaluateOptions(model=model, data_dirs=[pairs], device="cpu", pseudo_change=True))
    pooled = report["pooled"]
    n, changed = SIZE * SIZE, 16 * 16
    assert (pooled["tp"], pooled["fp"], pooled["fn"], pooled["tn"]) == (0, 0, changed, 2 * n - changed)
    assert pooled["recall"] == 0.0 and pooled["oa"] == pytest.approx(1 - changed / (2 * n))
    assert pooled["kappa"] == pytest.approx(0.0)
    assert report["pseudo_change"]["false_positive_rate"] == 0.0
    # Nothing predicted: no precision (it was reported as 0); the unchanged pair, rightly found
    # unchanged, has none of the change class's ratios (its F1 of 0 read as a failure) and kappa 1
    assert pooled["precision"] is None
    nothing = report["per_pair"]["nothing"]
    assert [nothing[key] for key in ("precision", "recall", "f1", "iou", "oa", "kappa")] == [None] * 4 + [1.0, 1.0]
    assert report["pseudo_change"]["seed_per_pair"] == {"nothing": 0, "square": 1}  # to rerun one pair's alone


def test_pseudo_change_image_is_on_the_grid_with_the_band_names(data_dir, tmp_path):
    source = data_dir / "oscd" / "bercy" / "before.tif"
    out = tmp_path / "t.tif"
    write_pseudo_change(source, out, seed=1)
    original, transformed = open_raster(source, "a"), open_raster(out, "b")
    assert transformed.GetGeoTransform() == original.GetGeoTransform()
    assert transformed.RasterCount == 4 and transformed.GetRasterBand(4).GetDescription() == "NIR (B08)"
    a, _ = read_window(original, [1], 0, 0, original.RasterXSize, original.RasterYSize, "a")
    b, valid = read_window(transformed, [1], 0, 0, original.RasterXSize, original.RasterYSize, "b")
    assert valid.all() and not np.allclose(a, b)
    blocks = [x[0, :384, :352].reshape(48, 8, 44, 8).mean(axis=(1, 3)).ravel() for x in (a, b)]
    assert np.corrcoef(*blocks)[0, 1] > 0.5  # the same place, seen differently (and shifted a little)


def test_pseudo_change_of_an_image_with_transparency_keeps_its_colours_and_its_nodata(data_dir, tmp_path):
    """A paletted image with a nodata index is read as red, green, blue and alpha: the pseudo-change
    copy holds the three colours, and the pixels of the nodata index are NaN in it (the alpha band
    is validity, not a colour to transform)."""
    from osgeo import gdal

    source = tmp_path / "paletted.tif"
    gdal.Translate(str(source), str(data_dir / "levir" / "test_7_0256_0512" / "before.png"), format="GTiff")
    eight_bit = gdal.Open(str(source))
    table = gdal.ColorTable()
    bands = [eight_bit.GetRasterBand(b) for b in (1, 2, 3)]
    assert gdal.ComputeMedianCutPCT(*bands, 64, table) == 0
    paletted = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "p.tif"), 256, 256, 1, gdal.GDT_Byte)
    index = paletted.GetRasterBand(1)
    index.SetRasterColorTable(table)
    assert gdal.DitherRGB2PCT(*bands, index, table) == 0
    index.SetNoDataValue(0)
    indices = index.ReadAsArray()
    index = paletted = eight_bit = bands = None  # written and closed
    out = tmp_path / "t.tif"
    write_pseudo_change(tmp_path / "p.tif", out, seed=1)
    transformed = open_raster(out, "t")
    assert transformed.RasterCount == 3
    values = transformed.ReadAsArray()
    assert 0 < (indices == 0).sum() < indices.size
    assert np.isnan(values[:, indices == 0]).all() and np.isfinite(values[:, indices != 0]).all()


def test_cli_prints_json(pairs, tmp_path, capsys):
    model = constant_model(tmp_path / "all_change.pt", 10.0)
    assert main(["evaluate", "--model", str(model), str(pairs), "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pairs"] == 2 and report["pooled"]["recall"] == 1.0
    # Pixel counts are whole numbers, as Processing's outputs give them (the JSON said "tp": 112.0)
    for metrics in (report["pooled"], *report["per_pair"].values()):
        assert all(type(metrics[count]) is int for count in ("tp", "fp", "fn", "tn")), metrics


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    code = main(["evaluate", "--model", str(tmp_path / "missing.pt"), str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1


def test_per_pair_counts_pool_by_data_set():
    from deepcl_core.metrics import Confusion, pooled_by_group

    per_pair = {"a": Confusion(1, 2, 3, 4).metrics(), "b": Confusion(10, 0, 0, 90).metrics(),
                "c": Confusion(5, 5, 5, 5).metrics()}
    pooled = pooled_by_group(per_pair, {"a": "oscd", "b": "levir", "c": "oscd"})
    assert pooled == {"oscd": Confusion(6, 7, 8, 9), "levir": Confusion(10, 0, 0, 90)}
    assert pooled["oscd"].metrics()["f1"] == pytest.approx(12 / 27)


def test_pairs_of_coarse_pixels_are_judged_at_the_model_s_coarse_threshold(pairs, tmp_path):
    """Probability 0.5 everywhere: the 10 m pairs are all change at the coarse threshold 0.4,
    where the general threshold 0.6 would call nothing change."""
    from deepcl_core.model_file import load_model

    bundle = load_model(constant_model(tmp_path / "half.pt", 0.0))
    bundle.threshold, bundle.thresholds_by_pixel_size = 0.6, ((5.0, 0.4),)
    save_model(bundle, tmp_path / "half.pt")
    report = evaluate(EvaluateOptions(model=tmp_path / "half.pt", data_dirs=[pairs], device="cpu"))
    assert report["thresholds_by_pixel_size"] == ((5.0, 0.4),)
    assert all(m["threshold"] == 0.4 and m["fn"] == 0 and m["tn"] == 0 for m in report["per_pair"].values())
    assert all(m["input_scale"] == 1 for m in report["per_pair"].values())


def test_input_scale_override_reaches_detection(pairs, tmp_path, capsys):
    """The model enlarges 10 m images 2×; ``--input-scale 1`` runs them as they are, and the report says so."""
    from deepcl_core.model_file import load_model

    bundle = load_model(constant_model(tmp_path / "half.pt", 0.0))
    bundle.input_scales_by_pixel_size = ((5.0, 2),)
    save_model(bundle, tmp_path / "half.pt")
    as_model = evaluate(EvaluateOptions(model=tmp_path / "half.pt", data_dirs=[pairs], device="cpu"))
    assert all(m["input_scale"] == 2 for m in as_model["per_pair"].values())
    assert as_model["input_scale"] is None and as_model["input_scales_by_pixel_size"] == ((5.0, 2),)
    assert main(["evaluate", str(pairs), "--model", str(tmp_path / "half.pt"), "--device", "cpu",
                 "--input-scale", "1"]) == 0
    overridden = json.loads(capsys.readouterr().out)
    assert all(m["input_scale"] == 1 for m in overridden["per_pair"].values())
    assert overridden["input_scale"] == 1 and overridden["input_scales_by_pixel_size"] == []


@needs_proc
def test_a_failed_evaluation_leaves_no_input_open(pairs, tmp_path, write_raster):
    """A label that is not binary stops the run; the exception, kept as QGIS keeps a failed
    Processing run's, holds none of the pair's files open."""
    label = np.zeros((SIZE, SIZE), np.uint8)
    label[:4, :4] = 7
    write_raster("bad_label.tif", label, GEOTRANSFORM, 32633).rename(pairs / "square" / "label.tif")
    model = constant_model(tmp_path / "all_change.pt", 10.0)
    with pytest.raises(InputError, match="not binary") as caught:
        evaluate(EvaluateOptions(model=model, data_dirs=[pairs], device="cpu"))
    assert caught.value.__traceback__ is not None
    inputs = {str(path) for path in pairs.glob("*/*")}
    assert not inputs & files_open_in_this_process()


def test_an_unusable_pair_is_named_and_a_file_is_no_data_folder(data_dir, tiny_model_path, tmp_path):
    """Of several pairs, the refusal names the one at fault; a file given as a data folder says so."""
    import shutil

    from osgeo import gdal

    good, bad = tmp_path / "pairs" / "good", tmp_path / "pairs" / "bad"
    shutil.copytree(data_dir / "levir" / "test_7_0256_0512", good)
    shutil.copytree(data_dir / "levir" / "test_7_0256_0512", bad)
    gdal.Translate(str(bad / "after.tif"), str(bad / "after.png"), srcWin=[0, 0, 200, 200])
    (bad / "after.png").unlink()
    with pytest.raises(InputError, match=r"^pair bad: neither image is georeferenced and their sizes differ"):
        evaluate(EvaluateOptions(model=tiny_model_path, data_dirs=[tmp_path / "pairs"], device="cpu"))
    with pytest.raises(InputError, match="is a file; give the folder that holds the labelled pairs"):
        evaluate(EvaluateOptions(model=tiny_model_path, data_dirs=[good / "before.png"], device="cpu"))


def test_small_tiles_are_evaluated_with_a_smaller_overlap_and_bad_ones_refused_up_front(data_dir, tiny_model_path,
                                                                                         capsys):
    """evaluate has --tile but no --overlap: a tile under 160 gets a quarter of itself as overlap
    rather than a refusal of the default 64 the user never gave; a tile detection cannot take is
    refused before any pair runs, in detection's words and as no pair's fault."""
    pair = data_dir / "levir" / "test_7_0256_0512"
    for tile in ("32", "64", "128"):
        assert main(["evaluate", str(pair), "--model", str(tiny_model_path), "--device", "cpu", "--tile", tile]) == 0
        assert json.loads(capsys.readouterr().out)["pairs"] == 1
    assert main(["evaluate", str(pair), "--model", str(tiny_model_path), "--device", "cpu", "--tile", "100"]) == 2
    refusal = capsys.readouterr().err.strip()
    assert refusal == "deepcl: error: tile size must be a multiple of 32 and at least 32; got 100"  # no pair named
    with pytest.raises(InputError, match="overlap must be at least 0 and under half the tile size"):
        evaluate(EvaluateOptions(model=tiny_model_path, data_dirs=[pair], device="cpu", tile_size=64, overlap=32))


@pytest.mark.parametrize("label", ["placed_elsewhere", "all_nodata"])
def test_a_pair_whose_label_covers_none_of_its_pixels_is_refused_as_training_refuses_it(
        label, data_dir, tiny_model_path, tmp_path, capsys):
    """A label georeferenced elsewhere (or all nodata) leaves no pixel to score: it was reported as a
    scored pair of 0 pixels (F1 0, OA 0, kappa 1). Refused, in the words calibration (and training) use."""
    import shutil

    from osgeo import gdal

    source = data_dir / "oscd" / "bercy"
    pair = tmp_path / "pairs" / "bercy"
    pair.mkdir(parents=True)
    for date in ("before", "after"):
        shutil.copy(source / f"{date}.tif", pair / f"{date}.tif")
    if label == "placed_elsewhere":
        gdal.Translate(str(pair / "label.tif"), str(source / "label.tif"), outputBounds=[0, 1, 1, 0])
    else:
        gdal.Translate(str(pair / "label.tif"), str(source / "label.tif"), noData=1, scaleParams=[[0, 1, 1, 1]])
    message = "pair bercy has no pixel where before, after and label all have data"
    with pytest.raises(InputError, match=f"^{message}$"):
        evaluate(EvaluateOptions(model=tiny_model_path, data_dirs=[tmp_path / "pairs"], device="cpu"))
    assert main(["calibrate", "--model", str(tiny_model_path), "--out", str(tmp_path / "x.pt"), "--device", "cpu",
                 str(tmp_path / "pairs")]) == 2
    assert capsys.readouterr().err.strip() == f"deepcl: error: {message}"


def test_metrics_of_no_pixel_claim_no_agreement():
    """An empty confusion matrix: kappa 0 as OA 0 (every undefined ratio here is 0), not the 1 of
    perfect agreement, which a matrix of pixels that all agree keeps."""
    from deepcl_core.metrics import Confusion

    empty = Confusion().metrics()
    assert (empty["oa"], empty["kappa"], empty["f1"]) == (0.0, 0.0, 0.0)
    assert Confusion(0, 0, 0, 5).metrics()["kappa"] == Confusion(3, 0, 0, 5).metrics()["kappa"] == 1.0
    assert Confusion().metrics(undefined=None)["f1"] is None  # as reports give it


def test_a_valid_mask_of_zeros_and_ones_selects_pixels_not_indices():
    """A 0/1 integer mask indexed by position: 4 pixels counted as 8 (tp 4, fp 3, tn 1)."""
    from deepcl_core.metrics import Confusion

    counts = Confusion.of(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 1]), valid=np.array([1, 1, 1, 0]))
    assert counts == Confusion(tp=1, fp=1, fn=0, tn=1)


def test_pseudo_change_does_not_warn_of_fill_in_its_own_transformed_image(data_dir, tiny_model_path, tmp_path,
                                                                         caplog):
    """T(x) of levir/train_386 (the second pair: seed 1) holds 7 % pixels 0 in every band, x's darkest
    pixels clipped by a darkening: detection warned to declare 0 as nodata in "the after image",
    evaluate's temporary file. Its other warnings still come, once per detection."""
    import logging

    levir = data_dir / "levir"
    write_pseudo_change(levir / "train_386_0512_0768" / "before.png", tmp_path / "t.tif", seed=1)
    transformed = open_raster(tmp_path / "t.tif", "t").ReadAsArray()
    assert (transformed == 0).all(axis=0).mean() > 0.05  # what the warning was about
    with caplog.at_level(logging.WARNING, logger="deepcl_core.detect"):
        report = evaluate(EvaluateOptions(model=tiny_model_path, data_dirs=[levir / "test_7_0256_0512",
                                                                           levir / "train_386_0512_0768"],
                                          device="cpu", pseudo_change=True))
    warnings = [r.getMessage() for r in caplog.records if r.name == "deepcl_core.detect"]
    assert report["pseudo_change"]["per_pair"].keys() == {"test_7_0256_0512", "train_386_0512_0768"}
    assert not [w for w in warnings if "in every band" in w or "-a_nodata" in w]
    assert sum("never trained" in w for w in warnings) == 4  # 2 pairs, each detected as it is and against T(x)


@pytest.mark.parametrize("fault", ["label_of_classes_1_2", "after_of_another_size"])
def test_a_bad_last_pair_is_refused_before_any_pair_s_detection(fault, data_dir, tiny_model_path, tmp_path,
                                                               monkeypatch):
    """The last of two pairs has a label of classes 1/2, or an after image that cannot be put on its
    before grid: refused in the same words as before, but before the first detection (the label was
    read only after the pair's detection, so every earlier pair's work was lost to it)."""
    import shutil

    from osgeo import gdal

    import deepcl_core.evaluation as evaluation
    from deepcl_core.detect import detect_changes

    source = data_dir / "levir" / "test_7_0256_0512"
    shutil.copytree(source, tmp_path / "pairs" / "a_good")
    bad = tmp_path / "pairs" / "zz_bad"
    shutil.copytree(source, bad)
    if fault == "label_of_classes_1_2":
        gdal.Translate(str(bad / "label.tif"), str(source / "label.png"), scaleParams=[[0, 1, 1, 2]])
        (bad / "label.png").unlink()
        expected = r"^label .*zz_bad/label\.tif is not binary \(values 1, 2\)"
    else:
        gdal.Translate(str(bad / "after.tif"), str(source / "after.png"), srcWin=[0, 0, 200, 200])
        (bad / "after.png").unlink()
        expected = r"^pair zz_bad: neither image is georeferenced and their sizes differ"
    detected = []

    def counting_detection(before, *args, **kwargs):
        detected.append(Path(before).parent.name)
        return detect_changes(before, *args, **kwargs)

    monkeypatch.setattr(evaluation, "detect_changes", counting_detection)
    with pytest.raises(InputError, match=expected):
        evaluate(EvaluateOptions(model=tiny_model_path, data_dirs=[tmp_path / "pairs"], device="cpu"))
    assert detected == [], "a bad pair must be refused before any pair's detection"


def test_a_label_s_warning_comes_once_before_any_detection(data_dir, tiny_model_path, tmp_path, caplog):
    """Labels are checked up front and read again to be scored: their warning (here of a 0/1 label
    declaring 1 as nodata) comes once, before any detection's; on the command line also with the
    classical peers, which read them once more (it came three times)."""
    import logging
    import shutil

    from osgeo import gdal

    source = data_dir / "levir" / "test_7_0256_0512"
    pair = tmp_path / "pairs" / "declared"
    shutil.copytree(source, pair)
    gdal.Translate(str(pair / "label.tif"), str(source / "label.png"), noData=1)
    (pair / "label.png").unlink()
    with caplog.at_level(logging.WARNING):
        evaluate(EvaluateOptions(model=tiny_model_path, data_dirs=[tmp_path / "pairs"], device="cpu"))
    loggers = [r.name for r in caplog.records if r.name in ("deepcl_core.training.pairs", "deepcl_core.detect")]
    assert loggers[0] == "deepcl_core.training.pairs" and loggers.count("deepcl_core.training.pairs") == 1, loggers
    from deepcl_core.cli import main

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(["evaluate", "--model", str(tiny_model_path), "--device", "cpu", "--classical",
                     str(tmp_path / "pairs")]) == 0
    said = [r.getMessage() for r in caplog.records if "declares 1, a value of change, as nodata" in r.getMessage()]
    assert len(said) == 1, said


def test_detection_warnings_name_their_pair(data_dir, tiny_model_path, tmp_path, caplog):
    """Of several pairs, each detection warning says which pair it is about (it did not), and which
    detection of it under --pseudo-change. A 4-band copy of a LEVIR before image without band names
    gets detection's band warning."""
    import logging
    import shutil

    from osgeo import gdal

    levir = data_dir / "levir"
    for name in ("test_7_0256_0512", "train_386_0512_0768"):
        shutil.copytree(levir / name, tmp_path / "pairs" / name)
    four = tmp_path / "pairs" / "test_7_0256_0512"
    gdal.Translate(str(four / "before.tif"), str(four / "before.png"), bandList=[1, 2, 3, 3],
                   format="GTiff", options=["-colorinterp", "undefined,undefined,undefined,undefined"])
    (four / "before.png").unlink()
    with caplog.at_level(logging.WARNING, logger="deepcl_core.detect"):
        evaluate(EvaluateOptions(model=tiny_model_path, data_dirs=[tmp_path / "pairs"], device="cpu",
                                 pseudo_change=True))
    warnings = [r.getMessage() for r in caplog.records if r.name == "deepcl_core.detect"]
    bands = "pair test_7_0256_0512: the before image's 4 bands do not say which is red, green or blue"
    assert sum(w.startswith(bands) for w in warnings) == 1, warnings
    # Evaluation has no band choice to offer (it said "choose the bands by hand, or name them in the files")
    assert [w for w in warnings if w.startswith(bands)][0].endswith(
        "if they are in another order, name them in the files, e.g. gdal_edit.py -colorinterp_3 red -colorinterp_2 "
        "green -colorinterp_1 blue FILE for blue, green, red")
    untrained = "the model was never trained: its output is meaningless"
    assert sorted(w for w in warnings if w.endswith(untrained)) == sorted(
        f"pair {name}{detection}: {untrained}" for name in ("test_7_0256_0512", "train_386_0512_0768")
        for detection in ("", " (pseudo-change)"))


def test_pseudo_change_of_a_whole_scene_moves_no_pixel_beyond_the_misregistration_bound(write_raster,
                                                                                        monkeypatch):
    """evaluate --pseudo-change warps the whole image: a ±3° rotation about its centre moved an 800²
    scene's pixels 9-26 px, "unchanged" pairs of objects moved far. On an image of each pixel's own
    x and y (radiometry and noise off, to read positions) no pixel moves over 2 px of shift plus 1 px of
    rotation, and the images still move."""
    import deepcl_core.training.augment as augment

    monkeypatch.setattr(augment, "radiometric", lambda image, *args, **kwargs: np.clip(image, 0.0, 1.0))
    monkeypatch.setattr(augment, "noise_and_blur", lambda image, *args, **kwargs: image)
    image = coordinates(800, 800)
    source = write_raster("coordinates.tif", np.concatenate([image, image[:1]]), GEOTRANSFORM, 32633)
    moved = []
    for seed in range(8):
        out = source.with_name(f"t{seed}.tif")
        write_pseudo_change(source, out, seed)
        moved.append(float(displacement(image, open_raster(out, "t").ReadAsArray()[:2]).max()))
    assert max(moved) <= SHIFT_PX + ROTATION_PX + 1e-2, moved
    assert sum(m > 0.1 for m in moved) >= 3, moved  # misregistration is drawn for most transforms


def test_pseudo_change_haze_brightens_blue_most_by_the_files_band_names(data_dir, tmp_path):
    """The haze veil follows the bands as detection reads them: a LEVIR PNG's colour interpretation
    (red, green, blue) and a Sentinel-2 file's band codes (B04, B03, B02, B08): blue rises most."""
    from deepcl_core.training.augment import PseudoChangeStrength

    haze_only = PseudoChangeStrength(brightness=0.0, contrast=0.0, gamma=0.0, colour=0.0, haze=(0.3, 0.3),
                                     shift_px=0.0, rotation_deg=0.0, noise=(0.0, 0.0), blur_sigma=(0.0, 0.0))
    for source, blue, other in ((data_dir / "levir" / "test_7_0256_0512" / "before.png", 2, 0),
                                (data_dir / "oscd" / "bercy" / "before.tif", 2, 3)):
        out = tmp_path / f"{source.parent.name}.tif"
        write_pseudo_change(source, out, seed=1, strength=haze_only)
        original = open_raster(source, "a").ReadAsArray().astype(np.float64)
        transformed = open_raster(out, "b").ReadAsArray().astype(np.float64)
        span = original.max(axis=(1, 2)) - original.min(axis=(1, 2))  # the transform's unit: each band's range
        rise = (transformed - original).mean(axis=(1, 2)) / span
        assert rise[blue] > rise[other] > 0, (source, rise)
        assert rise[blue] == max(rise)


def test_pseudo_change_haze_of_unnamed_bands_takes_them_as_detection_does(write_raster):
    """An image whose bands say nothing is read as the model's bands, first bands first (band_choice);
    without a model's bands its haze is grey."""
    from osgeo import gdal

    from deepcl_core.evaluation import haze_band_names

    path = write_raster("unnamed.tif", np.zeros((4, 8, 8), np.uint16), GEOTRANSFORM, 32633)
    dataset = gdal.Open(str(path))
    assert haze_band_names(dataset, [1, 2, 3, 4], ("red", "green", "blue")) == ["red", "green", "blue", ""]
    assert haze_band_names(dataset, [1, 2, 3, 4]) == ["", "", "", ""]


def test_an_image_without_the_models_bands_is_refused_without_advice_evaluation_cannot_follow(data_dir,
                                                                                          tiny_model_path, tmp_path):
    """A false-colour composite (near infrared, red, green of an OSCD pair, named so) lacks blue; the
    refusal advised "or choose the bands by hand", which `deepcl evaluate` has no option for."""
    from osgeo import gdal

    pair = tmp_path / "pairs" / "bercy"
    pair.mkdir(parents=True)
    for role, bands in (("before", [4, 1, 2]), ("after", None), ("label", None)):
        gdal.Translate(str(pair / f"{role}.tif"), str(data_dir / "oscd" / "bercy" / f"{role}.tif"),
                       srcWin=[0, 0, 128, 128], bandList=bands)
    with pytest.raises(InputError) as refused:
        evaluate(EvaluateOptions(model=tiny_model_path, data_dirs=[tmp_path / "pairs"], device="cpu"))
    assert str(refused.value) == (
        "pair bercy: the model needs the bands red, green, blue; the before image's bands are B08, B04, B03, "
        "without blue: choose an image that holds them (of a Sentinel-2 product, its 10m subdataset)")
