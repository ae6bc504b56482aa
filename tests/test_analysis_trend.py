"""Trend statistics against scipy (a dev dependency only) and against known series."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from clientscope.analysis.trend import trends


def test_matches_scipy_on_random_series() -> None:
    rng = np.random.default_rng(7)
    t = np.arange(60) * 15.0
    y = np.stack([0.02 * t + rng.normal(0, 3, t.size), rng.normal(50, 2, t.size).round()])
    seg = np.zeros(t.size)
    tr = trends(y, t, seg)
    for row in range(2):
        ols = stats.linregress(t, y[row])
        assert tr.ols_slope[row] == pytest.approx(ols.slope)
        assert tr.ols_r2[row] == pytest.approx(ols.rvalue**2)
        assert tr.theil_sen[row] == pytest.approx(stats.theilslopes(y[row], t).slope)
        tau = stats.kendalltau(t, y[row])
        assert (tr.mk_p[row] < 0.01) == (tau.pvalue < 0.01)
    assert tr.mk_p[0] < 1e-6 and tr.mk_p[1] > 0.01


def test_a_restart_is_not_a_trend() -> None:
    t = np.arange(40) * 15.0
    y = np.concatenate([np.full(20, 80.0), np.full(20, 20.0)])[None, :]  # drop at a restart
    seg = np.repeat([0, 1], 20)
    tr = trends(y, t, seg)
    assert tr.ols_slope[0] == 0 and tr.theil_sen[0] == 0 and tr.mk_p[0] == 1
    across = trends(y, t, np.zeros(40))  # without segments it would look like a fall
    assert across.mk_p[0] < 1e-6 and across.theil_sen[0] <= 0


def test_many_series_in_blocks_give_the_same_answer() -> None:
    rng = np.random.default_rng(1)
    t = np.arange(300) * 10.0
    y = rng.poisson(20, (50, t.size)).astype(float) + np.linspace(0, 5, 50)[:, None] * t / 3600
    seg = np.zeros(t.size)
    whole = trends(y, t, seg)
    blocks = trends(y, t, seg, pair_budget=30_000)  # blocks of one row
    np.testing.assert_allclose(blocks.theil_sen, whole.theil_sen)
    np.testing.assert_allclose(blocks.mk_z, whole.mk_z)
