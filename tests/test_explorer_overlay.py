"""Issue 21 (2): an overlaid run keeps the axes' size, its legend stays inside the figure, and
its statistics are shown."""

from __future__ import annotations

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from test_explorer_view import MODEL, K, iris_model  # noqa: F401  (a module fixture)

import influence_widgets as iw


def _geometry(fig):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    return ax.get_window_extent(renderer), ax.get_legend().get_window_extent(renderer), fig.bbox


@pytest.fixture
def two_runs(iris_model, monkeypatch):  # noqa: F811
    monkeypatch.setattr(iw.InfluenceExplorer, "INTERACTIVE", False)
    ex = iw.InfluenceExplorer({MODEL: iris_model}, model=MODEL, threaded=False)
    ex.controls.k.value = K
    ex.controls.gt_steps.value = 150
    ex.compute(raise_errors=True)
    ex.controls.solver.value = "cg"
    ex.controls.gt_mode.value = "warm_start"
    ex.compute(raise_errors=True)
    return ex


def test_the_overlay_keeps_the_axes_and_the_legend_inside_the_figure(two_runs):
    ex = two_runs
    alone, _, _ = _geometry(ex.last_figure)
    ex.overlay(1)
    assert ex._artists["overlay"]
    axes, legend, fig = _geometry(ex.last_figure)
    assert axes.width >= 0.9 * alone.width and axes.height >= 0.85 * alone.height, (
        f"the axes shrank from {alone.width:.0f}x{alone.height:.0f} to "
        f"{axes.width:.0f}x{axes.height:.0f} px")
    assert legend.x0 >= fig.x0 and legend.x1 <= fig.x1, (legend, fig)
    assert legend.y0 >= fig.y0


def test_the_overlaid_runs_statistics_are_shown(two_runs):
    ex = two_runs
    ex.overlay(1)
    first = ex.history[1]
    assert "overlaid run" in ex.stats.value
    assert f"{first.stats['spearman']:.3f}" in ex.stats.value.split("overlaid run")[1]
    assert f"{first.stats['pearson']:.3f}" in ex.stats.value.split("overlaid run")[1]
    ex.overlay(None)
    assert "overlaid run" not in ex.stats.value
