"""Small statistics over seeds without SciPy: Student-t intervals and Welch's t-test."""
from __future__ import annotations

import math
import statistics


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(ln) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln) * _betacf(b, a, 1 - x) / b


def t_sf2(t: float, df: float) -> float:
    """Two-sided tail probability P(|T| >= |t|) of Student's t with df degrees of freedom."""
    return betainc(df / 2, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """t with P(|T| <= t) = p (two-sided), by bisection."""
    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if 1 - t_sf2(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def interval(values, level: float = 0.95):
    """(mean, half-width of the t interval) over seeds; half-width None with fewer than 2."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    m = statistics.fmean(vals)
    if len(vals) < 2:
        return m, None
    return m, t_quantile(level, len(vals) - 1) * statistics.stdev(vals) / math.sqrt(len(vals))


def _welch_parts(a, b):
    """(a - b, squared standard error, Welch-Satterthwaite df) over the non-missing values;
    the last two None with fewer than two values on a side."""
    a, b = [v for v in a if v is not None], [v for v in b if v is not None]
    if not a or not b:
        return None, None, None
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return diff, None, None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return diff, 0.0, None
    return diff, va + vb, (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))


def welch(a, b):
    """Welch's two-sample t-test: (difference of means a - b, two-sided p or None)."""
    diff, se2, df = _welch_parts(a, b)
    if se2 is None:
        return diff, None
    if se2 == 0:
        return diff, (1.0 if diff == 0 else 0.0)
    return diff, t_sf2(diff / math.sqrt(se2), df)


def welch_interval(a, b, level: float = 0.95):
    """Welch's test with its interval: (a - b, half-width of the Welch-t interval, two-sided p).

    Half-width and p are None with fewer than two values on either side."""
    diff, p = welch(a, b)
    if p is None:
        return diff, None, None
    _, se2, df = _welch_parts(a, b)
    return diff, (t_quantile(level, df) * math.sqrt(se2) if se2 else 0.0), p


def paired_interval(a, b, level: float = 0.95):
    """The paired t-test on a - b, seed by seed (the same victim under two attacks): (mean
    difference, half-width of its t interval, two-sided p); the last two None with fewer than two pairs."""
    d = [x - y for x, y in zip(a, b) if x is not None and y is not None]
    if not d:
        return None, None, None
    m, half = interval(d, level)
    if half is None:
        return m, None, None
    se = statistics.stdev(d) / math.sqrt(len(d))
    return m, half, (t_sf2(m / se, len(d) - 1) if se else (1.0 if m == 0 else 0.0))
