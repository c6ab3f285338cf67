"""The forecaster: gradient-boosted regression trees, stored as JSON and evaluated in numpy.

Fitting (:func:`fit`) uses scikit-learn's ``GradientBoostingRegressor``; what is kept is only
numbers: each tree's split features, thresholds, children and leaf values, the starting value
and the learning rate, the median of each feature (for missing values), the range of each
feature in the corpus, the solvers and ground truths it has seen, and the split-conformal
half-width of the 80% interval. :meth:`Forecaster.predict` walks the trees with numpy alone, and
:meth:`Forecaster.to_json` / :meth:`Forecaster.from_json` round-trip it exactly: no pickle.

Intervals. The half-width is the conformal quantile (level ``ceil((n + 1) 0.8) / n``) of the
absolute residuals of predictions made *with the residual's whole family held out*
(:func:`conformal_halfwidth`): calibrated against the shift from one family of models to
another, not only against the noise within one. A row outside the corpus's range (a feature
beyond the range it spanned, widened by :data:`RANGE_MARGIN` of its span; a solver or ground
truth it never saw) gets the interval ``[-1, 1]`` and a note naming why: no confident number.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .features import FEATURES, SOLVER_NAMES, TRUTH_NAMES

FORMAT = 1
#: Interval level.
LEVEL = 0.8
#: A feature counts as inside the corpus's range up to this share of its span beyond it.
RANGE_MARGIN = 0.1
#: Quantiles of the corpus that bound a feature's range (outliers of the corpus do not widen it).
RANGE_QUANTILES = (0.005, 0.995)
#: Boosting settings (small trees, shrinkage, row subsampling: robust on a corpus of thousands).
#: The absolute-error loss fits the conditional median, which minimises the mean |error| the
#: forecast is judged by. Chosen by leave-one-family-out cross-validation on the corpus alone
#: (mean |error| over all rows; benchmarks/RESULTS.md): 150 trees of depth 3 with the huber
#: loss 0.149, absolute error 0.142, 300 of depth 4 with huber 0.143, with absolute error 0.138,
#: 300 or 500 of depth 5 0.137 (no better, and larger).
GBR = {"n_estimators": 300, "max_depth": 4, "learning_rate": 0.05, "subsample": 0.8,
       "min_samples_leaf": 20, "loss": "absolute_error", "random_state": 0}


@dataclass
class Forecaster:
    """A fitted forecast of the Spearman of an estimate against a ground truth."""

    features: list[str]
    init: float
    learning_rate: float
    trees: list[dict[str, list]]
    medians: list[float]
    lo_range: list[float]
    hi_range: list[float]
    solvers: list[str]
    truths: list[str]
    halfwidth: float
    provenance: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ evaluation
    def _matrix(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        if isinstance(X, pd.DataFrame):
            missing = [f for f in self.features if f not in X.columns]
            if missing:
                raise ValueError(f"the forecaster needs the features {missing}; compute them with "
                                 "influence_widgets.forecast.features.compute")
            X = X[self.features].to_numpy(dtype=np.float64)
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.features):
            raise ValueError(f"expected (n, {len(self.features)}) features, got {X.shape}")
        return X

    def predict_raw(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """The boosted sum (missing features take the corpus median), clipped to [-1, 1]."""
        X = self._matrix(X)
        X = np.where(np.isfinite(X), X, np.asarray(self.medians)[None, :])
        # the trees were grown on float32 features: compare as they were
        X = X.astype(np.float32).astype(np.float64)
        out = np.full(X.shape[0], self.init)
        rows = np.arange(X.shape[0])
        for t in self.trees:
            left, right = np.asarray(t["left"]), np.asarray(t["right"])
            feat, thr, val = np.asarray(t["feature"]), np.asarray(t["threshold"]), \
                np.asarray(t["value"])
            node = np.zeros(X.shape[0], dtype=np.int64)
            while True:
                leaf = left[node] < 0
                if leaf.all():
                    break
                go_left = X[rows, np.maximum(feat[node], 0)] <= thr[node]
                nxt = np.where(go_left, left[node], right[node])
                node = np.where(leaf, node, nxt)
            out = out + self.learning_rate * val[node]
        return np.clip(out, -1.0, 1.0)

    def outside(self, X: pd.DataFrame, solver: Sequence[str] | None = None,
                truth: Sequence[str] | None = None) -> list[str]:
        """Per row, why it is outside the corpus (empty string: inside)."""
        M = self._matrix(X)
        solver = None if solver is None else [str(v) for v in solver]
        truth = None if truth is None else [str(v) for v in truth]
        lo, hi = np.asarray(self.lo_range), np.asarray(self.hi_range)
        span = hi - lo
        below = M < lo - RANGE_MARGIN * span
        above = M > hi + RANGE_MARGIN * span
        notes = []
        for r in range(M.shape[0]):
            why = [f"{self.features[j]}={M[r, j]:.3g} (corpus {lo[j]:.3g}..{hi[j]:.3g})"
                   for j in np.flatnonzero(below[r] | above[r])]
            if solver is not None and solver[r] not in self.solvers:
                why.insert(0, f"solver {solver[r]!r} is not in the corpus "
                              f"({', '.join(self.solvers)})")
            if truth is not None and truth[r] not in self.truths:
                why.insert(0, f"ground truth {truth[r]!r} is not in the corpus "
                              f"({', '.join(self.truths)})")
            notes.append("; ".join(why))
        return notes

    def predict(self, X: pd.DataFrame, solver: Sequence[str] | None = None,
                truth: Sequence[str] | None = None) -> pd.DataFrame:
        """``spearman``, ``lo``, ``hi`` (the 80% interval), ``in_range`` and ``note`` per row."""
        mu = self.predict_raw(X)
        notes = self.outside(X, solver, truth)
        inside = np.array([not n for n in notes])
        lo = np.where(inside, np.clip(mu - self.halfwidth, -1, 1), -1.0)
        hi = np.where(inside, np.clip(mu + self.halfwidth, -1, 1), 1.0)
        notes = ["" if not n else "outside the forecast's corpus, so the interval is [-1, 1]: "
                 + n for n in notes]
        return pd.DataFrame({"spearman": mu, "lo": lo, "hi": hi, "in_range": inside,
                             "note": notes})

    def importance(self) -> pd.Series:
        """How much each feature's splits reduce the squared error, summed over the trees
        (relative, summing to 1)."""
        gain = np.zeros(len(self.features))
        for t in self.trees:
            for f, g in zip(t["feature"], t["gain"]):
                if f >= 0:
                    gain[f] += g
        total = gain.sum()
        return pd.Series(gain / total if total > 0 else gain, index=self.features
                         ).sort_values(ascending=False)

    # ------------------------------------------------------------------ storage
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "kind": "gradient-boosted trees (numpy evaluation)",
                "level": LEVEL, "features": list(self.features), "init": self.init,
                "learning_rate": self.learning_rate, "medians": self.medians,
                "lo_range": self.lo_range, "hi_range": self.hi_range, "solvers": self.solvers,
                "truths": self.truths, "halfwidth": self.halfwidth,
                "provenance": self.provenance, "trees": self.trees}

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)
        if path is not None:
            from .._cache import atomic_write_text

            atomic_write_text(path, text + "\n")
        return text

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Forecaster:
        if d.get("format") != FORMAT:
            raise ValueError(f"forecaster format {d.get('format')!r} is not {FORMAT}: regenerate "
                             "it with `python -m influence_widgets forecast-corpus --fit`")
        return cls(features=list(d["features"]), init=float(d["init"]),
                   learning_rate=float(d["learning_rate"]), trees=list(d["trees"]),
                   medians=[float(v) for v in d["medians"]],
                   lo_range=[float(v) for v in d["lo_range"]],
                   hi_range=[float(v) for v in d["hi_range"]], solvers=list(d["solvers"]),
                   truths=list(d["truths"]), halfwidth=float(d["halfwidth"]),
                   provenance=dict(d.get("provenance") or {}))

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> Forecaster:
        p = Path(text_or_path) if not str(text_or_path).lstrip().startswith("{") else None
        text = p.read_text() if p is not None else str(text_or_path)
        return cls.from_dict(json.loads(text))


def _trees_of(gbr: Any) -> list[dict[str, list]]:
    trees = []
    for est in gbr.estimators_[:, 0]:
        t = est.tree_
        # the impurity decrease of each split (for the importance), 0 at leaves
        w = t.weighted_n_node_samples
        gain = np.zeros(t.node_count)
        inner = t.children_left >= 0
        li, ri = t.children_left[inner], t.children_right[inner]
        gain[inner] = (w[inner] * t.impurity[inner] - w[li] * t.impurity[li]
                       - w[ri] * t.impurity[ri])
        trees.append({"left": t.children_left.tolist(), "right": t.children_right.tolist(),
                      "feature": [int(f) if f >= 0 else -1 for f in t.feature],
                      "threshold": [float(v) for v in t.threshold],
                      "value": [float(v) for v in t.value[:, 0, 0]],
                      "gain": [float(g) for g in gain]})
    return trees


def fit(table: pd.DataFrame, *, halfwidth: float | None = None,
        provenance: dict[str, Any] | None = None, features: Sequence[str] = FEATURES,
        **gbr: Any) -> Forecaster:
    """Fit the forecaster on corpus rows (:data:`FEATURES` columns and ``spearman``; ``solver``
    and ``truth`` name what the rows saw). ``halfwidth``: the interval's half-width (default:
    :func:`conformal_halfwidth` over the families of the table, when it has them, else within
    the table by model)."""
    from sklearn.ensemble import GradientBoostingRegressor

    features = list(features)
    X = table[features].to_numpy(dtype=np.float64)
    y = table["spearman"].to_numpy(dtype=np.float64)
    medians = np.nanmedian(X, axis=0)
    medians = np.where(np.isfinite(medians), medians, 0.0)
    Xf = np.where(np.isfinite(X), X, medians[None, :])
    model = GradientBoostingRegressor(**{**GBR, **gbr}).fit(Xf, y)
    lo = np.nanquantile(X, RANGE_QUANTILES[0], axis=0)
    hi = np.nanquantile(X, RANGE_QUANTILES[1], axis=0)
    init = float(np.ravel(model.init_.constant_)[0])
    out = Forecaster(features, init, float(model.learning_rate), _trees_of(model),
                     medians.tolist(), np.nan_to_num(lo, nan=-np.inf).tolist(),
                     np.nan_to_num(hi, nan=np.inf).tolist(),
                     sorted(set(table.get("solver", pd.Series(SOLVER_NAMES)))),
                     sorted(set(table.get("truth", pd.Series(TRUTH_NAMES)))),
                     0.0, dict(provenance or {}))
    # the numpy trees give sklearn's answer (before the clip to [-1, 1])
    check = out.predict_raw(Xf[:50])
    if not np.allclose(check, np.clip(model.predict(Xf[:50]), -1, 1), atol=1e-9):
        raise RuntimeError("the exported trees do not reproduce the fitted model")
    out.halfwidth = (float(halfwidth) if halfwidth is not None
                     else conformal_halfwidth(table, features=features, **gbr))
    return out


def conformal_quantile(abs_residuals: np.ndarray, level: float = LEVEL) -> float:
    """The split-conformal quantile: the ``ceil((n + 1) level)``-th smallest |residual|
    (infinite when there are too few)."""
    r = np.sort(np.asarray(abs_residuals, dtype=np.float64)[np.isfinite(abs_residuals)])
    n = r.size
    j = math.ceil((n + 1) * level)
    return float(r[j - 1]) if 0 < j <= n else math.inf


def held_out_predictions(table: pd.DataFrame, column: str, *, features: Sequence[str] = FEATURES,
                         **gbr: Any) -> np.ndarray:
    """The prediction of every row by a forecaster fitted without the rows of its ``column``
    value (one fit per value)."""
    pred = np.full(len(table), np.nan)
    values = table[column].astype(str).to_numpy()
    for v in np.unique(values):
        held = values == v
        if held.all():
            continue
        f = fit(table[~held], halfwidth=0.0, features=features, **gbr)
        pred[held] = f.predict_raw(table.loc[held, list(features)])
    return pred


def conformal_halfwidth(table: pd.DataFrame, *, families: Sequence[str] | None = None,
                        features: Sequence[str] = FEATURES, level: float = LEVEL,
                        **gbr: Any) -> float:
    """The interval half-width: the conformal quantile of the residuals of leave-one-family-out
    predictions, pooled over the family columns present (``families``, default the corpus's;
    without any, the model: ``case_id``)."""
    from .corpus import FAMILIES

    cols = [c for c in (families or FAMILIES) if c in table.columns
            and table[c].nunique() > 1] or (["case_id"] if "case_id" in table.columns else [])
    if not cols:
        raise ValueError("no family or case column to hold out: pass halfwidth")
    y = table["spearman"].to_numpy(dtype=np.float64)
    res = np.concatenate([np.abs(y - held_out_predictions(table, c, features=features, **gbr))
                          for c in cols])
    return conformal_quantile(res, level)
