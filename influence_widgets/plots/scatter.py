"""Estimated vs actual influence, input thumbnails and solver traces.

Object API only (``matplotlib.figure.Figure``, never pyplot), so these are safe inside widget
callbacks. Every helper takes arrays and ``ax=``, draws, and returns what it drew.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

X_LABEL = "estimated change in test loss when removed"
Y_LABEL = "actual change (LOO retraining)"
SIGN_NOTE = "positive: the training point was helping the test point"
POINTS_GID = "training-points"
HIGHLIGHT_GID = "highlight"


def _array(values: Any) -> np.ndarray:
    """A 1-D float numpy array from a tensor, list or array."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=float).reshape(-1)


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    return Figure(figsize=figsize, layout="constrained").add_subplot()


def _limits(est: np.ndarray, act: np.ndarray, noise: float) -> tuple[float, float]:
    finite = np.concatenate([est[np.isfinite(est)], act[np.isfinite(act)]])
    if finite.size == 0:
        return -1.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    lo, hi = min(lo, -noise, 0.0), max(hi, noise, 0.0)
    pad = 0.06 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def _stats_lines(stats: dict[str, Any]) -> list[str]:
    lines = []
    for key, symbol in (("pearson", "Pearson r"), ("spearman", "Spearman ρ")):
        value = stats.get(key)
        if value is None:
            continue
        lines.append(f"{symbol} = {value:.3f}")
        ci = stats.get(f"{key}_ci")
        if ci is not None:
            lines.append(f"  95% CI [{ci[0]:.2f}, {ci[1]:.2f}]")
    if stats.get("n") is not None:
        lines.append(f"n = {stats['n']}")
    return lines


def scatter_estimated_vs_actual(
    estimated: Any,
    actual: Any,
    *,
    ax: Axes | None = None,
    noise: float | None = None,
    stats: dict[str, Any] | None = None,
    highlight: int | None = None,
    title: str | None = None,
    xlabel: str = X_LABEL,
    ylabel: str = Y_LABEL,
    points_label: str = "training points",
    overlay: Sequence[tuple[str, Any, Any]] = (),
    yerr: Any = None,
) -> dict[str, Any]:
    """Scatter of estimated (x) against actual (y) influence, one point per training point.

    Draws the ``y = x`` line (points on it are estimated exactly), the retraining noise floor
    when given, the correlations from ``stats`` (a :func:`influence_widgets.compare` dict) and a
    ring around point ``highlight`` (an index into the arrays). The noise floor is drawn as the
    horizontal band ``|actual| < noise``: the points inside it moved their test loss by less
    than retraining noise does, so their "actual" is indistinguishable from 0. It is the same
    definition as ``frac_within_noise`` of :func:`influence_widgets.compare`, and the legend
    says so.

    Nothing is drawn over the data: the legend and the statistics sit in one box below the
    axes. ``xlabel``, ``ylabel`` and ``points_label`` rename
    the axes and the dots (e.g. subsets for the LDS). Returns the artists: ``points``, ``line``,
    ``band``, ``highlight``, ``text`` (the statistics, as one string artist in the legend),
    ``legend``, ``ax``; and ``overlay``, one artist per ``(label, estimated, actual)`` of
    ``overlay``: other runs drawn on the same axes in grey (e.g. another solver or model) to
    compare with. ``yerr`` (one standard error per dot, e.g. of a ground truth averaged over
    seeds) draws a vertical bar of +/- 1 SE through each dot (artist ``errorbars``; None
    without).
    """
    est, act = _array(estimated), _array(actual)
    if est.shape != act.shape:
        raise ValueError(
            f"estimated has {est.size} values but actual has {act.size}; "
            "pass the same training points in the same order"
        )
    ax = _new_axes(ax, (5.2, 5.2))
    half = float(noise) if noise is not None and np.isfinite(noise) else 0.0
    others = [(label, _array(e), _array(a)) for label, e, a in overlay]
    err = None if yerr is None else _array(yerr)
    if err is not None and err.shape != act.shape:
        raise ValueError(f"yerr has {err.size} values but actual has {act.size}: one standard "
                         "error per dot")
    reach = act if err is None else np.concatenate([act - np.nan_to_num(err),
                                                    act + np.nan_to_num(err)])
    lo, hi = _limits(np.concatenate([est, *(e for _, e, _ in others)]),
                     np.concatenate([reach, *(a for _, _, a in others)]), half)
    line, band = _reference(ax, lo, hi, None if noise is None else half)
    errorbars = None
    if err is not None:
        errorbars = ax.errorbar(est, act, yerr=np.nan_to_num(err), fmt="none", ecolor="tab:blue",
                                elinewidth=0.9, alpha=0.55, zorder=2.8, capsize=0,
                                label="±1 SE over seeds")
    points = ax.scatter(
        est,
        act,
        s=22,
        color="tab:blue",
        alpha=0.8,
        zorder=3,
        label=points_label,
        gid=POINTS_GID,
        picker=True,
        pickradius=6,
    )
    drawn = [ax.scatter(e, a, s=26, marker="x", color=colour, alpha=0.85, zorder=2.5,
                        label=label, linewidths=1.2)
             for (label, e, a), colour in zip(others, ("0.35", "tab:green", "tab:purple"))]
    ring = ax.scatter(
        np.empty(0),
        np.empty(0),
        s=160,
        facecolors="none",
        edgecolors="crimson",
        linewidths=2.0,
        zorder=4,
        gid=HIGHLIGHT_GID,
    )
    set_highlight({"highlight": ring, "points": points}, highlight)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or SIGN_NOTE, fontsize=9)
    leg, text = _outside_legend(ax, stats)
    return {"points": points, "line": line, "band": band, "highlight": ring, "text": text,
            "legend": leg, "ax": ax, "overlay": drawn, "errorbars": errorbars}


