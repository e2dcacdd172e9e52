"""Statistics over seeds of the whole experiment: mean and spread, and paired comparisons.

Training a recommender is chaotic: another seed (forget-user draw, initialisation, data
order) gives another model, so one run of one seed proves nothing. Every claim the report
makes about method A against method B is a *paired* comparison over seeds: both methods
unlearn the same original on the same forget set in each seed, so the per-seed difference
cancels what the seed changes for both, and its spread is what the interval is built from.
"""
import math

import numpy as np
from scipy import stats as scipy_stats


def mean_std(values) -> dict:
  """{'mean', 'std' (sample, ddof=1; 0 for one value), 'n'} of the finite values; NaN mean if none."""
  x = np.asarray([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)
  if x.size == 0:
    return {'mean': float('nan'), 'std': float('nan'), 'n': 0}
  return {'mean': float(x.mean()), 'std': float(x.std(ddof=1)) if x.size > 1 else 0.0, 'n': int(x.size)}


def paired_comparison(a, b, confidence: float = 0.95) -> dict:
  """a - b over seeds (a[i] and b[i] from the same seed): mean difference, its two-sided
  Student-t interval, and in how many seeds a is below b ('wins' for a distance: lower is better).

  The interval is the paired t-interval mean(d) ± t_{n-1} * sd(d) / sqrt(n); with one seed it
  is undefined (NaN bounds), and `excludes_zero` is then False.
  """
  a = np.asarray(a, dtype=np.float64)
  b = np.asarray(b, dtype=np.float64)
  if a.shape != b.shape or a.ndim != 1:
    raise ValueError(f'paired values must be two 1-d arrays of one length, got {a.shape} and {b.shape}')
  keep = np.isfinite(a) & np.isfinite(b)
  d = a[keep] - b[keep]
  n = int(d.size)
  if n == 0:
    nan = float('nan')
    return {'mean_diff': nan, 'ci_low': nan, 'ci_high': nan, 'wins': 0, 'n': 0, 'excludes_zero': False}
  mean = float(d.mean())
  if n > 1:
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    low, high = mean - half, mean + half
  else:
    low = high = float('nan')
  return {'mean_diff': mean, 'ci_low': low, 'ci_high': high, 'wins': int((d < 0).sum()), 'n': n,
          'excludes_zero': bool(n > 1 and (high < 0 or low > 0))}


def gap_closed(original: float, method: float, floor: float) -> float:
  """Share of the original's distance to retrain above the noise floor that a method removed:
  (original - method) / (original - floor). 1 = as close as two retrains are to each other,
  0 = no closer than the original, < 0 = further away. NaN when the original is at the floor."""
  span = original - floor
  if not (math.isfinite(span) and span > 0):
    return float('nan')
  return float((original - method) / span)
