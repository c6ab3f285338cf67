"""Trust forecast: will these estimates agree with retraining? Answered before retraining.

::

    import influence_widgets as iw

    tm = iw.zoo.load("iris-mlp-d2-w5-wd")
    table = iw.trust.predict(tm, tm.data.train, tm.data.test, solver="exact",
                             truth="warm_start", k=40)
    table[["spearman", "lo", "hi", "note"]]     # one row per test point

``spearman`` is the forecast Spearman between the estimate and the ground truth over the top
``k`` training points by |estimate| (as the explorer measures it), ``lo``/``hi`` an 80% interval.
The forecaster (:mod:`.model`) is learned from a corpus of measured comparisons
(:mod:`.corpus`; ``python -m influence_widgets forecast-corpus``) and ships in the package as
``forecaster.json`` with its provenance. Its inputs are the features of :mod:`.features`: what
the toolkit computes anyway (the estimate, a short Lanczos run, the model's health), no
retraining. An input outside the corpus's range gets the interval [-1, 1] and a note saying why.

The explorer calls :func:`forecast_point` before Compute (one test point, cheap: one estimate
and a Lanczos run, reusing an engine it has).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from .features import FEATURES, compute
from .model import Forecaster

__all__ = ["FEATURES", "Forecast", "Forecaster", "forecast_point", "load", "predict",
           "shipped_path"]

#: The file name of the shipped forecaster, inside this package.
SHIPPED = "forecaster.json"


def shipped_path() -> Path:
    """Where the shipped forecaster is (inside the installed package)."""
    return Path(str(resources.files(__package__).joinpath(SHIPPED)))


@lru_cache(maxsize=4)
def _load(path: str) -> Forecaster:
    return Forecaster.from_json(Path(path))


def load(path: str | Path | None = None) -> Forecaster:
    """The forecaster in ``path`` (default: the shipped one). JSON only: nothing is unpickled."""
    p = Path(path) if path is not None else shipped_path()
    if not p.exists():
        raise FileNotFoundError(f"no forecaster at {p}: generate one with `python -m "
                                "influence_widgets forecast-corpus --fit`")
    return _load(str(p.resolve()))


def _split_settings(solver: str, truth: str, settings: dict[str, Any]
                    ) -> tuple[float, dict[str, Any], dict[str, Any]]:
    """``settings`` -> (damping, the solver's options, the ground truth's settings). A name that
    is neither is an error naming the valid ones; a name that is both (LiSSA's ``steps`` and a
    warm start's) is an error too: pass it in ``solver_options=`` or ``truth_settings=``."""
    from ..ground_truth import truth_class
    from ..influence import solver_class

    damping = float(settings.pop("damping", 0.0))
    solver_opts = dict(settings.pop("solver_options", None) or {})
    truth_opts = dict(settings.pop("truth_settings", None) or {})
    solver_fields = {f.name for f in solver_class(solver).Settings.fields()}
    truth_fields = {f.name for f in truth_class(truth).Settings.fields()}
    unknown = sorted(set(settings) - solver_fields - truth_fields)
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown} for solver {solver!r} and ground truth "
                        f"{truth!r}; valid: damping, {', '.join(sorted(solver_fields))}"
                        f"{', ' if solver_fields else ''}{', '.join(sorted(truth_fields))}")
    both = sorted(set(settings) & solver_fields & truth_fields)
    if both:
        raise TypeError(f"setting(s) {both} belong to solver {solver!r} and to ground truth "
                        f"{truth!r}; say which: solver_options={{...}} or truth_settings={{...}}")
    return (damping, {**{k: v for k, v in settings.items() if k in solver_fields}, **solver_opts},
            {**{k: v for k, v in settings.items() if k in truth_fields}, **truth_opts})


