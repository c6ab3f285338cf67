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
#: Error bars (or bands) are drawn only over at least this many rows of a category: over two or
#: three points a standard error is itself too uncertain to draw.
MIN_ERRORBAR = 5


def solver_colour(name: str) -> str:
    """One colour per solver, the same in every panel and figure (its place in the registry)."""
    from ..influence.solvers import SOLVERS

    names = list(SOLVERS)
    return f"C{names.index(name) % 10}" if name in names else "0.4"

#: The noise band of the study scatters: the rule ``frac_within_noise`` counts.
NOISE_BAND_LABEL = "|actual| < retraining noise floor (counted in frac_within_noise)"


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
    counts = data.groupby([c for c in (x, hue_col) if c is not None])[y].count()
    if len(counts) and counts.min() < MIN_ERRORBAR:
        errorbar = None  # too few rows for a band to mean anything
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
    _legend_outside(ax, hue_col)
    return {"lines": drawn["lines"], "bands": drawn["collections"], "reference": ref, "ax": ax}


def _log_ticks(ax: Axes, lo: float, hi: float) -> None:
    """Readable ticks on a log axis over ``[lo, hi]``: the 1-2-5 values inside it (at most 6),
    or, on a range too short to hold two of them, three values spread evenly in log space; each
    labelled with 3 significant digits, no minor labels (they overlap on a short range)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    e0, e1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    ticks = [m * 10.0**e for e in range(e0, e1 + 1) for m in (1, 2, 5) if lo <= m * 10.0**e <= hi]
    if len(ticks) > 6:
        ticks = [t for t in ticks if math.isclose(math.log10(t) % 1, 0, abs_tol=1e-9)] or ticks
    if len(ticks) < 2:
        ticks = sorted({float(f"{v:.2g}") for v in np.geomspace(lo, hi, 3)}) if hi > lo else [lo]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.3g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


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
        _log_ticks(ax, float(ev.min()), float(ev.max()))
    ax.set_xlabel(_label("top_eigenvalue"))
    ax.set_ylabel(_label(y))
    if title:
        ax.set_title(title)
    _legend_outside(ax)
    return {"points": points, "ax": ax}


def correlation_spread(table: pd.DataFrame, x: str | Sequence[str] = "test_point", *,
                       y: str = "spearman", hue: str | Sequence[str] | None = None,
                       ax: Axes | None = None, title: str | None = None,
                       min_box: int = 5) -> dict[str, Any]:
    """Spread of ``y`` per category of ``x``: every row as a point, with a box where a category
    has at least ``min_box`` rows and otherwise its mean ± standard error as an error bar (no box
    over one or two points). Rows whose estimate failed (``error``) are marked with a red x at
    the bottom and counted in the tick label; so are models not at their stationarity tolerance
    (``converged`` False). The legend sits outside the axes. Returns ``boxes`` (patches),
    ``points`` (collections), ``errorbars``, ``failed`` and ``ax``."""
    ax = _axes(ax)
    data, x_col = _categorical(table, x)
    data, hue_col = _categorical(data, hue)
    before = _counts(ax)
    counts = data.groupby([c for c in (x_col, hue_col) if c is not None])[y].count()
    boxes: list = []
    if len(counts) and counts.min() >= min_box:
        sns.boxplot(data=data, x=x_col, y=y, hue=hue_col, ax=ax, showfliers=False,
                    boxprops={"alpha": 0.35}, legend=False)
        boxes = _new_artists(ax, *before)["patches"]
    mid = _counts(ax)
    sns.stripplot(data=data, x=x_col, y=y, hue=hue_col, ax=ax, dodge=hue_col is not None,
                  size=4, alpha=0.8, legend=hue_col is not None)
    points = _new_artists(ax, *mid)["collections"]
    errorbars = []
    if not boxes and len(counts) and counts.min() >= MIN_ERRORBAR:
        before_err = _counts(ax)
        sns.pointplot(data=data, x=x_col, y=y, hue=hue_col, ax=ax, errorbar="se",
                      dodge=0.4 if hue_col is not None else False, linestyle="none",
                      marker="_", markersize=14, color="black" if hue_col is None else None,
                      legend=False, capsize=0.1)
        errorbars = _new_artists(ax, *before_err)["lines"]
    failed = None
    if "error" in data:
        bad = data["error"].fillna("").astype(str) != ""
        if bad.any():
            cats = [t.get_text() for t in ax.get_xticklabels()]
            xs = [cats.index(str(v)) for v in data.loc[bad, x_col]]
            failed = ax.scatter(xs, [-1.0] * len(xs), marker="x", color="crimson", s=40,
                                zorder=5, label="estimate failed")
    _tick_counts(ax, data, x_col)
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.set_xlabel(_label(x_col))
    ax.set_ylabel(_label(y))
    ax.tick_params(axis="x", labelsize=8)
    if y in ("spearman", "pearson"):
        ax.set_ylim(-1.08, 1.05)
    if title:
        ax.set_title(title)
    _legend_outside(ax, hue_col)
    return {"boxes": boxes, "points": points, "errorbars": errorbars, "failed": failed, "ax": ax}


def _tick_counts(ax: Axes, data: pd.DataFrame, x_col: str) -> None:
    """Add to each x tick label how many of its rows failed and how many models are not at
    their stationarity tolerance."""
    labels = []
    for t in ax.get_xticklabels():
        g = data[data[x_col].astype(str) == t.get_text()]
        extra = []
        if "error" in g and (g["error"].fillna("").astype(str) != "").any():
            extra.append(f"{int((g['error'].fillna('').astype(str) != '').sum())} failed")
        if "converged" in g and len(g) and not g["converged"].astype(bool).all():
            extra.append(f"{int((~g['converged'].astype(bool)).sum())}/{len(g)} not stationary")
        labels.append(t.get_text() + ("\n" + ", ".join(extra) if extra else ""))
    if labels:
        ax.set_xticks(ax.get_xticks(), labels)


def _legend_outside(ax: Axes, title: str | None = None) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=7, title=title, title_fontsize=7,
                  loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    elif ax.get_legend() is not None:
        ax.get_legend().remove()


def solver_error(table: pd.DataFrame, x: str = "depth", *, y: str = "rel_error",
                 hue: str = "solver", ax: Axes | None = None, logy: bool = True,
                 title: str | None = None) -> dict[str, Any]:
    """Each solver's mean ``y`` (relative error against exact, or time) against ``x`` with its
    standard error as an error bar, log scale. On a log scale rows with a non-positive ``y`` (the
    exact solver against itself) are left out, and an error bar never reaches below the smallest
    positive value drawn (a mean - SE below 0 cannot be drawn on a log axis). Returns ``lines``
    (one per solver), ``errorbars`` and ``ax``."""
    ax = _axes(ax)
    values = pd.to_numeric(table[y], errors="coerce")
    data = table[values > 0] if logy else table[values.notna()]
    lines, bars = [], []
    floor = float(pd.to_numeric(data[y]).min()) if len(data) else 0.0
    for name, g in data.groupby(hue, sort=False):
        st = g.groupby(x)[y].agg(["mean", "sem", "count"]).reset_index()
        sem = st["sem"].fillna(0.0).to_numpy()
        sem = np.where(st["count"].to_numpy() >= MIN_ERRORBAR, sem, 0.0)  # no bar over few
        mean = st["mean"].to_numpy()
        lower = np.minimum(sem, mean - floor) if logy else sem
        colour = solver_colour(str(name)) if hue == "solver" else None
        bar = ax.errorbar(st[x], mean, yerr=[np.maximum(lower, 0.0), sem], marker="o",
                          capsize=3, label=str(name), color=colour)
        lines.append(bar.lines[0])
        bars.append(bar)
    if logy and len(data):
        ax.set_yscale("log")
    _integer_ticks(ax, table[x])
    ax.set_xlabel(_label(x))
    ax.set_ylabel(_label(y) + " (mean ± SE)")
    if title:
        ax.set_title(title)
    _legend_outside(ax, hue)
    return {"lines": lines, "errorbars": bars, "ax": ax}


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
        st = _stats(row)
        flag = ("; model COLLAPSED" if row.get("collapsed") in (True, 1) else
                "; model NOT stationary" if row.get("stationary", True) in (False, 0) else "")
        title = (f"{_panel_title(row, label)}\nSpearman {st['spearman']:.2f} "
                 f"[{st['spearman_ci'][0]:.2f}, {st['spearman_ci'][1]:.2f}], n = {st['n']}{flag}")
        out = scatter_estimated_vs_actual(pair["estimated"], pair["actual"], ax=ax, title=title)
        out["band"] = None
        if noise is not None:
            # the same rule as frac_within_noise: |actual| < noise floor, a band around y = 0
            out["band"] = ax.axhspan(-noise, noise, color="tab:orange", alpha=0.25, lw=0,
                                     zorder=0, label=NOISE_BAND_LABEL)
            lo, hi = ax.get_ylim()
            ax.set_ylim(min(lo, -1.1 * noise), max(hi, 1.1 * noise))
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        ax.title.set_fontsize(8)
        drawn.append(out)
    for ax in axes[len(rows):]:
        ax.set_axis_off()
    if drawn:
        fig = drawn[0]["ax"].figure
        handles, labels = drawn[0]["ax"].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=max(1, len(handles)),
                   fontsize=8)
    return drawn


# ----------------------------------------------------------------------------- per-study figures


def _figure(ncols: int = 1, width: float = 4.8, height: float = 3.4) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    return fig, list(fig.subplots(1, ncols, squeeze=False).ravel())


def _trend_figure(table: pd.DataFrame, x: str) -> Figure:
    """Spearman by ``x``, one panel per activation (the published figures are not drawn on our
    axes: their protocol differs; see ``experiments.reference_table``)."""
    acts = list(dict.fromkeys(table["activation"].dropna())) or [None]
    fig, axes = _figure(len(acts) + 1)
    for ax, act in zip(axes, acts):
        sub = table if act is None else table[table["activation"] == act]
        moving = "" if "stationary" not in sub or sub["stationary"].all() else (
            ", NOT stationary" if not sub["stationary"].any() else ", partly stationary")
        correlation_vs(sub, x, ax=ax, title=f"Spearman by {x} ({act}{moving})")
    correlation_vs_eigenvalue(table, hue=x, style=("activation", "weight_decay"), ax=axes[-1],
                              title="Spearman vs curvature (marker: activation / wd)")
    return fig


def study_figures(study: str, table: pd.DataFrame) -> dict[str, Figure]:
    """The standard figures of a study table, by file stem (used by the command line)."""
    if table.empty:
        return {}
    full, table = table, pd.DataFrame(table.copy())
    table.attrs = {}  # the arrays stay with ``full`` (for the scatter grid) only
    figs: dict[str, Figure] = {}
    if study in ("depth", "width"):
        figs[f"{study}_trend"] = _trend_figure(table, study)
    elif study == "solver":
        fig, (a, b) = _figure(2)
        solver_error(table, ax=a, title="error against the exact solve")
        solver_error(table, y="est_seconds", ax=b, title="time per estimate")
        figs["solver_error"] = fig
    elif study == "validation":
        fig, (ax,) = _figure(1, width=7.0)
        correlation_spread(table, x=("truth", "loo_params"), hue="params", ax=ax,
                           title="estimate params (hue) vs ground truth (x)")
        figs["validation_spread"] = fig
    elif study == "group":
        fig, axes = _figure(3, width=4.2)
        table = table.assign(group_size=table["group_size"].astype(int))
        correlation_spread(table, x="group_size", y="frac_within_noise", ax=axes[0],
                           title="share of |actual| within the noise floor")
        correlation_spread(table, x="group_size", y="effect_to_noise", ax=axes[1],
                           title="median |actual| / noise floor")
        axes[1].axhline(1.0, color="tab:orange", ls="--", lw=1)
        correlation_spread(table, x="group_size", ax=axes[2],
                           title="summed estimate vs actual, per size")
        figs["group_noise"] = fig
    elif study == "noise":
        models = list(dict.fromkeys(table["model"]))
        fig, axes = _figure(len(models), width=4.6)
        table = table.assign(group_size=table["group_size"].astype(int))
        for ax, model in zip(axes, models):
            correlation_spread(table[table["model"] == model], x="group_size",
                               y="effect_to_noise", hue="truth", ax=ax,
                               title=f"{model}: median |effect| / real retraining noise")
            ax.axhline(1.0, color="tab:orange", ls="--", lw=1)
            ax.set_yscale("log")
        figs["noise_effects"] = fig
    elif study == "weight_decay":
        fig, (ax,) = _figure(1, width=7.0)
        correlation_spread(table, x=("schedule", "damping"), hue="weight_decay", ax=ax,
                           title="Spearman by schedule and estimation damping (hue: weight decay)")
        figs["weight_decay_spread"] = fig
    elif study == "ground_truth":
        models = list(dict.fromkeys(table["model"]))
        fig, axes = _figure(len(models), width=5.6)
        for ax, model in zip(axes, models):
            correlation_spread(table[table["model"] == model], x="solver", hue="truth", ax=ax,
                               title=f"{model}: each solver against each ground truth")
        figs["ground_truth_spread"] = fig
    else:
        x = {"test_point": ("activation", "test_point")}.get(study, "arch")
        hue = {"test_point": "depth", "architecture": "solver"}.get(study)
        fig, (ax,) = _figure(1, width=6.0)
        correlation_spread(table, x=x, hue=hue, ax=ax)
        figs[f"{study}_spread"] = fig
    one, seed = _random_seed(full, study)
    grid = scatter_grid(one, label=_GRID_LABELS.get(study, ("arch", "depth")))
    if grid:
        fig = grid[0]["ax"].figure
        if seed is not None:
            fig.suptitle(f"seed {seed} (drawn at random from {full['seed'].nunique()} seeds; "
                         "every seed is in the table)", fontsize=9)
        figs[f"{study}_scatter"] = fig
    return figs


def _random_seed(table: pd.DataFrame, study: str) -> tuple[pd.DataFrame, Any]:
    """The rows of one seed drawn at random (seeded by the study's name, so the same table gives
    the same figure), never always the lowest seed."""
    if "seed" not in table or table.empty:
        return table, None
    pairs = table.attrs.get("pairs", {})
    drawable = table[[pairs.get(i) is not None for i in table.index]] if pairs else table
    seeds = sorted((drawable if len(drawable) else table)["seed"].unique())
    rng = np.random.default_rng(sum(map(ord, study)))
    seed = seeds[int(rng.integers(len(seeds)))]
    rows = table[table["seed"] == seed]
    rows.attrs = table.attrs
    return rows, seed


_GRID_LABELS = {
    "depth": ("depth", "weight_decay", "seed"),
    "width": ("width", "weight_decay", "seed"),
    "weight_decay": ("schedule", "weight_decay", "damping"),
    "noise": ("model", "truth", "group_size"),
    "architecture": ("arch", "solver"),
    "test_point": ("depth", "test_point", "seed"),
    "validation": ("depth", "params", "truth", "loo_params"),
    "group": ("arch", "seed", "test_point", "group_size"),
    "ground_truth": ("model", "solver", "truth"),
}
