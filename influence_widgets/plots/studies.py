"""Figures of the study tables: correlation against depth/width with confidence bands, against the
top Hessian eigenvalue, spread across test points, solver errors, scatter grids.

Every helper takes a tidy table (as returned by :mod:`influence_widgets.experiments`) and
``ax=``, draws with seaborn/matplotlib's object API, and returns what it drew. None of them
trains or computes influence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .scatter import scatter_estimated_vs_actual

LABELS = {
    "spearman": "Spearman ρ (estimate vs actual)",
    "pearson": "Pearson r (estimate vs actual)",
    "rel_error": "relative error vs exact",
    "est_seconds": "estimate time (s)",
    "frac_within_noise": "fraction of effects within noise",
    "top_eigenvalue": "largest Hessian eigenvalue",
    "weight_decay": "weight decay",
    "test_point": "test point",
}
REFERENCE_LABEL = "reference (Epifano et al.)"


def _axes(ax: Axes | None, figsize: tuple[float, float] = (4.5, 3.2)) -> Axes:
    return ax if ax is not None else Figure(figsize=figsize, layout="constrained").add_subplot()


def _label(col: str) -> str:
    return LABELS.get(col, col.replace("_", " "))


def _categorical(table: pd.DataFrame,
                 cols: str | Sequence[str] | None) -> tuple[pd.DataFrame, str | None]:
    """``table`` with ``cols`` as one text column (joined by " / "), for hue and x axes."""
    if cols is None:
        return table, None
    cols = [cols] if isinstance(cols, str) else list(cols)
    name = " / ".join(cols)
    text = table[cols].astype(str).agg(" / ".join, axis=1)
    return table.assign(**{name: text}), name


def _new_artists(ax: Axes, lines: int, collections: int, patches: int) -> dict[str, list]:
    return {"lines": list(ax.lines[lines:]), "collections": list(ax.collections[collections:]),
            "patches": list(ax.patches[patches:])}


def _counts(ax: Axes) -> tuple[int, int, int]:
    return len(ax.lines), len(ax.collections), len(ax.patches)


def _integer_ticks(ax: Axes, values: pd.Series) -> None:
    """Ticks at the values of a small integer grid (depths, widths)."""
    v = pd.to_numeric(values, errors="coerce").dropna().unique()
    if 0 < len(v) <= 12 and np.allclose(v, np.round(v)):
        ax.set_xticks(sorted(v))


def correlation_vs(table: pd.DataFrame, x: str = "depth", *, y: str = "spearman",
                   hue: str | Sequence[str] | None = "weight_decay", ax: Axes | None = None,
                   reference: pd.DataFrame | None = None, errorbar: Any = ("ci", 95),
                   title: str | None = None) -> dict[str, Any]:
    """Mean ``y`` against ``x`` (one line per ``hue``) with a confidence band over seeds and test
    points; ``reference`` (a table with ``x`` and ``y``) is drawn as black squares.
    Returns ``lines``, ``bands``, ``reference`` and ``ax``."""
    ax = _axes(ax)
    data, hue_col = _categorical(table, hue)
    before = _counts(ax)
    sns.lineplot(data=data, x=x, y=y, hue=hue_col, marker="o", errorbar=errorbar, ax=ax,
                 err_kws={"alpha": 0.2})
    drawn = _new_artists(ax, *before)
    ref = None
    if reference is not None and len(reference):
        (ref,) = ax.plot(reference[x], reference[y], ls="--", marker="s", color="black",
                         label=REFERENCE_LABEL)
    ax.axhline(0.0, color="0.6", lw=0.6)
    _integer_ticks(ax, table[x])
    ax.set_xlabel(_label(x))
    ax.set_ylabel(_label(y))
    if y in ("spearman", "pearson"):
        ax.set_ylim(-1.05, 1.05)
    if title:
        ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, title=hue_col, title_fontsize=8)
    return {"lines": drawn["lines"], "bands": drawn["collections"], "reference": ref, "ax": ax}


def correlation_vs_eigenvalue(table: pd.DataFrame, *, y: str = "spearman",
                              hue: str | Sequence[str] | None = "depth",
                              style: str | None = "weight_decay", ax: Axes | None = None,
                              title: str | None = None) -> dict[str, Any]:
    """``y`` against the largest Hessian eigenvalue, one point per row (log x when positive).
    Returns ``points`` and ``ax``."""
    ax = _axes(ax)
    data, hue_col = _categorical(table, hue)
    data, style_col = _categorical(data, style)
    before = _counts(ax)
    sns.scatterplot(data=data, x="top_eigenvalue", y=y, hue=hue_col, style=style_col, ax=ax, s=30)
    points = _new_artists(ax, *before)["collections"]
    ev = pd.to_numeric(table["top_eigenvalue"], errors="coerce")
    if len(ev) and (ev > 0).all():
        ax.set_xscale("log")
    ax.set_xlabel(_label("top_eigenvalue"))
    ax.set_ylabel(_label(y))
    if title:
        ax.set_title(title)
    if ax.get_legend() is not None:
        ax.legend(fontsize=7)
    return {"points": points, "ax": ax}


def correlation_spread(table: pd.DataFrame, x: str | Sequence[str] = "test_point", *,
                       y: str = "spearman", hue: str | Sequence[str] | None = None,
                       ax: Axes | None = None, title: str | None = None) -> dict[str, Any]:
    """Spread of ``y`` per category of ``x``: a box per category with every row as a point.
    Returns ``boxes`` (patches), ``points`` (collections) and ``ax``."""
    ax = _axes(ax)
    data, x_col = _categorical(table, x)
    data, hue_col = _categorical(data, hue)
    before = _counts(ax)
    sns.boxplot(data=data, x=x_col, y=y, hue=hue_col, ax=ax, showfliers=False,
                boxprops={"alpha": 0.35}, legend=False)
    mid = _counts(ax)
    sns.stripplot(data=data, x=x_col, y=y, hue=hue_col, ax=ax, dodge=hue_col is not None,
                  size=4, alpha=0.8, legend=hue_col is not None)
    boxes = _new_artists(ax, *before)["patches"]
    points = _new_artists(ax, *mid)["collections"]
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.set_xlabel(_label(x_col))
    ax.set_ylabel(_label(y))
    ax.tick_params(axis="x", labelsize=8)
    if title:
        ax.set_title(title)
    return {"boxes": boxes, "points": points, "ax": ax}


def solver_error(table: pd.DataFrame, x: str = "depth", *, y: str = "rel_error",
                 hue: str = "solver", ax: Axes | None = None, logy: bool = True,
                 title: str | None = None) -> dict[str, Any]:
    """Each solver's ``y`` (relative error against exact, or time) against ``x``, log scale.
    Rows with a non-positive ``y`` (the exact solver against itself) are left out on a log scale.
    Returns ``lines``, ``bands`` and ``ax``."""
    ax = _axes(ax)
    values = pd.to_numeric(table[y], errors="coerce")
    data = table[values > 0] if logy else table
    before = _counts(ax)
    sns.lineplot(data=data, x=x, y=y, hue=hue, marker="o", ax=ax, errorbar=("ci", 95),
                 err_kws={"alpha": 0.2})
    drawn = _new_artists(ax, *before)
    if logy and len(data):
        ax.set_yscale("log")
    _integer_ticks(ax, table[x])
    ax.set_xlabel(_label(x))
    ax.set_ylabel(_label(y))
    if title:
        ax.set_title(title)
    return {"lines": drawn["lines"], "bands": drawn["collections"], "ax": ax}


def _panel_title(row: pd.Series, label: Sequence[str]) -> str:
    parts = []
    for col in label:
        v = row.get(col)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        parts.append(f"{col.replace('_', ' ')} {v:g}" if isinstance(v, float | int | np.number)
                     and not isinstance(v, bool) else f"{v}")
    return ", ".join(parts)


def _stats(row: pd.Series) -> dict[str, Any]:
    return {"pearson": row["pearson"], "spearman": row["spearman"],
            "pearson_ci": (row["pearson_lo"], row["pearson_hi"]),
            "spearman_ci": (row["spearman_lo"], row["spearman_hi"]), "n": int(row["n_eval"])}


def scatter_grid(table: pd.DataFrame, *, axes: Sequence[Axes] | np.ndarray | None = None,
                 label: Sequence[str] = ("arch", "depth", "weight_decay", "test_point"),
                 max_panels: int = 8, ncols: int = 4) -> list[dict[str, Any]]:
    """Estimated against actual influence for the first ``max_panels`` rows that have their
    arrays in ``table.attrs["pairs"]``, one panel each (:func:`scatter_estimated_vs_actual`).
    ``axes``: where to draw (a new figure when ``None``). Returns each panel's artists."""
    pairs = table.attrs.get("pairs", {})
    rows = [(i, r) for i, r in table.iterrows() if pairs.get(i) is not None][:max_panels]
    if axes is None:
        n = max(1, len(rows))
        cols = min(ncols, n)
        nrows = math.ceil(n / cols)
        fig = Figure(figsize=(3.8 * cols, 3.4 * nrows), layout="constrained")
        axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    axes = list(np.ravel(axes))
    drawn = []
    for ax, (i, row) in zip(axes, rows):
        pair = pairs[i]
        noise = pair.get("noise")
        noise = noise if noise is not None and np.isfinite(noise) else None
        drawn.append(scatter_estimated_vs_actual(pair["estimated"], pair["actual"], ax=ax,
                                                 noise=noise, stats=_stats(row),
                                                 title=_panel_title(row, label)))
    for ax in axes[len(rows):]:
        ax.set_axis_off()
    return drawn


