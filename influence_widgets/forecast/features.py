"""The forecast's features: what the toolkit computes anyway, before any retraining.

One row per test point. Every feature is a plain float (``NaN`` where it cannot be computed, e.g.
the error against the exact solve of a model too large for it); :data:`FEATURES` lists them in
the order the forecaster reads them. Groups:

* the model: parameters, depth, width, training points, a kinked activation (ReLU, SELU, ELU),
  weight decay, training accuracy, and its health (the four states of
  :mod:`influence_widgets.models.health`, and the gradient norm against the objective's own
  stationarity limit);
* the curvature of the estimate: the top and smallest Ritz values of a Lanczos run (the top
  eigenvalue; the smallest against the top), the share of the Ritz spectrum that is negative
  ("negative mass"), and the damping against the top eigenvalue;
* the solver: which one, and (for models small enough for the exact solve) its relative error
  against the exact solve and the Spearman of its top ``k`` against the exact solve's values;
* the test point: its loss, its logit margin, its gradient norm;
* the estimate: how concentrated it is (the share of sum |estimate| in the top ``k``, the share
  of the top ``k`` in the largest one, the participation ratio of the top ``k``), its scale and
  the share of positive values in the top ``k``;
* the ground truth: which one, and its schedule (steps and learning rate of a warm start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from ..datasets.base import as_tensors
from ..influence import InfluenceEngine, InfluenceResult
from ..models.training import TrainedModel

#: Solvers and ground truths the features one-hot encode (the rest: all zeros, and the
#: forecaster says the input is outside its corpus).
SOLVER_NAMES = ("exact", "cg", "lissa", "arnoldi", "kfac", "ekfac")
TRUTH_NAMES = ("warm_start", "exact")
#: Activations without a second derivative somewhere (a minimum can sit on the kink).
KINKED = (nn.ReLU, nn.SELU, nn.ELU, nn.LeakyReLU, nn.Hardtanh)
#: Models up to this many parameters also get the exact solve, for the solver's error.
EXACT_MAX_PARAMS = 3000
#: Lanczos steps for the curvature features.
LANCZOS_STEPS = 30

MODEL_FEATURES = (
    "log_params", "depth", "log_width", "log_n_train", "kinked", "log_weight_decay",
    "train_acc", "log_grad_rel", "not_stationary", "indefinite", "degenerate", "collapsed",
)
CURVATURE_FEATURES = ("log_top_eig", "min_eig_rel", "neg_mass", "log_damping_rel")
SOLVER_FEATURES = tuple(f"solver_{s}" for s in SOLVER_NAMES) + (
    "solver_rel_error", "solver_vs_exact")
POINT_FEATURES = ("test_loss", "margin", "log_test_grad")
ESTIMATE_FEATURES = ("topk_share", "top1_share", "participation", "log_scale", "pos_share")
TRUTH_FEATURES = tuple(f"truth_{t}" for t in TRUTH_NAMES) + ("log_truth_steps", "log_truth_lr",
                                                             "log_k")
#: Every feature, in the forecaster's order.
FEATURES = (MODEL_FEATURES + CURVATURE_FEATURES + SOLVER_FEATURES + POINT_FEATURES
            + ESTIMATE_FEATURES + TRUTH_FEATURES)


def _log10(x: float, floor: float = 1e-12) -> float:
    return math.log10(max(abs(float(x)), floor)) if math.isfinite(float(x)) else math.nan


@dataclass(frozen=True)
class Curvature:
    """Extremes and negative mass of the Ritz values of a Lanczos run on the curvature."""

    top: float
    min: float
    neg_mass: float

    @classmethod
    def of(cls, engine: InfluenceEngine, steps: int = LANCZOS_STEPS, seed: int = 0) -> Curvature:
        from ..influence.solvers import _lanczos

        obj = engine.objective
        evals, _, _ = _lanczos(obj.hvp, obj.p, obj.dtype, obj.device, min(obj.p, steps), seed)
        ev = evals.double().cpu()
        total = float(ev.abs().sum())
        neg = float(ev.clamp(max=0).abs().sum())
        return cls(float(ev.max()), float(ev.min()), neg / total if total > 0 else math.nan)


def architecture(module: nn.Module) -> dict[str, float]:
    """Depth (layers with weights, less the output layer), the widest hidden layer and whether
    any activation is kinked, read from the module itself."""
    layers = [m for m in module.modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)]
    widths = [m.out_features if isinstance(m, nn.Linear) else m.out_channels for m in layers[:-1]]
    kinked = any(isinstance(m, KINKED) for m in module.modules())
    return {"depth": float(max(len(layers) - 1, 0)),
            "log_width": _log10(max(widths)) if widths else 0.0,
            "kinked": float(kinked)}


def model_features(model: Any, X: torch.Tensor, y: torch.Tensor, engine: InfluenceEngine,
                   curvature: Curvature) -> dict[str, float]:
    """The features every test point of one model shares."""
    from ..models import health as health_mod

    obj = engine.objective
    if isinstance(model, TrainedModel):
        h = model.health
    else:
        h = health_mod.assess(engine.module, X.to(obj.device, obj.dtype), y.to(obj.device),
                              loss=obj.loss, weight_decay=obj.weight_decay, spectrum=False)
    problems = set(h.problems)
    if curvature.min < -1e-4 * max(abs(curvature.top), 1e-12) and "degenerate" not in problems:
        problems.add("indefinite")
    out = {"log_params": _log10(obj.p), "log_n_train": _log10(obj.n),
           "log_weight_decay": _log10(obj.weight_decay + 1e-6),
           "train_acc": math.nan if h.train_accuracy is None else float(h.train_accuracy),
           "log_grad_rel": _log10(h.grad_norm / max(h.stationary_limit, 1e-300)),
           **{name.replace(" ", "_"): float(state in problems) for state, name in
              (("not stationary", "not_stationary"), ("indefinite", "indefinite"),
               ("degenerate", "degenerate"), ("collapsed", "collapsed"))},
           **architecture(engine.module)}
    return out


def curvature_features(curvature: Curvature, damping: float) -> dict[str, float]:
    top = curvature.top
    return {"log_top_eig": _log10(top),
            "min_eig_rel": curvature.min / abs(top) if top else math.nan,
            "neg_mass": curvature.neg_mass,
            "log_damping_rel": _log10(damping / abs(top) if top else 0.0, 1e-8)}


def point_features(engine: InfluenceEngine, Xt: torch.Tensor, yt: torch.Tensor) -> np.ndarray:
    """``(n_test, 3)``: test loss, logit margin (true class minus the largest other) and the norm
    of the test loss's gradient."""
    from ..models.losses import per_sample_loss

    obj = engine.objective
    X = Xt.to(obj.device, obj.dtype)
    y = yt.to(obj.device)
    with torch.no_grad():
        out = engine.module(X).double().reshape(X.shape[0], -1)
        loss = per_sample_loss(out, y, obj.loss).double().cpu().numpy()
    if out.shape[1] > 1 and obj.loss == "cross_entropy":
        yy = y.reshape(-1).long()
        true = out.gather(1, yy[:, None])[:, 0]
        other = out.scatter(1, yy[:, None], float("-inf")).max(dim=1).values
        margin = (true - other).cpu().numpy()
    else:
        margin = np.full(X.shape[0], np.nan)
    g = obj.per_sample_grads(X, y).double().norm(dim=1).cpu().numpy()
    return np.column_stack([loss, margin, np.log10(np.maximum(g, 1e-300))])


