"""Seed statistics: how far a mean over a few seeds can be trusted.

Every table, chart band and export reports a grid point as its mean over seeds with
the half-width of a 95% confidence interval from Student's t distribution with n-1
degrees of freedom: ``ci95 = t(0.975, n-1) * s / sqrt(n)``, ``s`` the sample standard
deviation. With three seeds t is 4.30, so the interval is wide: that is the point.
No SciPy here: the t quantile comes from the closed-form distribution function for
integer degrees of freedom, solved by bisection.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Stat:
    """A value over seeds: mean, sample std, 95% CI half-width and how many values."""

    mean: float | None  # None when n == 0
    std: float | None  # sample standard deviation (n-1); None when n < 2
    ci95: float | None  # t(0.975, n-1) * std / sqrt(n); None when n < 2
    n: int

    @property
    def lo(self) -> float | None:
        """The interval's lower end (the mean itself for one value)."""
        if self.mean is None:
            return None
        return self.mean - (self.ci95 or 0.0)

    @property
    def hi(self) -> float | None:
        """The interval's upper end (the mean itself for one value)."""
        if self.mean is None:
            return None
        return self.mean + (self.ci95 or 0.0)


#: No values: nothing finished at that grid point.
EMPTY = Stat(None, None, None, 0)


def seed_stat(values: Iterable[float | None]) -> Stat:
    """The :class:`Stat` of ``values`` (``None`` entries skipped: a run without that number)."""
    vals = [float(v) for v in values if v is not None]
    n = len(vals)
    if n == 0:
        return EMPTY
    mean = math.fsum(vals) / n
    if n == 1:
        return Stat(mean, None, None, 1)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))
    return Stat(mean, std, t_quantile(0.975, n - 1) * std / math.sqrt(n), n)


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with ``df`` (a positive integer) degrees of freedom.

    The finite series for integer ``df`` (Abramowitz and Stegun 26.7.3, 26.7.4) in
    theta = atan(t / sqrt(df)); exact to rounding.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df}")
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2:  # odd
        term, total = c, 0.0
        if df > 1:
            total = c
            for k in range(3, df - 1, 2):  # terms (2*4*...*(k-1))/(1*3*...*k) cos^k
                term *= c * c * (k - 1) / k
                total += term
        inside = 2.0 / math.pi * (theta + s * total)
    else:  # even
        term = total = 1.0
        for k in range(2, df - 1, 2):  # terms (1*3*...*(k-1))/(2*4*...*k) cos^k
            term *= c * c * (k - 1) / k
            total += term
        inside = s * total
    return 0.5 + math.copysign(inside / 2.0, t)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on
    :func:`t_cdf` to about 1e-12)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * max(1.0, hi):
            break
    return (lo + hi) / 2.0
