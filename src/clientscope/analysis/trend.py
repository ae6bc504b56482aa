"""Trend statistics over many series at once (numpy only, so runtime stays scipy-free).

Each function takes a matrix `y` of shape (series, points), the times `t` (seconds)
of the points and a `segment` label per point (the server run); pairs of points
from different segments are never compared, so a restart does not look like a
trend. Missing points are NaN.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

MAX_PAIR_POINTS = 240  # Theil-Sen / Mann-Kendall use at most this many evenly spaced points


@dataclass(frozen=True)
class Trends:
    """Per series: OLS slope/intercept/R², Theil-Sen slope, Mann-Kendall S, Z and p (two-sided)."""

    ols_slope: np.ndarray  # units of y per second
    ols_r2: np.ndarray
    theil_sen: np.ndarray  # units of y per second
    mk_s: np.ndarray
    mk_z: np.ndarray
    mk_p: np.ndarray


def _thin(n: int) -> np.ndarray:
    if n <= MAX_PAIR_POINTS:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, MAX_PAIR_POINTS).round().astype(np.int64))


def ols(y: np.ndarray, t: np.ndarray, segment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slope shared by all segments (each its own intercept) and R² of that fit."""
    mask = ~np.isnan(y)
    yz = np.where(mask, y, 0.0)
    sx = np.zeros_like(y)
    sxx = np.zeros(y.shape[0])
    sxy = np.zeros(y.shape[0])
    for seg in np.unique(segment):
        cols = segment == seg
        m = mask[:, cols]
        cnt = np.maximum(m.sum(axis=1), 1)
        tc = np.where(m, t[cols], 0.0)
        t_mean = tc.sum(axis=1) / cnt
        y_mean = yz[:, cols].sum(axis=1) / cnt
        dt = np.where(m, t[cols] - t_mean[:, None], 0.0)
        dy = np.where(m, yz[:, cols] - y_mean[:, None], 0.0)
        sxx += (dt * dt).sum(axis=1)
        sxy += (dt * dy).sum(axis=1)
        sx[:, cols] = dy
    slope = np.divide(sxy, sxx, out=np.zeros_like(sxy), where=sxx > 0)
    ss_tot = (sx * sx).sum(axis=1)
    ss_reg = slope * sxy
    r2 = np.divide(ss_reg, ss_tot, out=np.zeros_like(ss_tot), where=ss_tot > 0)
    return slope, np.clip(r2, 0.0, 1.0)


def _pairs(t: np.ndarray, segment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(t.size, k=1)
    keep = (segment[i] == segment[j]) & (t[j] > t[i])
    return i[keep], j[keep]


def theil_sen_mann_kendall(
    y: np.ndarray, t: np.ndarray, segment: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Theil-Sen slope and Mann-Kendall S, Z, p over within-segment pairs of thinned points."""
    idx = _thin(t.size)
    y, t, segment = y[:, idx], t[idx], segment[idx]
    i, j = _pairs(t, segment)
    series = y.shape[0]
    if i.size == 0:
        zeros = np.zeros(series)
        return zeros, zeros, zeros, np.ones(series)
    dy = y[:, j] - y[:, i]
    slopes = dy / (t[j] - t[i])
    theil = np.nanmedian(np.where(np.isnan(slopes), np.nan, slopes), axis=1)
    sign = np.nan_to_num(np.sign(dy))
    s = sign.sum(axis=1)
    var = _mk_variance(y, segment)
    sd = np.sqrt(np.where(var > 0, var, 1.0))
    z = np.where(var > 0, (s - np.sign(s)) / sd, 0.0)
    p = np.array([math.erfc(abs(v) / math.sqrt(2)) for v in z])
    return np.nan_to_num(theil), s, z, p


@functools.cache
def captures_to_judge(alpha: float, least: int = 3) -> int:
    """The fewest captures (at least `least`) in which the Mann-Kendall test can find a trend at
    `alpha` at all: a strictly rising series must reach p < alpha (6 at 0.01, 5 at 0.05). With
    fewer, "no trend" would be a verdict the test could never have contradicted."""
    n = least
    while n < 100:
        t = np.arange(n, dtype=float)
        if theil_sen_mann_kendall(t[None, :], t, np.zeros(n))[3][0] < alpha:
            return n
        n += 1
    return n


def _mk_variance(y: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Var(S) with the tie correction, summed over segments (independent under H0)."""
    var = np.zeros(y.shape[0])
    for seg in np.unique(segment):
        block = y[:, segment == seg]
        for row in range(block.shape[0]):
            values = block[row][~np.isnan(block[row])]
            n = values.size
            if n < 2:
                continue
            _, counts = np.unique(values, return_counts=True)
            ties = (counts * (counts - 1) * (2 * counts + 5)).sum()
            var[row] += (n * (n - 1) * (2 * n + 5) - ties) / 18.0
    return var


PAIR_BUDGET = 4_000_000  # pairwise slopes held in memory at once


def trends(
    y: np.ndarray, t: np.ndarray, segment: np.ndarray, *, pair_budget: int = PAIR_BUDGET
) -> Trends:
    """All trend statistics for each row of `y` (rows in blocks of about `pair_budget`
    pairwise slopes, so memory stays bounded however many groups there are)."""
    slope, r2 = ols(y, t, segment)
    pairs = max(_thin(t.size).size ** 2 // 2, 1)
    block = max(1, pair_budget // pairs)
    parts = [
        theil_sen_mann_kendall(y[i : i + block], t, segment) for i in range(0, y.shape[0], block)
    ]
    if not parts:
        empty = np.zeros(0)
        return Trends(slope, r2, empty, empty, empty, empty)
    theil, s, z, p = (np.concatenate([part[k] for part in parts]) for k in range(4))
    return Trends(slope, r2, theil, s, z, p)


def linear_fit(t: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Least squares y = a + b t: (a, b, standard error of b, residual standard deviation).

    Points where t or y is missing (NaN) are left out: one NaN would make every number NaN."""
    keep = np.isfinite(t) & np.isfinite(y)
    t, y = t[keep], y[keep]
    n = t.size
    if n < 2:
        return (float(y[-1]) if n else 0.0), 0.0, math.inf, 0.0
    tm, ym = t.mean(), y.mean()
    sxx = float(((t - tm) ** 2).sum())
    if sxx == 0:
        return float(ym), 0.0, math.inf, 0.0
    b = float(((t - tm) * (y - ym)).sum() / sxx)
    a = float(ym - b * tm)
    resid = y - (a + b * t)
    dof = max(n - 2, 1)
    sigma = math.sqrt(float((resid**2).sum()) / dof)
    return a, b, sigma / math.sqrt(sxx), sigma
