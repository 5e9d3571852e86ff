"""Classical peers: Otsu's threshold, change-vector analysis and OTB's MAD on constructed data and
on a real OSCD pair."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from deepcl_core.classical import change_vector_analysis, cva_pair, mad_chi_square, mad_pair, otsu_threshold
from deepcl_core.training import find_pairs


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