def predict(model: Any, train: Any, test: Any, *, solver: str = "exact",
            truth: str = "warm_start", k: int = 40, test_indices: Any = None,
            forecaster: Forecaster | str | Path | None = None, engine: Any = None,
            weight_decay: float | None = None, loss: str | None = None,
            **settings: Any) -> pd.DataFrame:
    """Forecast, per test point, the Spearman of the ``solver`` estimate against ``truth`` over
    the top ``k`` training points by |estimate|, with an 80% interval; no retraining.

    Args:
        model: a ``TrainedModel`` or an ``nn.Module`` (then ``weight_decay``/``loss`` as for
            ``iw.influence``); ``train``/``test``: ``(X, y)`` pairs or datasets.
        solver, truth, k: the estimate, the registered ground truth and the number of training
            points compared, as in the explorer.
        test_indices: forecast these test rows only (default all).
        forecaster: a :class:`Forecaster` or a JSON path (default the shipped one).
        engine: an ``InfluenceEngine`` of this model and training set to reuse.
        settings: ``damping``, the solver's settings and the ground truth's settings (e.g.
            ``steps=200`` for a warm start); a name both have (LiSSA's ``steps``) goes in
            ``solver_options={...}`` or ``truth_settings={...}``.

    Returns:
        A DataFrame, one row per test point: ``test_index``, ``spearman``, ``lo``, ``hi``,
        ``in_range``, ``note`` (why a row is outside the corpus; its interval is then
        [-1, 1]), ``solver``, ``truth``, ``k``, then the features (:data:`FEATURES`).
    """
    import numpy as np
    import torch

    from ..datasets.base import as_tensors

    f = forecaster if isinstance(forecaster, Forecaster) else load(forecaster)
    damping, solver_options, truth_settings = _split_settings(solver, truth, dict(settings))
    Xt, _ = as_tensors(test)
    rows = (list(range(Xt.shape[0])) if test_indices is None
            else [int(i) for i in torch.as_tensor(test_indices).reshape(-1).tolist()])
    bad = [i for i in rows if not 0 <= i < Xt.shape[0]]
    if bad:
        raise IndexError(f"test index {bad[0]} is out of range: the test set has "
                         f"{Xt.shape[0]} points")
    X_train, _ = as_tensors(train)
    k_eff = min(int(k), int(X_train.shape[0])) if not isinstance(k, bool) else k
    computed = compute(model, train, test, test_indices=rows, solver=solver, truth=truth,
                       k=k_eff, damping=damping, solver_options=solver_options,
                       truth_settings=truth_settings, engine=engine, weight_decay=weight_decay,
                       loss=loss)
    feats = computed.table
    out = f.predict(feats, [solver] * len(rows), [truth] * len(rows))
    head = pd.DataFrame({"test_index": np.asarray(rows, dtype=np.int64)})
    tail = pd.DataFrame({"solver": solver, "truth": truth, "k": k_eff}, index=out.index)
    return pd.concat([head, out, tail, feats], axis=1)


@dataclass(frozen=True)
class Forecast:
    """One test point's forecast, for the explorer: the expected Spearman, its 80% interval,
    whether the input is inside the corpus (else the interval is [-1, 1]) and why not."""

    spearman: float
    lo: float
    hi: float
    in_range: bool
    note: str
    truth_label: str

    def line(self) -> str:
        """One line, e.g. "expected agreement with LOO warm start: 0.45, 80% interval
        0.20-0.70"."""
        text = (f"expected agreement with {self.truth_label}: {self.spearman:.2f}, "
                f"80% interval {self.lo:.2f} to {self.hi:.2f}")
        return text + (" (outside the forecast's corpus: a wide interval)"
                       if not self.in_range else "")

    def beside(self, measured: float) -> str:
        """The forecast beside a measured Spearman (after Compute)."""
        if not math.isfinite(measured):
            return f"measured Spearman undefined; {self.line()}"
        inside = "inside" if self.lo <= measured <= self.hi else "OUTSIDE"
        return (f"measured Spearman {measured:.2f} ({inside} the forecast's 80% interval "
                f"{self.lo:.2f} to {self.hi:.2f}; forecast {self.spearman:.2f})")


def forecast_point(model: Any, train: Any, test: Any, test_index: int, *, solver: str = "exact",
                   truth: str = "warm_start", k: int = 40, engine: Any = None,
                   **settings: Any) -> Forecast:
    """The forecast of one test point (what the explorer shows before Compute): one estimate of
    that point, a short Lanczos run and the model's health; ``engine`` reuses a fitted
    ``InfluenceEngine``. ``settings`` as for :func:`predict`."""
    from ..ground_truth import truth_class

    row = predict(model, train, test, solver=solver, truth=truth, k=k,
                  test_indices=[int(test_index)], engine=engine, **settings).iloc[0]
    return Forecast(float(row["spearman"]), float(row["lo"]), float(row["hi"]),
                    bool(row["in_range"]), str(row["note"]), truth_class(truth).label)