def estimate_features(row: np.ndarray, k: int) -> dict[str, float]:
    """How concentrated one test point's estimate is, over its top ``k`` by |estimate|."""
    a = np.abs(row)
    order = np.argsort(-a, kind="stable")[: min(k, a.size)]
    top = a[order]
    if top.size == 0 or not np.isfinite(a).all() or top[0] <= 0:
        return {"topk_share": math.nan, "top1_share": math.nan, "participation": math.nan,
                "log_scale": math.nan, "pos_share": math.nan}
    u, rest = top / top[0], a / top[0]  # relative to the largest: no underflow of tiny values
    s = float(u.sum())
    return {"topk_share": s / float(rest.sum()), "top1_share": 1.0 / s,
            "participation": s * s / float((u * u).sum()) / top.size,
            "log_scale": _log10(float(top.mean()), 1e-300),
            "pos_share": float(np.mean(row[order] > 0))}


def solver_features(solver: str, row: np.ndarray, exact_row: np.ndarray | None,
                    k: int) -> dict[str, float]:
    out = {f"solver_{s}": float(solver == s) for s in SOLVER_NAMES}
    if solver == "exact":
        out.update(solver_rel_error=0.0, solver_vs_exact=1.0)
    elif exact_row is None:
        out.update(solver_rel_error=math.nan, solver_vs_exact=math.nan)
    else:
        rel = float(np.linalg.norm(row - exact_row) / max(np.linalg.norm(exact_row), 1e-300))
        idx = np.argsort(-np.abs(row), kind="stable")[: min(k, row.size)]
        e, x = row[idx], exact_row[idx]
        rho = float(stats.spearmanr(e, x)[0]) if np.ptp(e) > 0 and np.ptp(x) > 0 else math.nan
        out.update(solver_rel_error=_log10(rel, 1e-8), solver_vs_exact=rho)
    return out


