"""compare(): correlations against scipy, bootstrap intervals, top-k, signs, noise floor."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from influence_widgets.evaluate import compare, topk_overlap


@pytest.fixture
def vectors():
    rng = np.random.default_rng(0)
    est = rng.normal(size=50)
    act = 0.7 * est + 0.5 * rng.normal(size=50)
    return est, act


def test_correlations_match_scipy(vectors):
    est, act = vectors
    r = compare(torch.tensor(est), act)
    assert r["pearson"] == pytest.approx(stats.pearsonr(est, act)[0], abs=1e-12)
    assert r["spearman"] == pytest.approx(stats.spearmanr(est, act)[0], abs=1e-12)
    assert r["n"] == 50 and 0.5 < r["pearson"] < 0.95


def test_bootstrap_intervals_contain_estimates_and_are_seeded(vectors):
    est, act = vectors
    r = compare(est, act, n_boot=500, seed=3)
    for name in ("pearson", "spearman"):
        lo, hi = r[f"{name}_ci"]
        assert lo < r[name] < hi and hi - lo < 0.5
    assert compare(est, act, n_boot=500, seed=3)["pearson_ci"] == r["pearson_ci"]
    assert compare(est, act, n_boot=500, seed=4)["pearson_ci"] != r["pearson_ci"]
    narrow = compare(est, act, n_boot=500, seed=3, ci=0.5)["pearson_ci"]
    assert r["pearson_ci"][0] < narrow[0] < narrow[1] < r["pearson_ci"][1]


def test_topk_and_signs_on_hand_made_vectors():
    est = [5.0, -4.0, 3.0, 0.1, -0.2, 0.3]
    act = [-6.0, 0.1, 4.0, 0.2, -5.0, 0.3]
    # top-3 by |value|: est {0, 1, 2}; act {0, 4, 2} -> 2 shared
    assert topk_overlap(est, act, k=3) == pytest.approx(2 / 3)
    r = compare(est, act, k=3)
    assert r["topk_overlap"] == pytest.approx(2 / 3) and r["k"] == 3
    assert r["sign_agreement"] == pytest.approx(4 / 6)  # points 0 and 1 disagree
    assert compare(est, act, k=100)["topk_overlap"] == 1.0  # k capped at n


def test_noise_floor_fraction():
    act = np.array([0.1, -0.5, 2.0, 0.01])
    est = np.array([1.0, 2.0, 3.0, 4.0])
    assert compare(est, act, noise=0.2)["frac_within_noise"] == 0.5
    per_point = torch.tensor([1.0, 0.1, 0.1, 0.1])
    assert compare(est, act, noise=per_point)["frac_within_noise"] == 0.5
    assert "frac_within_noise" not in compare(est, act)
    with pytest.raises(ValueError, match="one value per point"):
        compare(est, act, noise=[0.1, 0.2])


def test_constant_input_gives_nan_with_note_and_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = compare([1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5])
    assert np.isnan(r["pearson"]) and np.isnan(r["spearman"])
    assert "actual is constant" in r["note"]
    # a constant side agrees with any ranking or sign pattern by construction: not "perfect"
    assert np.isnan(r["sign_agreement"]) and np.isnan(r["topk_overlap"])


def test_bad_inputs():
    with pytest.raises(ValueError, match="estimated has 3 values but actual has 4"):
        compare([1, 2, 3], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="at least 3 points"):
        compare([1, 2], [2, 1])
    with pytest.raises(ValueError, match=r"actual contains NaN .* positions \[1\]"):
        compare([1, 2, 3], [1, float("nan"), 3])
    with pytest.raises(ValueError, match="1-D"):
        compare(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="ci must be"):
        compare([1, 2, 3], [1, 3, 2], ci=1.5)