# ----------------------------------------------------------------------------- per-study figures


def _figure(ncols: int = 1, width: float = 4.8, height: float = 3.4) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    return fig, list(fig.subplots(1, ncols, squeeze=False).ravel())


def _trend_figure(table: pd.DataFrame, x: str, reference: pd.DataFrame | None) -> Figure:
    acts = list(dict.fromkeys(table["activation"].dropna())) or [None]
    fig, axes = _figure(len(acts) + 1)
    for ax, act in zip(axes, acts):
        sub = table if act is None else table[table["activation"] == act]
        ref = reference if act == "selu" else None
        correlation_vs(sub, x, ax=ax, reference=ref, title=f"activation: {act}")
    correlation_vs_eigenvalue(table, hue=x, ax=axes[-1], title="accuracy vs curvature")
    return fig


def study_figures(study: str, table: pd.DataFrame) -> dict[str, Figure]:
    """The standard figures of a study table, by file stem (used by the command line)."""
    if table.empty:
        return {}
    figs: dict[str, Figure] = {}
    if study in ("depth", "width"):
        from ..experiments.reference import REFERENCE_DEPTH

        figs[f"{study}_trend"] = _trend_figure(table, study,
                                               REFERENCE_DEPTH if study == "depth" else None)
    elif study == "solver":
        fig, (a, b) = _figure(2)
        solver_error(table, ax=a, title="error against the exact solve")
        solver_error(table, y="est_seconds", ax=b, title="time per estimate")
        figs["solver_error"] = fig
        return figs
    elif study == "validation":
        fig, (ax,) = _figure(1, width=7.0)
        correlation_spread(table, x=("loo_mode", "loo_params"), hue="params", ax=ax,
                           title="estimate params (hue) vs ground truth (x)")
        figs["validation_spread"] = fig
    elif study == "group":
        fig, (ax,) = _figure(1)
        correlation_spread(table, x="arch", y="frac_within_noise", ax=ax,
                           title="group effects within the noise floor")
        figs["group_noise"] = fig
    elif study == "ground_truth":
        models = list(dict.fromkeys(table["model"]))
        fig, axes = _figure(len(models), width=5.6)
        for ax, model in zip(axes, models):
            correlation_spread(table[table["model"] == model], x="solver", hue="truth", ax=ax,
                               title=f"{model}: each solver against each ground truth")
        figs["ground_truth_spread"] = fig
    else:
        x = {"test_point": "test_point", "weight_decay": ("arch", "solver")}.get(study, "arch")
        hue = {"test_point": "depth", "weight_decay": "weight_decay"}.get(study)
        fig, (ax,) = _figure(1, width=6.0)
        correlation_spread(table, x=x, hue=hue, ax=ax)
        figs[f"{study}_spread"] = fig
    first_seed = table[table["seed"] == table["seed"].min()] if "seed" in table else table
    grid = scatter_grid(first_seed, label=_GRID_LABELS.get(study, ("arch", "depth")))
    if grid:
        figs[f"{study}_scatter"] = grid[0]["ax"].figure
    return figs


_GRID_LABELS = {
    "depth": ("depth", "weight_decay", "seed"),
    "width": ("width", "weight_decay", "seed"),
    "weight_decay": ("arch", "solver", "weight_decay"),
    "architecture": ("arch", "solver"),
    "test_point": ("depth", "test_point", "seed"),
    "validation": ("depth", "params", "loo_mode", "loo_params"),
    "group": ("arch", "seed", "test_point"),
    "ground_truth": ("model", "solver", "truth"),
}