def truth_features(truth: str, settings: dict[str, Any], k: int) -> dict[str, float]:
    from ..ground_truth import make_truth

    gt = make_truth(truth, **settings)
    steps = getattr(gt.settings, "steps", 0) if gt.retrains else 0
    lr = getattr(gt.settings, "lr", 0.0) if gt.retrains else 0.0
    return {**{f"truth_{t}": float(gt.name == t) for t in TRUTH_NAMES},
            "log_truth_steps": math.log10(1 + steps), "log_truth_lr": _log10(lr, 1e-8),
            "log_k": math.log10(k)}


@dataclass
class Computed:
    """The features of some test points (``table``: one row each, :data:`FEATURES` columns)
    and the estimate they came from (``estimate``: an ``InfluenceResult`` of those points)."""

    table: Any
    estimate: InfluenceResult


def compute(model: Any, train: Any, test: Any, *, test_indices: Any = None, solver: str = "exact",
            truth: str = "warm_start", k: int = 40, damping: float = 0.0,
            solver_options: dict[str, Any] | None = None,
            truth_settings: dict[str, Any] | None = None, engine: InfluenceEngine | None = None,
            curvature: Curvature | None = None, exact: InfluenceResult | None = None,
            weight_decay: float | None = None, loss: str | None = None) -> Computed:
    """The features of each test point (all of ``test``, or its rows ``test_indices``) for an
    estimate by ``solver`` compared with ``truth`` over the top ``k`` training points.

    ``engine``/``curvature``/``exact`` reuse what a caller computed already (the corpus computes
    them once per model); the exact solve is computed for the solver's error when the model has
    at most :data:`EXACT_MAX_PARAMS` parameters.
    """
    import pandas as pd

    X, y = as_tensors(train)
    Xt, yt = as_tensors(test)
    if test_indices is not None:
        idx = torch.as_tensor(test_indices).reshape(-1).long()
        Xt, yt = Xt[idx], yt[idx]
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 3:
        raise ValueError(f"k must be an integer >= 3 (training points compared), got {k!r}")
    engine = engine or InfluenceEngine(model, (X, y), weight_decay=weight_decay, loss=loss)
    curvature = curvature or Curvature.of(engine)
    res = engine.scores((Xt, yt), solver=solver, damping=damping, **(solver_options or {}))
    values = res.values.detach().double().cpu().numpy()
    if solver != "exact" and exact is None and engine.objective.p <= EXACT_MAX_PARAMS:
        exact = engine.scores((Xt, yt), solver="exact", damping=damping)
    exact_values = None if exact is None else exact.values.detach().double().cpu().numpy()
    base = {**model_features(model, X, y, engine, curvature),
            **curvature_features(curvature, damping),
            **truth_features(truth, truth_settings or {}, k)}
    points = point_features(engine, Xt, yt)
    rows = []
    for r in range(values.shape[0]):
        rows.append({**base, **solver_features(solver, values[r], None if exact_values is None
                                               else exact_values[r], k),
                     "test_loss": points[r, 0], "margin": points[r, 1],
                     "log_test_grad": points[r, 2], **estimate_features(values[r], k)})
    return Computed(pd.DataFrame(rows, columns=list(FEATURES)), res)
