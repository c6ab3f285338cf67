"""Issue 21 (5): no stale or wrong text in the explorer.

The hover line, the point selector's name and the header follow the settings; a factored
solver's title names the curvature it really inverts; no status reads "expected 0.0 s"; a
wrapped model is titled with the name given to ``wrap``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_explorer_view import MODEL, K, iris_model  # noqa: F401  (a module fixture)

import influence_widgets as iw
from influence_widgets.widgets import panels
from influence_widgets.widgets.session import Request, expected_text


def _explorer(model, monkeypatch, interactive=True, **controls):  # noqa: F811
    if interactive:
        pytest.importorskip("ipympl")
    monkeypatch.setattr(iw.InfluenceExplorer, "INTERACTIVE", interactive)
    ex = iw.InfluenceExplorer({MODEL: model}, model=MODEL, threaded=False)
    ex.controls.k.value = K
    ex.controls.gt_steps.value = 150
    for name, value in controls.items():
        getattr(ex.controls, name).value = value
    return ex


def _hover_a_dot(ex) -> None:
    from matplotlib.backend_bases import MouseEvent

    points = ex._artists["points"]
    x, y = points.get_offset_transform().transform(np.asarray(points.get_offsets())[0])
    ex.last_figure.canvas.callbacks.process(
        "motion_notify_event", MouseEvent("motion_notify_event", ex.last_figure.canvas, x, y))
    assert "est " in ex.hover_html.value  # a dot's numbers are shown


@pytest.mark.parametrize("control, value", [("solver", "cg"), ("gt_mode", "scratch")])
def test_the_hover_line_is_reset_when_a_setting_changes(iris_model, monkeypatch,  # noqa: F811
                                                        control, value):
    ex = _explorer(iris_model, monkeypatch)
    ex.compute(raise_errors=True)
    _hover_a_dot(ex)
    getattr(ex.controls, control).value = value
    assert "est " not in ex.hover_html.value and "Click a dot" in ex.hover_html.value


def test_the_hover_line_is_reset_when_the_model_changes(iris_model, monkeypatch):  # noqa: F811
    other = iw.wrap(torch.nn.Linear(4, 3).double(), iris_model.train, iris_model.data.test,
                    weight_decay=0.0, name="linear")
    pytest.importorskip("ipympl")
    monkeypatch.setattr(iw.InfluenceExplorer, "INTERACTIVE", True)
    ex = iw.InfluenceExplorer({MODEL: iris_model, "linear": other}, model=MODEL, threaded=False)
    ex.controls.k.value = K
    ex.compute(raise_errors=True)
    _hover_a_dot(ex)
    ex.controls.model.value = "linear"
    assert "est " not in ex.hover_html.value and "Click a dot" in ex.hover_html.value


def test_after_lds_the_point_selector_and_header_follow_the_ground_truth(iris_model,  # noqa: F811
                                                                         monkeypatch):
    ex = _explorer(iris_model, monkeypatch, interactive=False, gt_mode="lds", k=8)
    assert "random subset" in ex.intro.value and "each dot is one training point" not in \
        ex.intro.value
    ex.compute(raise_errors=True)
    assert ex.controls.point.description == "random subset"
    ex.controls.gt_mode.value = "warm_start"
    assert "each dot is one training point" in ex.intro.value
    ex.controls.model.value = MODEL  # the same model again: nothing is cleared
    ex._clear_results()
    assert ex.controls.point.description == "training point"


@pytest.mark.parametrize("fisher, words", [("ggn", "GGN"), ("sampled", "sampled Fisher"),
                                           ("empirical", "empirical Fisher")])
def test_a_factored_solver_title_names_its_own_curvature(fisher, words):
    from influence_widgets.influence import SOLVERS

    settings = SOLVERS["ekfac"].Settings(fisher=fisher)
    req = Request(model="m", test_index=0, solver="ekfac", settings=settings,
                  curvature="hessian")
    title = panels.plot_title(req, "float64", 10)
    assert words in title and "Hessian" not in title
    exact = panels.plot_title(Request(model="m", test_index=0), "float64", 10)
    assert "Hessian" in exact
    ident = panels.plot_title(Request(model="m", test_index=0, solver="identity"), "float64", 10)
    assert "Hessian" not in ident and "identity" in ident


def test_no_status_reads_expected_zero_seconds(iris_model, monkeypatch):  # noqa: F811
    assert expected_text(0.01) == "expected under 1 s"
    assert expected_text(4.24) == "expected ~4.2 s"
    ex = _explorer(iris_model, monkeypatch, interactive=False)
    ex.compute(raise_errors=True)
    ex.compute(raise_errors=True)  # everything cached: expected well under a second
    assert "0.0 s" not in ex.controls.status.value, ex.controls.status.value
    assert "expected" in ex.controls.status.value


def test_a_wrapped_model_is_titled_with_the_name_given_to_wrap(iris_model):  # noqa: F811
    net = torch.nn.Sequential(torch.nn.Linear(4, 3)).double()
    X, y = iris_model.train
    tm = iw.wrap(net, (X, y), iris_model.data.test, weight_decay=0.0, name="toy net")
    ex = iw.InfluenceExplorer(model=tm, threaded=False, interactive=False)
    assert ex.model_name == "toy net"
    ex.controls.k.value = 5
    ex.compute(raise_errors=True)
    assert ex.last_figure.axes[0].get_title().startswith("toy net")
    direct = iw.InfluenceExplorer(model=net, train=(X, y), test=iris_model.data.test,
                                  weight_decay=0.0, name="direct net", threaded=False,
                                  interactive=False)
    assert direct.model_name == "direct net"


def test_one_noise_floor_number_and_definition_on_the_screen(iris_model, monkeypatch):  # noqa: F811
    """Item 6: the band in the legend and the line under the scatter show the same number, the
    real retraining noise of the ground-truth layer; no other floor appears in the report."""
    import re

    ex = _explorer(iris_model, monkeypatch, interactive=False)
    ex.compute(raise_errors=True)
    assert ex.session.noise_kind(ex.outcome.request) == "retraining"
    band = ex._artists["band"].get_label()
    [in_legend] = re.findall(r"noise floor ([0-9.e+-]+)", band)
    [in_stats] = re.findall(r"noise floor</span> ±([0-9.e+-]+)", ex.stats.value)
    assert in_legend == in_stats == f"{ex.outcome.noise_std:.2g}"
    words = " ".join(f"{f.what} {f.why}" for f in ex.last_report)
    assert "median" not in words and "perturb" not in words


def test_a_perturbation_only_floor_is_named_and_never_within_noise(iris_model,  # noqa: F811
                                                                   monkeypatch):
    ex = _explorer(iris_model, monkeypatch, interactive=False)
    monkeypatch.setattr(type(ex.session), "noise_kind", lambda self, req: "perturbation")
    ex.compute(raise_errors=True)
    assert "perturbation-only floor" in ex.stats.value
    assert "within noise floor" not in ex.stats.value
    assert ex._artists["band"] is None


def test_numbers_are_plain_where_they_can_be(iris_model, monkeypatch):  # noqa: F811
    """Item 9: an effect of 0.143 reads "+0.143", not "+1.430e-01" (tiny ones keep a power of
    ten)."""
    ex = _explorer(iris_model, monkeypatch, interactive=False)
    ex.compute(raise_errors=True)
    pos = int(np.argmax(np.abs(ex.last_estimates.numpy())))
    label = panels.dot_label(ex.outcome, pos)
    est = float(ex.last_estimates[pos])
    assert f"est {est:+.3g}," in label and "e-01" not in label
    ex.controls.point.value = pos
    assert f"estimated {est:+.3g}" in ex.point_html.value
