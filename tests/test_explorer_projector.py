"""Issue 21 (9): readable on a projector and accessible: a reset button, larger fonts, the zoom
toolbar shown, a label on the canvas, tick labels that never collide."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from test_explorer_view import MODEL, K, iris_model  # noqa: F401  (a module fixture)

import influence_widgets as iw
from influence_widgets.influence import SOLVERS
from influence_widgets.plots.scatter import scatter_estimated_vs_actual
from influence_widgets.widgets import panels


def test_reset_puts_every_control_back(iris_model, monkeypatch):  # noqa: F811
    monkeypatch.setattr(iw.InfluenceExplorer, "INTERACTIVE", False)
    ex = iw.InfluenceExplorer({MODEL: iris_model}, model=MODEL, threaded=False)
    before = {name: getattr(ex, name) for name in
              ("solver", "curvature", "params", "gt_mode", "selection", "k", "gt_steps",
               "test_pick")}
    c = ex.controls
    c.solver.value = "lissa"
    c.settings.widgets["lissa"]["steps"].value = 77
    c.settings.damping.value = 0.3
    c.curvature.value = "ggn"
    c.params.value = "last_layer"
    c.gt_mode.value = "lds"
    c.selection.value = "random"
    c.k.value = 9
    c.test_pick.value = "median"
    c.reset.click()
    assert ex.error is None, ex.error
    assert {name: getattr(ex, name) for name in before} == before
    assert c.settings.damping.value == 0.0
    assert c.settings.widgets["lissa"]["steps"].value == SOLVERS["lissa"].Settings().steps


def _tick_boxes(ax, renderer):
    return [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]


@pytest.mark.parametrize("scale", [1e-4, 3e-6, 1.0])
def test_tick_labels_never_collide(scale):
    rng = np.random.default_rng(1)
    est = scale * rng.normal(size=40)
    fig = Figure(figsize=(5.2, 5.7), dpi=100, layout="constrained")
    artists = scatter_estimated_vs_actual(est, est + 0.3 * scale * rng.normal(size=40),
                                          ax=fig.add_subplot(), noise=0.2 * scale,
                                          stats={"pearson": 0.9, "spearman": 0.9, "n": 40})
    panels.style_for_projector(artists)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    boxes = _tick_boxes(artists["ax"], canvas.get_renderer())
    assert len(boxes) >= 3
    for a, b in zip(boxes, boxes[1:]):
        assert a.x1 + 2 <= b.x0, f"tick labels collide at scale {scale}: {a} {b}"
    assert min(t.get_fontsize() for t in artists["ax"].get_xticklabels()) >= 10
    assert artists["ax"].title.get_fontsize() >= 11


def test_the_live_canvas_shows_its_toolbar_and_is_labelled(iris_model, monkeypatch):  # noqa: F811
    pytest.importorskip("ipympl")
    monkeypatch.setattr(iw.InfluenceExplorer, "INTERACTIVE", True)
    ex = iw.InfluenceExplorer({MODEL: iris_model}, model=MODEL, threaded=False)
    ex.controls.k.value = K
    ex.controls.gt_steps.value = 150
    assert ex.canvas.toolbar_visible in (True, "visible")
    # no widget tooltip on the plot: Voila's widget manager fails to render a view with one
    assert ex.canvas.tooltip is None and ex.scatter_box.tooltip is None
    assert "role='img'" in ex.scatter_alt.value and "scatter" in ex.scatter_label
    ex.compute(raise_errors=True)
    assert f"Scatter of {K} training points" in ex.scatter_label and "Spearman" in ex.scatter_label
    assert "aria-label='Scatter of" in ex.scatter_alt.value
    assert "--jp-widgets-font-size:15px" in ex.intro.value


def test_agreement_per_test_point_reuses_the_retrains(iris_model, monkeypatch):  # noqa: F811
    monkeypatch.setattr(iw.InfluenceExplorer, "INTERACTIVE", False)
    ex = iw.InfluenceExplorer({MODEL: iris_model}, model=MODEL, threaded=False)
    ex.controls.k.value = K
    ex.controls.gt_steps.value = 150
    ex.compute(raise_errors=True)
    retrains = ex.retrain_count
    ex.agreement_button.click()
    assert ex.error is None, ex.error
    frame = ex.last_agreement
    assert len(frame) == iris_model.data.X_test.shape[0] and frame["shown"].sum() == 1
    shown = frame.loc[frame["shown"]].iloc[0]
    assert shown["test_index"] == ex.test_index
    assert shown["spearman"] == pytest.approx(ex.last_stats["spearman"], abs=1e-9)
    assert ex.retrain_count == retrains  # nothing retrained
    assert "on 30 test points" in ex.agreement_html.value
    assert ex.agreement_out.outputs[0]["data"]["image/png"]
    ex.controls.model.value = MODEL
    ex._clear_results()
    assert ex.last_agreement is None and "press the button" in ex.agreement_html.value


def test_agreement_per_test_point_explains_itself_for_subsets(iris_model, monkeypatch):  # noqa: F811
    monkeypatch.setattr(iw.InfluenceExplorer, "INTERACTIVE", False)
    ex = iw.InfluenceExplorer({MODEL: iris_model}, model=MODEL, threaded=False)
    ex.controls.k.value = 8
    ex.controls.gt_mode.value = "lds"
    ex.compute(raise_errors=True)
    ex.agreement_button.click()
    assert "choose a LOO ground truth" in ex.error


def test_the_live_toolbar_has_a_free_strip_above_the_title(iris_model, monkeypatch):  # noqa: F811
    """ipympl draws its (now always shown) toolbar over the top of the figure: the title and
    the axes stay below that strip."""
    pytest.importorskip("ipympl")
    from influence_widgets.widgets.scatter_view import TOOLBAR_PX

    monkeypatch.setattr(iw.InfluenceExplorer, "INTERACTIVE", True)
    ex = iw.InfluenceExplorer({MODEL: iris_model}, model=MODEL, threaded=False)
    ex.controls.k.value = K
    ex.controls.gt_steps.value = 150
    ex.compute(raise_errors=True)
    canvas = FigureCanvasAgg(ex.last_figure)
    canvas.draw()
    top = ex.last_figure.bbox.height - TOOLBAR_PX
    title = ex._artists["ax"].title.get_window_extent(canvas.get_renderer())
    assert title.y1 <= top, (title, top)


@pytest.mark.parametrize("ncols", [1, 3])
def test_the_digit_gallery_headings_fit_the_figure(ncols):
    import torch

    X = torch.rand(10, 64)
    y = torch.arange(10)
    est = torch.linspace(-1, 1, 10)
    positions = panels.extreme_positions(est.numpy(), n=ncols)
    fig = panels.extremes_figure(X, y, positions, torch.arange(10), est, est, class_names=None,
                                 image_shape=(1, 8, 8), info={})
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    for sub in fig.subfigs:
        box = sub._suptitle.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= fig.bbox.width + 0.5, (box, fig.bbox)
        assert sub._suptitle.get_fontsize() >= 10
