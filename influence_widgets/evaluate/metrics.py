"""How well estimated influence agrees with actual influence: correlations, top-k, signs."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from ..ground_truth.selection import as_vector


def compare(
    estimated: Any,
    actual: Any,
    *,
    noise: Any = None,
    k: int = 10,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    drop_nan: bool = False,
) -> dict[str, Any]:
    """Agreement of an estimate with the actual influence over the same training points.

    ``estimated`` and ``actual`` are 1-D (one test point, one value per training point), tensors
    or arrays. Returns ``pearson``, ``spearman`` with seeded bootstrap percentile intervals
    ``pearson_ci``/``spearman_ci`` (``n_boot`` resamples, level ``ci``), ``topk_overlap`` (the
    fraction of the ``k`` largest |values| shared), ``sign_agreement``, ``n``, and with ``noise``
    (a noise-floor std, scalar or one per point) ``frac_within_noise``: the fraction of |actual|
    below it. Constant inputs give NaN correlations, top-k overlap and sign agreement (a constant
    side agrees with any ranking by construction) and an explanation in ``note``.

    NaN marks a value that must not be used (a diverged retrain is NaN in a ``LOOResult``): by
    default it is an error; ``drop_nan=True`` leaves those pairs out, and ``n_excluded`` and
    ``note`` say how many.
    """
    from .._settings import number

    n_boot = number(n_boot, "n_boot", integer=True, minimum=0,
                    hint="bootstrap resamples; 0 for no intervals")
    seed = number(seed, "seed", integer=True, hint="seed of the bootstrap resamples")
    k = number(k, "k", integer=True, minimum=1, hint="the top-k of |values| compared")
    ci = number(ci, "ci", hint="the interval's level, between 0 and 1")
    est = as_vector(estimated, "estimated")
    act = as_vector(actual, "actual")
    if est.size != act.size:
        raise ValueError(f"estimated has {est.size} values but actual has {act.size}; "
                         "compare the same training points")
    excluded = 0
    if drop_nan:
        keep = ~(np.isnan(est) | np.isnan(act))
        excluded = int((~keep).sum())
        est, act = est[keep], act[keep]
        if noise is not None and np.ndim(noise) == 1 and np.size(noise) == keep.size:
            noise = np.asarray(noise)[keep]
    n = est.size
    if n < 3:
        raise ValueError(f"need at least 3 points to compare, got {n}")
    for name, v in (("estimated", est), ("actual", act)):
        if not np.isfinite(v).all():
            bad = np.flatnonzero(~np.isfinite(v))[:5].tolist()
            raise ValueError(f"{name} contains NaN or inf at positions {bad} (NaN in a "
                             "LOOResult marks a diverged retrain: see its findings); drop or "
                             "fix them first, or pass drop_nan=True to leave NaN pairs out")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be between 0 and 1, got {ci}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    out: dict[str, Any] = {"n": n, "n_excluded": excluded}
    constant = [name for name, v in (("estimated", est), ("actual", act)) if np.ptp(v) == 0]
    if constant:
        out.update(pearson=float("nan"), spearman=float("nan"),
                   pearson_ci=(float("nan"), float("nan")),
                   spearman_ci=(float("nan"), float("nan")),
                   note=f"{' and '.join(constant)} is constant: correlations are undefined")
    else:
        out["pearson"] = float(stats.pearsonr(est, act)[0])
        out["spearman"] = float(stats.spearmanr(est, act)[0])
        out["pearson_ci"], out["spearman_ci"] = bootstrap_ci(est, act, n_boot, seed, ci)
    out["k"] = min(k, n)
    if constant:  # one point for every dot: a ranking or a sign pattern agrees by construction
        out["topk_overlap"] = out["sign_agreement"] = float("nan")
    else:
        out["topk_overlap"] = topk_overlap(est, act, k)
        out["sign_agreement"] = float(np.mean(np.sign(est) == np.sign(act)))
    if noise is not None:
        out["frac_within_noise"] = frac_within_noise(act, noise)
    if excluded:
        left = f"{excluded} pair(s) with NaN left out (e.g. diverged retrains)"
        out["note"] = f"{out['note']}; {left}" if "note" in out else left
    return out


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching rows of two ``(B, n)`` arrays (NaN for constant rows)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / den
    return np.where(den > 0, r, np.nan)


def bootstrap_ci(est: np.ndarray, act: np.ndarray, n_boot: int = 1000, seed: int = 0,
                 ci: float = 0.95) -> tuple[tuple[float, float], tuple[float, float]]:
    """Percentile bootstrap intervals of Pearson and Spearman (resampling points, seeded).

    Resamples where either side is constant are skipped; with none left the interval is NaN.
    """
    nan = (float("nan"), float("nan"))
    if n_boot == 0:
        return nan, nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, est.size, size=(n_boot, est.size))
    e, a = est[idx], act[idx]
    pear = _pearson_rows(e, a)
    spear = _pearson_rows(stats.rankdata(e, axis=1), stats.rankdata(a, axis=1))
    q = [100 * (1 - ci) / 2, 100 * (1 + ci) / 2]

    def interval(r: np.ndarray) -> tuple[float, float]:
        r = r[np.isfinite(r)]
        return nan if r.size == 0 else tuple(float(x) for x in np.percentile(r, q))

    return interval(pear), interval(spear)


def topk_overlap(estimated: Any, actual: Any, k: int = 10) -> float:
    """Fraction of the ``k`` training points with the largest |estimate| that are also among the
    ``k`` largest |actual| values (``k`` is capped at the number of points)."""
    est, act = as_vector(estimated, "estimated"), as_vector(actual, "actual")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = min(int(k), est.size)
    top_e = set(np.argsort(-np.abs(est), kind="stable")[:k].tolist())
    top_a = set(np.argsort(-np.abs(act), kind="stable")[:k].tolist())
    return len(top_e & top_a) / k


def frac_within_noise(actual: Any, noise: Any) -> float:
    """Fraction of |actual| values below the noise floor (a std, scalar or one per point)."""
    act = as_vector(actual, "actual")
    if hasattr(noise, "detach"):
        noise = noise.detach().cpu().numpy()
    nz = np.asarray(noise, dtype=np.float64)
    if nz.ndim > 1 or (nz.ndim == 1 and nz.size not in (1, act.size)):
        raise ValueError(f"noise must be a scalar or have one value per point ({act.size}), "
                         f"got shape {nz.shape}")
    if (nz < 0).any() or not np.isfinite(nz).all():
        raise ValueError("noise must be finite and >= 0 (a standard deviation)")
    return float(np.mean(np.abs(act) < nz))
