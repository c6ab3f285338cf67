"""How good the forecast is: leave-one-family-out cross-validation and the held-out check.

:func:`cross_validate` holds out each value of each family column (a dataset, an activation, an
architecture depth, a training schedule), fits on the rest, calibrates the interval on the rest
(leave-one-value-out of the same column: the same kind of shift as the held-out fold), and
measures on the held-out rows: mean |error|, coverage of the 80% interval and its width, beside
a constant forecast (the training rows' mean, calibrated the same way).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .features import FEATURES
from .model import LEVEL, Forecaster, conformal_quantile, fit, held_out_predictions

#: The done-when bar on held-out models.
TARGET = {"mae": 0.15, "coverage": 0.7, "width": 0.6}


def scores(y: np.ndarray, pred: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> dict[str, float]:
    """Mean |error|, interval coverage and mean width."""
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    return {"mae": float(np.mean(np.abs(y - pred))),
            "coverage": float(np.mean((y >= lo) & (y <= hi))),
            "width": float(np.mean(np.asarray(hi) - np.asarray(lo)))}


def _inner_halfwidths(train: pd.DataFrame, column: str, features: Sequence[str],
                      **gbr: Any) -> tuple[float, float]:
    """Half-widths of the forecaster and of the constant forecast, from held-out-of-family
    residuals within ``train`` (its remaining values of ``column``; by model when one is left)."""
    col = column if train[column].nunique() > 1 else "case_id"
    y = train["spearman"].to_numpy(float)
    if col == "case_id":  # three folds of models
        ids = train["case_id"].astype(str)
        codes = pd.Series(pd.factorize(ids)[0] % 3, index=train.index).astype(str)
        train = train.assign(_fold=codes.to_numpy())
        col = "_fold"
    pred = held_out_predictions(train, col, features=features, **gbr)
    const = np.empty(len(train))
    values = train[col].astype(str).to_numpy()
    for v in np.unique(values):
        rest = y[values != v]
        const[values == v] = rest.mean() if rest.size else np.nan
    return (conformal_quantile(np.abs(y - pred), LEVEL),
            conformal_quantile(np.abs(y - const), LEVEL))


def cross_validate(table: pd.DataFrame, families: Sequence[str] | None = None, *,
                   features: Sequence[str] = FEATURES, **gbr: Any) -> pd.DataFrame:
    """One row per held-out family value: ``family``, ``held_out``, ``rows``, ``models``,
    ``mae``/``coverage``/``width`` of the forecast and ``const_mae``/``const_coverage``/
    ``const_width`` of the constant forecast; with a ``truth`` column, the same for the
    held-out rows judged by warm-start retraining alone (``warm_rows``, ``warm_mae``,
    ``warm_coverage``, ``warm_width``, ``const_warm_mae``)."""
    from .corpus import FAMILIES

    rows = []
    y = table["spearman"].to_numpy(float)
    for column in families or FAMILIES:
        values = table[column].astype(str).to_numpy()
        for v in sorted(np.unique(values)):
            held = values == v
            train = table[~held]
            if train[column].nunique() < 1 or held.all():
                continue
            f = fit(train, halfwidth=0.0, features=features, **gbr)
            q, q_const = _inner_halfwidths(train, column, features, **gbr)
            pred = f.predict_raw(table.loc[held, list(features)])
            const = np.full(held.sum(), train["spearman"].mean())
            yh = y[held]
            ours = scores(yh, pred, np.clip(pred - q, -1, 1), np.clip(pred + q, -1, 1))
            base = scores(yh, const, np.clip(const - q_const, -1, 1),
                          np.clip(const + q_const, -1, 1))
            row = {"family": column, "held_out": v, "rows": int(held.sum()),
                   "models": int(table.loc[held, "case_id"].nunique()), **ours,
                   **{f"const_{k}": val for k, val in base.items()}}
            if "truth" in table.columns:  # the rows judged by retraining (warm-start LOO) alone
                w = (table.loc[held, "truth"] == "warm_start").to_numpy()
                if w.any():
                    mine = scores(yh[w], pred[w], np.clip(pred[w] - q, -1, 1),
                                  np.clip(pred[w] + q, -1, 1))
                    row.update({f"warm_{k}": val for k, val in mine.items()},
                               warm_rows=int(w.sum()),
                               const_warm_mae=float(np.mean(np.abs(yh[w] - const[w]))))
            rows.append(row)
    return pd.DataFrame(rows)


def heldout_check(forecaster: Forecaster, table: pd.DataFrame, corpus_mean: float,
                  const_halfwidth: float) -> dict[str, Any]:
    """The forecast on held-out models' rows against the done-when bar (:data:`TARGET`), beside
    the constant forecast (``corpus_mean`` +- ``const_halfwidth``)."""
    out = forecaster.predict(table[forecaster.features], table.get("solver"),
                             table.get("truth"))
    y = table["spearman"].to_numpy(float)
    ours = scores(y, out["spearman"].to_numpy(), out["lo"].to_numpy(), out["hi"].to_numpy())
    const = np.full(len(y), corpus_mean)
    base = scores(y, const, np.clip(const - const_halfwidth, -1, 1),
                  np.clip(const + const_halfwidth, -1, 1))
    met = (ours["mae"] <= TARGET["mae"] and ours["coverage"] >= TARGET["coverage"]
           and ours["width"] <= TARGET["width"])
    return {"rows": len(y), "models": int(table["case_id"].nunique()), **ours,
            "in_range": float(out["in_range"].mean()),
            **{f"const_{k}": v for k, v in base.items()}, "met": bool(met)}