def _outside_legend(ax: Axes, stats: dict[str, Any] | None) -> tuple[Any, Any]:
    """The legend and the statistics in one box below ``ax`` (constrained layout makes room
    for it); returns the legend and the statistics' text artist (None without stats)."""
    from matplotlib.lines import Line2D

    lines = _stats_lines(stats) if stats else []
    handles, labels = ax.get_legend_handles_labels()
    if lines:  # one entry without a marker: the statistics, as a block
        handles.append(Line2D([], [], linestyle="none", marker=None))
        labels.append("\n".join(lines))
    # below the tick labels and the x label, whatever the axes' size: the pad is in font sizes
    # (3.6 x 8 pt), not a fraction of the axes
    leg = ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2,
                    fontsize=8, frameon=False, borderaxespad=3.6)
    text = leg.get_texts()[-1] if lines else None
    if text is not None:
        text.set_family("monospace")
    return leg, text


def _reference(ax: Axes, lo: float, hi: float, half: float | None) -> tuple[Any, Any]:
    """Zero lines, the ``y = x`` line and (when ``half`` is given) the noise band
    ``|actual| < half``."""
    ax.axhline(0.0, color="0.85", lw=0.8, zorder=0)
    ax.axvline(0.0, color="0.85", lw=0.8, zorder=0)
    band = None
    if half is not None:
        thin = 2 * half < 0.005 * (hi - lo)
        note = "too thin to see here" if thin else "no different from 0"
        band = ax.axhspan(
            -half,
            half,
            color="tab:orange",
            alpha=0.3,
            lw=0,
            zorder=1,
            label=f"|actual| < noise floor {half:.2g}\n({note})",
        )
    (line,) = ax.plot([lo, hi], [lo, hi], ls="--", color="0.35", lw=1.0, zorder=2,
                      label="y = x: estimate exact")
    return line, band


def set_highlight(artists: dict[str, Any], index: int | None) -> None:
    """Move the highlight ring of a :func:`scatter_estimated_vs_actual` plot to point ``index``."""
    offsets = artists["points"].get_offsets()
    if index is None or not 0 <= index < len(offsets):
        artists["highlight"].set_offsets(np.empty((0, 2)))
    else:
        artists["highlight"].set_offsets(np.asarray(offsets)[index : index + 1])


def _image(x: np.ndarray, image_shape: Sequence[int] | None) -> np.ndarray | None:
    """``x`` as an (H, W) or (H, W, 3) image in [0, 1], or None when it is a feature row."""
    if image_shape is not None:
        x = x.reshape(tuple(image_shape))
    if x.ndim == 1:
        return None
    if x.ndim == 3 and x.shape[0] in (1, 3):
        x = x[0] if x.shape[0] == 1 else np.transpose(x, (1, 2, 0))
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def thumbnail(
    x: Any,
    *,
    ax: Axes | None = None,
    image_shape: Sequence[int] | None = None,
    feature_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Draw one input: an image (flat rows are reshaped to ``image_shape``, e.g. ``(1, 8, 8)``)
    or, for tabular rows, a bar per feature value. Returns ``{"image"}`` or ``{"bars"}``, and
    ``ax``.
    """
    arr = x.detach().cpu().double().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=float)
    ax = _new_axes(ax, (2.0, 2.0))
    img = _image(arr, image_shape)
    if img is not None:
        shown = ax.imshow(img, cmap="gray_r" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        return {"image": shown, "ax": ax}
    row = arr.reshape(-1)
    colors = ["tab:blue" if v >= 0 else "tab:red" for v in row]
    bars = ax.barh(np.arange(row.size), row, color=colors)
    ax.set_yticks(np.arange(row.size))
    ax.set_yticklabels(
        list(feature_names) if feature_names is not None else [f"x{i}" for i in range(row.size)],
        fontsize=7,
    )
    ax.invert_yaxis()
    ax.axvline(0.0, color="0.5", lw=0.6)
    ax.tick_params(axis="x", labelsize=7)
    return {"bars": bars, "ax": ax}


def trace_plot(
    values: Any,
    *,
    ax: Axes | None = None,
    label: str = "residual",
    logy: bool = True,
) -> dict[str, Any]:
    """A solver's per-iteration trace (CG relative residual, LiSSA iterate norm).
    Returns ``{"line", "ax"}``."""
    y = _array(values)
    ax = _new_axes(ax, (4.0, 2.6))
    (line,) = ax.plot(np.arange(1, y.size + 1), y, lw=1.2, color="tab:purple", label=label)
    if logy and y.size and np.all(y[np.isfinite(y)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    return {"line": line, "ax": ax}
