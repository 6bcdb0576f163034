"""Student's t distribution, without scipy: its upper tail and its quantiles; the one-sided
paired t-test over seeds that the verdicts use (:func:`paired`).

The tail is the regularized incomplete beta function, ``P(T > t) = I_x(df/2, 1/2) / 2`` with
``x = df / (df + t²)``, evaluated by its continued fraction (modified Lentz; Numerical Recipes
§6.4): accurate to about 1e-14 relative, far into the tail, for any df > 0. The quantile inverts
the tail by bisection. ``tests/test_honest.py`` holds both to scipy where it is installed, and
to the closed forms for df = 1 and df = 2.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_EPS = 1e-16
_TINY = 1e-300
#: Seed-by-seed differences whose spread is below this fraction of the scores have none (the
#: metrics are float32: a few units of its rounding, 1.2e-7).
SPREAD = 1e-6

SeedScores = Mapping[int, Sequence[float]]  # seed -> (validation score, ...)


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (converges fast for x < (a + 1) / (a + b + 2))."""
    c, d = 1.0, _nonzero(1.0 - (a + b) * x / (a + 1.0))
    h = d = 1.0 / d
    for m in range(1, 10_000):
        even = m * (b - m) * x / ((a + 2 * m - 1.0) * (a + 2 * m))
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1.0))
        delta = 1.0
        for num in (even, odd):
            d = 1.0 / _nonzero(1.0 + num * d)
            c = _nonzero(1.0 + num / c)
            delta = d * c
            h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def _nonzero(v: float) -> float:
    return v if abs(v) > _TINY else _TINY


def beta_inc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 ≤ x ≤ 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (the one-sided p-value)."""
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * beta_inc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_quantile(q: float, df: float) -> float:
    """The t with P(T ≤ t) = ``q`` for Student's t with ``df`` degrees of freedom."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"a quantile needs 0 < q < 1, got {q}")
    if q == 0.5:
        return 0.0
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    p = 1.0 - q  # the upper tail to reach
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf(mid, df) > p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    return 0.5 * (lo + hi)


# -- the paired comparison over seeds that wdlab.selection's verdicts use ------------------


def se_diff(a: SeedScores, b: SeedScores) -> float:
    """The standard error of the seed-by-seed differences of validation scores a − b
    (sample std over √n, over the seeds both have); NaN with fewer than two."""
    d = [a[s][0] - b[s][0] for s in sorted(set(a) & set(b))]
    d = [x for x in d if math.isfinite(x)]
    return statistics.stdev(d) / math.sqrt(len(d)) if len(d) >= 2 else math.nan


@dataclass(frozen=True)
class Paired:
    """A one-sided paired comparison "a beats b" over n common seeds: the mean gain (in the
    better direction), its standard error and the p-value (NaN with fewer than two seeds)."""

    n: int
    gain: float
    se: float
    p: float


def paired(a: SeedScores, b: SeedScores, higher: bool) -> Paired:
    """The one-sided paired t-test (n − 1 degrees of freedom) that a's validation scores beat
    b's, seed by seed. A lead the same on every seed (no spread beyond float32 rounding: an
    accuracy moves in steps of 1/rows, so a small lead often is) has no t; its p-value is the
    exact sign-flip test's, 1/2^n (under no effect each seed's sign is a fair coin), or 1 where
    there is no lead."""
    pairs = [(a[s][0], b[s][0]) for s in sorted(set(a) & set(b))]
    pairs = [(x, y) for x, y in pairs if math.isfinite(x) and math.isfinite(y)]
    d = [(x - y) if higher else (y - x) for x, y in pairs]
    n = len(d)
    if n < 2:
        return Paired(n, d[0] if d else math.nan, math.nan, math.nan)
    g, sd = statistics.fmean(d), statistics.stdev(d)
    se = sd / math.sqrt(n)
    tol = SPREAD * max(1e-30, *(abs(v) for pair in pairs for v in pair))
    if sd <= tol:  # the same lead on every seed: t is ±infinite, or 0/0 (no lead at all)
        return Paired(n, g, se, 0.5**n if g > tol else 1.0)
    return Paired(n, g, se, t_sf(g / se, n - 1))
