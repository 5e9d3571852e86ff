"""Classical peers: Otsu's threshold, change-vector analysis and OTB's MAD on constructed data and
on a real OSCD pair."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from deepcl_core.classical import change_vector_analysis, classical_report, cva_pair, mad_chi_square, mad_pair, \
    otsu_threshold
from deepcl_core.training import find_pairs

OTB_MISSING = "otbcli_MultivariateAlterationDetector not found; install Orfeo ToolBox (Debian: apt install otb-bin)"


def test_otsu_splits_two_modes():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.2, 0.05, 5000), rng.normal(0.8, 0.05, 1000)])
    assert 0.35 < otsu_threshold(values) < 0.65


def test_cva_finds_a_painted_square():
    rng = np.random.default_rng(1)
    before = rng.uniform(0.3, 0.5, (3, 64, 64)).astype(np.float32)
    after = before + rng.normal(0, 0.01, before.shape).astype(np.float32)
    after[:, 10:30, 20:40] += 0.4
    valid = np.ones((64, 64), bool)
    _, _, change = change_vector_analysis(before, after, valid)
    expected = np.zeros((64, 64), bool)
    expected[10:30, 20:40] = True
    assert np.array_equal(change, expected)


@pytest.mark.skipif(shutil.which("otbcli_MultivariateAlterationDetector") is None, reason="otb-bin not installed")
def test_mad_chi_square_is_large_where_changed():
    rng = np.random.default_rng(2)
    before = rng.uniform(0, 100, (3, 64, 64)).astype(np.float32)
    after = 2 * before + 5 + rng.normal(0, 1, before.shape).astype(np.float32)  # a radiometric change only
    after[:, 10:30, 20:40] = rng.uniform(0, 300, (3, 20, 20))
    valid = np.ones((64, 64), bool)
    chi_square = mad_chi_square(before, after, valid)
    inside = chi_square[10:30, 20:40].mean()
    assert inside > 5 * np.median(chi_square)


@pytest.mark.skipif(shutil.which("otbcli_MultivariateAlterationDetector") is None, reason="otb-bin not installed")
@pytest.mark.parametrize("method", [cva_pair, mad_pair])
def test_classical_peers_on_a_real_oscd_pair(data_dir, method):
    pair = find_pairs([data_dir / "oscd" / "abudhabi"])[0]  # 4 bands, after on another grid
    result = method(pair)
    metrics = result.confusion.metrics()
    prevalence = (metrics["tp"] + metrics["fn"]) / result.confusion.total
    assert result.confusion.total > 0.9 * 785 * 799
    assert metrics["precision"] > 1.5 * prevalence  # better than chance
    assert metrics["kappa"] > 0.05 and (metrics["tp"] + metrics["fp"]) < 0.5 * result.confusion.total


def test_evaluate_classical_without_orfeo_toolbox_keeps_deepcl_s_metrics_and_cva(data_dir, tiny_model_path,
                                                                                  tmp_path, monkeypatch, capsys,
                                                                                  caplog):
    """With no otbcli_MultivariateAlterationDetector on PATH, ``evaluate --classical`` prints DeepCL's
    metrics and CVA's, and MAD as not run and why, with a warning (it ended with exit 2 and no output
    after all the work: "deepcl: error: … not found")."""
    import json
    import logging

    from deepcl_core.cli import main

    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    pair = data_dir / "levir" / "test_7_0256_0512"
    with caplog.at_level(logging.WARNING, logger="deepcl_core.classical"):
        code = main(["evaluate", "--classical", str(pair), "--model", str(tiny_model_path), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert report["pooled"]["tp"] + report["pooled"]["fn"] > 0
    assert report["classical"]["cva"]["per_pair"]["test_7_0256_0512"]["method"] == "cva_otsu"
    assert report["classical"]["mad"] == {"not_run": OTB_MISSING}
    said = [r.getMessage() for r in caplog.records if r.name == "deepcl_core.classical"]
    assert said == [f"MAD (Orfeo ToolBox) was not run: {OTB_MISSING}"]
    from deepcl_core.classical import classical_unavailable  # for callers that need every peer

    assert classical_unavailable() == {"mad": OTB_MISSING} and classical_unavailable(["cva"]) == {}


def test_a_failing_orfeo_toolbox_is_reported_with_the_pair_and_cva_still_runs(data_dir, tmp_path, monkeypatch):
    """An OTB that is installed but fails (here a stand-in that exits 1 as OTB does without its
    applications) is reported as MAD not run, naming the pair and OTB's last line; CVA still runs."""
    stand_in = tmp_path / "bin" / "otbcli_MultivariateAlterationDetector"
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\necho 'ERROR: Could not find application MultivariateAlterationDetector' >&2\n"
                        "exit 1\n")
    stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", str(stand_in.parent))
    pairs = find_pairs([data_dir / "levir" / "test_7_0256_0512", data_dir / "levir" / "test_55_0256_0000"])
    report = classical_report(pairs)
    assert report["mad"] == {"not_run": "on pair test_55_0256_0000: otbcli_MultivariateAlterationDetector failed "
                                        "(exit 1): ERROR: Could not find application MultivariateAlterationDetector"}
    assert report["cva"]["per_pair"].keys() == {"test_55_0256_0000", "test_7_0256_0512"}
