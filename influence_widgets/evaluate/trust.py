"""One trust report per computation: the findings of training, the estimate, the retrains and the
noise floor, plus what the comparison itself says (a ground truth that is mostly noise, too few
points, a Pearson decided by one point).

``trust_report(model=tm, estimate=res, loo=loo, noise=noise, comparison=stats)`` takes whatever
parts there are; ``print(report.to_text())`` in a notebook or a script, ``report.warn()`` for
``RuntimeWarning``s, ``report.to_html()`` in the explorer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._findings import DEFAULT_GRAD_TOL, Finding, TrustReport, stationarity_findings

#: Comparison rules (see :func:`comparison_findings`).
NOISE_MOSTLY = 0.5  # fraction of |actual| inside the noise floor from which it is "mostly noise"
NOISE_PARTLY = 0.25  # ... from which it is worth a note
MIN_POINTS = 5  # fewer evaluated points than this: correlations say little
ONE_POINT_SHIFT = 0.3  # Pearson moving more than this when one point is left out


def _findings_of(part: Any) -> tuple[Finding, ...]:
    """``part.findings`` (Findings or their dicts), or () when it has none."""
    found = getattr(part, "findings", None) or ()
    return TrustReport(tuple(found)).findings


def model_findings(model: Any) -> tuple[Finding, ...]:
    """A TrainedModel's findings: those of its health (collapsed, degenerate, not stationary,
    indefinite; :mod:`influence_widgets.models.health`), else ``diagnostics["findings"]``, else
    (a model summarised before findings existed) the stationarity check from its diagnostics."""
    diag = getattr(model, "diagnostics", None)
    if not isinstance(diag, Mapping):
        return ()
    health = getattr(type(model), "health", None)
    if health is not None:
        try:
            return TrustReport(model.health.findings).findings
        except Exception:  # noqa: BLE001 - a model whose health cannot be computed
            pass
    if "findings" in diag:
        return TrustReport(tuple(diag["findings"] or ())).findings
    if "objective" in diag and "grad_norm" in diag:
        return stationarity_findings(float(diag["objective"]), float(diag["grad_norm"]),
                                     float(diag.get("grad_tol", DEFAULT_GRAD_TOL)))
    return ()


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def one_point_pearson(estimated: Any, actual: Any) -> tuple[int, float, float] | None:
    """The point whose removal moves Pearson most: ``(position, pearson, pearson without it)``
    (None with fewer than 4 finite pairs or a constant side)."""
    e = np.asarray(estimated, dtype=np.float64).reshape(-1)
    a = np.asarray(actual, dtype=np.float64).reshape(-1)
    ok = np.isfinite(e) & np.isfinite(a)
    pos = np.flatnonzero(ok)
    if pos.size < 4:
        return None
    e, a = e[ok], a[ok]
    r = _pearson(e, a)
    if not math.isfinite(r):
        return None
    keep = ~np.eye(e.size, dtype=bool)
    without = np.array([_pearson(e[m], a[m]) for m in keep])
    shift = np.abs(np.nan_to_num(without, nan=0.0) - r)
    j = int(np.argmax(shift))
    return int(pos[j]), r, float(without[j])


def comparison_findings(stats: Mapping[str, Any], *, estimated: Any = None, actual: Any = None,
                        indices: Any = None, noise_std: float | None = None,
                        collapsed: bool = False) -> tuple[Finding, ...]:
    """What the comparison of an estimate with its ground truth says about itself.

    ``stats`` is :func:`~influence_widgets.evaluate.compare`'s dict; ``estimated``/``actual``
    (the compared values) and ``indices`` (their training indices, for naming a point) enable
    the checks that need the values. Rules:

    * "ground-truth-noise": at least half of the |actual| effects are inside the retraining
      noise floor (``frac_within_noise >= 0.5``): warning; from a quarter on, a note.
    * "few-points": fewer than 5 evaluated points: warning (action: k = 20).
    * "one-point-pearson": leaving one point out moves Pearson by more than 0.3: warning.
    * "undefined-correlation": a constant side (compare's ``note``): warning.
    * "ci-includes-zero": the Spearman interval includes 0: a note.

    ``collapsed``: the model predicts one output for every input (its health): an undefined
    correlation is then named for that cause, not for the test point.
    """
    out: list[Finding] = []
    n = stats.get("n")
    frac = stats.get("frac_within_noise")
    if frac is None and noise_std is not None and actual is not None:
        act = np.asarray(actual, dtype=np.float64).reshape(-1)
        act = act[np.isfinite(act)]
        frac = float(np.mean(np.abs(act) < noise_std)) if act.size else None
    if frac is not None and frac >= NOISE_PARTLY:
        band = f" ±{noise_std:.3g}" if noise_std is not None else ""
        mostly = frac >= NOISE_MOSTLY
        out.append(Finding(
            "warning" if mostly else "info", "comparison", "ground-truth-noise",
            f"{frac:.0%} of the{f' {n}' if n is not None else ''} actual effects are inside "
            f"the retraining noise floor{band}",
            ("the ground truth is mostly noise here: retraining with nothing removed moves this "
             "test loss as much as removing one of these points, so the correlations measure "
             "the retraining noise as much as the estimate" if mostly else
             "part of the ground truth is retraining noise: small effects are not reliable"),
            "judge on a higher-loss test point, retrain longer or from more seeds, or compare at "
            "group level (leave_group_out, LDS)"))
    if n is not None and n < MIN_POINTS:
        out.append(Finding(
            "warning", "comparison", "few-points",
            f"only {n} evaluated points",
            "a correlation over so few points is decided by chance: its interval spans most of "
            "[-1, 1]",
            "evaluate more training points (k)", action={"k": 20}))
    if stats.get("note") and not math.isfinite(float(stats.get("pearson", float("nan")))):
        out.append(Finding(
            "warning", "comparison", "undefined-correlation", str(stats["note"]),
            "no correlation can be computed: the scatter has no spread on one axis" + (
                ", because the model collapsed to a constant predictor (every retrain and every "
                "estimate moves one shared output)" if collapsed else ""),
            "retrain the model (see its health: another seed, less weight decay, a shallower "
            "net); another test point does not help" if collapsed else
            "pick another test point or more points; check the estimate is not all zeros"))
    if estimated is not None and actual is not None:
        hit = one_point_pearson(estimated, actual)
        if hit is not None and abs(hit[2] - hit[1]) > ONE_POINT_SHIFT:
            pos, r, r_wo = hit
            name = f"training point #{int(np.asarray(indices).reshape(-1)[pos])}" \
                if indices is not None else f"the point at position {pos}"
            out.append(Finding(
                "warning", "comparison", "one-point-pearson",
                f"Pearson {r:.2f} is decided by one point: without {name} it is {r_wo:.2f}",
                "one large effect dominates a Pearson correlation (typical when every estimate "
                "is tiny and nearly equal, as on a well-classified test point); it says little "
                "about the other points",
                "read Spearman instead, and prefer a high-loss test point"))
    ci = stats.get("spearman_ci")
    if ci is not None and all(math.isfinite(c) for c in ci) and ci[0] < 0 < ci[1]:
        out.append(Finding(
            "info", "comparison", "ci-includes-zero",
            f"the 95% interval of Spearman [{ci[0]:.2f}, {ci[1]:.2f}] includes 0",
            "these points cannot tell the estimate from no correlation at all",
            "more points (k), or a test point with larger effects"))
    return tuple(out)


def forecast_findings(forecast: Any, measured: float | None = None) -> tuple[Finding, ...]:
    """What the trust forecast (:func:`influence_widgets.trust.predict`, before any retraining)
    says, and, with a ``measured`` Spearman, whether the measurement fell outside its interval.

    ``forecast`` has ``spearman``, ``lo``, ``hi`` and optionally ``in_range`` and ``note`` (a
    ``Forecast``, a row of ``predict``'s table or a dict). Rules: "forecast" (a note: the
    expected agreement; a warning when its interval reaches below 0.2); "forecast-missed" (a
    note: the measured Spearman is outside the 80% interval, which one time in five is chance).
    """
    get = (forecast.get if isinstance(forecast, Mapping) or hasattr(forecast, "get")
           else lambda k, d=None: getattr(forecast, k, d))
    rho, lo, hi = float(get("spearman")), float(get("lo")), float(get("hi"))
    in_range = bool(get("in_range", True))
    low = hi < 0.2
    out = [Finding(
        "warning" if low else "info", "comparison", "forecast",
        f"forecast Spearman {rho:.2f}, 80% interval {lo:.2f} to {hi:.2f}"
        + ("" if in_range else " (outside the forecast's corpus: " + str(get("note", "")) + ")"),
        ("the trust forecast, learned from retraining many models like this one, expects the "
         "estimate to disagree with the ground truth" if low else
         "the trust forecast's expectation, before retraining: the measured agreement should "
         "fall inside this interval four times in five"),
        "read a low forecast as a reason to damp, retrain the model to a minimum, or use a "
        "cheaper ground truth first" if low else "compare it with the measured value")]
    if measured is not None and math.isfinite(measured) and not lo <= measured <= hi:
        out.append(Finding(
            "info", "comparison", "forecast-missed",
            f"the measured Spearman {measured:.2f} is outside the forecast's 80% interval "
            f"{lo:.2f} to {hi:.2f}",
            "this model or test point behaves unlike the forecast's corpus (or it is the one "
            "time in five an 80% interval misses)",
            "look at what is unusual here: its health, the solver's error, the test point"))
    return tuple(out)


def _noise_std(noise: Any, test_index: int | None) -> float | None:
    if noise is None:
        return None
    if isinstance(noise, int | float):
        return float(noise)
    std = getattr(noise, "std", None)
    if std is None or test_index is None:
        return None
    v = float(np.asarray(std, dtype=np.float64).reshape(-1)[test_index])
    return v if math.isfinite(v) else None


def trust_report(*, model: Any = None, estimate: Any = None, loo: Any = None, noise: Any = None,
                 comparison: Mapping[str, Any] | None = None, estimated: Any = None,
                 actual: Any = None, indices: Any = None, test_index: int | None = None,
                 extra: Any = (), forecast: Any = None) -> TrustReport:
    """Every finding of one computation, in one report.

    Args:
        model: a ``TrainedModel`` (its ``diagnostics["findings"]``).
        estimate: an ``InfluenceResult`` (its ``findings``: solver, stationarity, separability).
        loo: a ``LOOResult``; noise: a ``NoiseResult`` (their ``findings``) or a noise-floor std.
        comparison: :func:`~influence_widgets.evaluate.compare`'s dict, judged by
            :func:`comparison_findings` together with ``estimated``/``actual``/``indices``
            (the compared values and their training indices) when given. ``test_index`` picks
            the noise floor of a ``NoiseResult`` for the comparison.
        extra: further findings (e.g. a setting the caller picked).
        forecast: the trust forecast of this test point (:func:`forecast_findings`: its
            expectation, and whether the measured Spearman of ``comparison`` fell outside it).

    A part left out adds nothing. Of two findings with the same source and code (the model's
    stationarity measured by training and again by the estimate), the first is kept unless the
    second is more severe.
    """
    parts: list[Any] = [model_findings(model) if model is not None else (),
                        _findings_of(estimate), _findings_of(loo), _findings_of(noise)]
    if comparison is not None:
        collapsed = any(f.code == "collapsed" for f in parts[0])
        parts.append(comparison_findings(comparison, estimated=estimated, actual=actual,
                                         indices=indices, noise_std=_noise_std(noise, test_index),
                                         collapsed=collapsed))
    if forecast is not None:
        measured = None if comparison is None else comparison.get("spearman")
        parts.append(forecast_findings(forecast, None if measured is None else float(measured)))
    parts.append(tuple(extra))
    return TrustReport().merge(*parts)
