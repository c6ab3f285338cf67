"""Every study plot takes ``ax=``, draws from a small hand-made table and returns what it drew."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from influence_widgets import plots


@pytest.fixture
def table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for depth in (1, 2, 4):
        for wd in (0.0, 0.005):
            for seed in (0, 1):
                for tp in ("highest", "median"):
                    for solver in ("exact", "lissa"):
                        rows.append({
                            "study": "depth", "arch": "mlp", "depth": depth, "width": 5,
                            "activation": "selu", "weight_decay": wd, "seed": seed,
                            "test_point": tp, "solver": solver, "params": "all",
                            "loo_mode": "warm_start", "loo_params": "all",
                            "spearman": rng.uniform(-1, 1), "pearson": rng.uniform(-1, 1),
                            "pearson_lo": -0.5, "pearson_hi": 0.5, "spearman_lo": -0.5,
                            "spearman_hi": 0.5, "n_eval": 5,
                            "top_eigenvalue": float(depth * 3 + rng.uniform()),
                            "rel_error": 0.0 if solver == "exact" else 0.1 * depth,
                            "est_seconds": 0.01 * depth, "frac_within_noise": 0.2,
                        })
    df = pd.DataFrame(rows)
    df.attrs["pairs"] = {i: {"estimated": rng.normal(size=5), "actual": rng.normal(size=5),
                             "noise": 0.1} for i in range(3)}
    return df


def _ax():
    return Figure().add_subplot()


def test_correlation_vs_draws_lines_bands_and_reference(table):
    ax = _ax()
    ref = pd.DataFrame({"depth": [1, 2, 4], "spearman": [0.66, 0.40, 0.51]})
    out = plots.correlation_vs(table, "depth", ax=ax, reference=ref)
    assert out["ax"] is ax and out["lines"] and out["bands"] and out["reference"] is not None
    assert all(line in ax.lines for line in out["lines"])
    assert ax.get_xlabel() == "depth" and "Spearman" in ax.get_ylabel()


def test_correlation_vs_eigenvalue_draws_points(table):
    ax = _ax()
    out = plots.correlation_vs_eigenvalue(table, ax=ax)
    assert out["ax"] is ax and out["points"] and ax.get_xscale() == "log"


def test_correlation_spread_draws_boxes_and_points(table):
    ax = _ax()
    out = plots.correlation_spread(table, "test_point", hue="depth", ax=ax)
    assert out["ax"] is ax and out["boxes"] and out["points"]
    out = plots.correlation_spread(table, ("loo_mode", "loo_params"), ax=_ax())
    assert out["boxes"]


def test_solver_error_draws_log_lines_without_the_exact_solver(table):
    ax = _ax()
    out = plots.solver_error(table, ax=ax)
    assert out["ax"] is ax and out["lines"] and ax.get_yscale() == "log"
    assert "exact" not in [t.get_text() for t in ax.get_legend().get_texts()]


def test_scatter_grid_uses_the_pairs(table):
    fig = Figure()
    axes = fig.subplots(1, 4)
    out = plots.scatter_grid(table, axes=axes)
    assert len(out) == 3 and out[0]["ax"] is axes[0] and out[0]["points"] is not None
    assert not axes[3].axison  # the unused panel is hidden
    assert plots.scatter_grid(table)[0]["ax"].figure is not None  # makes its own figure


def test_study_figures_are_figures(table):
    figs = plots.study_figures("depth", table)
    assert set(figs) == {"depth_trend", "depth_scatter"}
    assert all(isinstance(f, Figure) for f in figs.values())
    assert plots.study_figures("solver", table.assign(study="solver"))
    assert plots.study_figures("depth", table.iloc[:0]) == {}


def test_no_box_over_few_points_failed_rows_marked_and_legend_outside(table):
    """Issue 15: no box plot over one or two points; failed estimates marked, not dropped;
    unconverged models counted on the axis; the legend outside the axes."""
    few = table[(table.seed == 0) & (table.test_point == "highest") & (table.solver == "exact")]
    few = few.assign(error=["", "SolverError: x"] + [""] * (len(few) - 2),
                     converged=[True, False] * (len(few) // 2))
    ax = _ax()
    out = plots.correlation_spread(few, "depth", hue="weight_decay", ax=ax)
    # no box and no error bar over fewer than 5 points (issue 20): the points alone
    assert out["boxes"] == [] and out["errorbars"] == [] and out["failed"] is not None
    labels = " ".join(t.get_text() for t in ax.get_xticklabels())
    assert "1 failed" in labels and "not stationary" in labels
    legend = ax.get_legend()
    assert legend is not None and legend.get_bbox_to_anchor().x0 >= ax.bbox.x1 - 1


def test_scatter_grid_noise_band_is_the_frac_within_noise_rule(table):
    """The band drawn is |actual| < noise (around y = 0), the rule frac_within_noise counts."""
    out = plots.scatter_grid(table, max_panels=1)
    band = out[0]["band"]
    (y0, y1) = band.get_path().get_extents().y0, band.get_path().get_extents().y1
    ys = band.get_transform().transform([(0, y0), (0, y1)])  # axes-fraction x, data y
    inv = out[0]["ax"].transData.inverted().transform(ys)[:, 1]
    assert inv == pytest.approx([-0.1, 0.1])
    assert out[0]["ax"].get_legend() is None  # one figure legend, outside the panels


def test_solver_error_bars_stay_above_zero_on_a_log_scale(table):
    ax = _ax()
    out = plots.solver_error(table, ax=ax)
    lo = min(seg[:, 1].min() for b in out["errorbars"] for c in b.lines[2]
             for seg in c.get_segments())
    assert lo > 0 and out["lines"] and ax.get_yscale() == "log"


@pytest.mark.parametrize("lo, hi", [(1.45, 2.1), (0.3, 800.0), (5.0, 5.0)])
def test_eigenvalue_axis_keeps_readable_non_overlapping_tick_labels(lo, hi):
    """Issue 13 (8): on a short log range the ticks vanished or their labels overlapped."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ev = np.geomspace(lo, hi, 4)
    table = pd.DataFrame({"top_eigenvalue": ev, "spearman": [0.9, 0.8, 0.7, 0.6],
                          "depth": [1, 2, 4, 8], "weight_decay": [0.005] * 4})
    fig = Figure(figsize=(4, 3), layout="constrained")
    out = plots.correlation_vs_eigenvalue(table, ax=fig.add_subplot())
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    ax = out["ax"]
    x0, x1 = ax.get_xlim()
    labels = [t for t in ax.get_xticklabels() if t.get_text() and x0 <= t.get_position()[0] <= x1]
    assert len(labels) >= (1 if lo == hi else 2), [t.get_text() for t in labels]
    boxes = sorted((t.get_window_extent(r) for t in labels), key=lambda b: b.x0)
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:])), [t.get_text() for t in labels]
    assert not any(t.get_text() for t in ax.xaxis.get_minorticklabels())
