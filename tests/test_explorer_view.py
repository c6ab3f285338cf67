"""What the explorer shows: nothing over the data, titles that name every setting, a dot that
can be clicked and hovered, explanations for every number, and the LDS ground truth."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from matplotlib.backend_bases import MouseEvent
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import influence_widgets as iw
from influence_widgets.plots.scatter import scatter_estimated_vs_actual
from influence_widgets.widgets import panels

MODEL = "iris-view"
K = 10


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INFLUENCE_WIDGETS_CACHE", str(tmp_path_factory.mktemp("iw-view-cache")))
        torch.set_num_threads(1)
        data = iw.datasets.iris()
        spec = iw.models.mlp_spec(data.input_shape, data.n_classes, depth=1, width=4,
                                  activation="tanh")
        config = iw.TrainConfig(optimizer="lbfgs", lr=1.0, steps=300, dtype="float64",
                                weight_decay=0.01, device="cpu", grad_tol=1e-6)
        return iw.train(spec, data.train, config, name=MODEL, data=data)


def _explorer(model, interactive: bool, monkeypatch, **controls):
    monkeypatch.setattr(iw.InfluenceExplorer, "INTERACTIVE", interactive)
    ex = iw.InfluenceExplorer({MODEL: model}, model=MODEL, threaded=False)
    ex.controls.k.value = K
    ex.controls.gt_steps.value = 150
    for name, value in controls.items():
        getattr(ex.controls, name).value = value
    ex.compute(raise_errors=True)
    return ex


def _bbox(artist, renderer):
    return artist.get_window_extent(renderer)


def _drawn(fig: Figure):
    canvas = FigureCanvasAgg(fig) if not hasattr(fig.canvas, "get_renderer") else fig.canvas
    canvas.draw()
    return canvas.get_renderer()


def test_legend_and_statistics_sit_outside_the_axes():
    rng = np.random.default_rng(0)
    est = rng.normal(size=30)
    act = est + 0.2 * rng.normal(size=30)
    fig = Figure(figsize=(5.3, 5.7), layout="constrained")
    art = scatter_estimated_vs_actual(
        est, act, ax=fig.add_subplot(), noise=0.1,
        stats={"pearson": 0.9, "spearman": 0.8, "pearson_ci": (0.8, 0.95), "n": 30})
    r = _drawn(fig)
    ax = art["ax"]
    box = _bbox(ax, r)
    assert not _bbox(art["legend"], r).overlaps(box), "the legend covers the axes"
    assert "Pearson r = 0.900" in art["text"].get_text()
    assert art["text"] in art["legend"].get_texts()  # the statistics are in the outside box
    assert not ax.texts, "text drawn inside the axes"
    inside = fig.bbox  # and the legend is not cut off by the figure's edge
    lb = _bbox(art["legend"], r)
    assert lb.x0 >= inside.x0 - 1 and lb.x1 <= inside.x1 + 1 and lb.y0 >= inside.y0 - 1


def test_noise_band_is_the_frac_within_noise_definition():
    """The band is |actual| < noise, the same test as ``frac_within_noise``."""
    est = np.linspace(-1, 1, 21)
    act = np.linspace(-0.5, 0.5, 21)[::-1]
    noise = 0.22
    art = scatter_estimated_vs_actual(est, act, noise=noise)
    y0, y1 = np.asarray(art["band"].get_path().get_extents().get_points())[:, 1]
    lo, hi = art["ax"].transData.inverted().transform(
        art["band"].get_transform().transform([(0, y0), (0, y1)]))[:, 1]
    inside = np.mean((act > lo) & (act < hi))
    assert inside == pytest.approx(iw.compare(est, act, noise=noise)["frac_within_noise"])
    assert "|actual| < noise floor" in art["band"].get_label()


def test_a_band_too_thin_to_see_says_so():
    art = scatter_estimated_vs_actual([0.0, 1.0, 2.0], [0.0, 1.0, 2.1], noise=2e-11)
    assert "too thin to see" in art["band"].get_label()


def test_titles_name_damping_curvature_parameters_and_ground_truth(iris_model, monkeypatch):
    ex = _explorer(iris_model, False, monkeypatch)
    title = ex.last_figure.axes[0].get_title()
    for part in ("test #", "exact", "damping 0", "Hessian", "all params", "LOO warm start",
                 "150 steps"):
        assert part in title, (part, title)
    ex.controls.settings.damping.value = 1.0
    ex.controls.params.value = "last_layer"
    ex.compute(raise_errors=True)
    other = ex.last_figure.axes[0].get_title()
    assert "damping 1" in other and "last layer params" in other and other != title


def test_every_number_has_its_explanation(iris_model, monkeypatch):
    ex = _explorer(iris_model, False, monkeypatch)
    text = ex.stats.value
    assert "What do these numbers mean?" in text
    hints = re.findall(r"title='([^']+)'", text)
    for word in ("linear correlation", "rank correlation", "top-10 overlap", "sign agreement",
                 "within noise floor", "noise floor:"):
        assert any(word in h for h in hints), word
    assert "by the estimate" in ex.extremes_html.value  # what "most helpful" is ranked by


def test_eigenvalue_text_names_a_positive_smallest_eigenvalue_for_what_it_is():
    pos = panels._eigen_text({"top_eigenvalue": 2.0, "min_eigenvalue": 9.65e-5, "n_negative": 0})
    assert "most negative" not in pos and "smallest" in pos and "none negative" in pos
    neg = panels._eigen_text({"top_eigenvalue": 2.0, "min_eigenvalue": -0.1, "n_negative": 3})
    assert "most negative" in neg and "3 negative" in neg


def _mouse(ex, name: str, pos: int) -> MouseEvent:
    fig = ex.last_figure
    fig.canvas.draw()
    points = ex._artists["points"]
    x, y = points.get_offset_transform().transform(np.asarray(points.get_offsets())[pos])
    return MouseEvent(name, fig.canvas, x, y, button=1 if "press" in name else None)


def test_clicking_a_dot_selects_its_training_point(iris_model, monkeypatch):
    pytest.importorskip("ipympl")
    ex = _explorer(iris_model, True, monkeypatch)
    assert ex.canvas is not None and ex.canvas in ex.scatter_box.children
    pos = int(np.argmax(np.abs(ex.last_estimates.numpy())))
    ex.last_figure.canvas.callbacks.process("motion_notify_event",
                                            _mouse(ex, "motion_notify_event", pos))
    assert f"#{int(ex.last_indices[pos])}:" in ex.hover_html.value
    ex.last_figure.canvas.callbacks.process("button_press_event",
                                            _mouse(ex, "button_press_event", pos))
    assert ex.selected == pos and ex.controls.point.value == pos
    assert f"training point #{int(ex.last_indices[pos])}" in ex.point_html.value
    ring = np.asarray(ex._artists["highlight"].get_offsets())
    np.testing.assert_allclose(ring, np.asarray(ex._artists["points"].get_offsets())[pos:pos + 1])


def test_static_mode_shows_an_image_and_selects_from_the_dropdown(iris_model, monkeypatch):
    ex = _explorer(iris_model, False, monkeypatch)
    assert ex.canvas is None and ex.scatter_out.outputs[0]["data"]["image/png"]
    ex.controls.point.value = 2
    assert ex.selected == 2 and "training point #" in ex.point_html.value


def test_lds_ground_truth_scatters_subsets_and_matches_the_library(iris_model, monkeypatch):
    ex = _explorer(iris_model, False, monkeypatch, gt_mode="lds", k=8)
    out = ex.outcome
    assert out.request.draws_units and len(out.indices) == 8
    t = ex.test_index
    X, y = iris_model.data.test
    res = iw.ground_truth.lds(iris_model, iris_model.train, (X[t:t + 1], y[t:t + 1]),
                              out.estimate.values[:1], n_subsets=8, mode="scratch",
                              store=None, config=iris_model.config.replace(loss=None,
                                                                           weight_decay=None))
    np.testing.assert_allclose(out.actual.numpy(), res.actual[0].numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out.estimated.numpy(), res.predicted[0].numpy(), rtol=1e-10)
    assert ex.last_stats["spearman"] == pytest.approx(float(res.per_test[0]), abs=1e-12)
    ax = ex.last_figure.axes[0]
    assert "removed points" in ax.get_xlabel() and "LDS" in ax.get_title()
    assert "Spearman (= LDS)" in ex.stats.value
    ex.controls.point.value = 3
    assert "subset 3" in ex.point_html.value and "removes" in ex.point_html.value
    assert "each dot is a random subset" in ex.extremes_html.value
    # another solver reuses the subsets' retrains
    before = ex.retrain_count
    ex.controls.solver.value = "identity"
    ex.compute(raise_errors=True)
    assert ex.retrain_count == before and ex.outcome.request.solver == "identity"


def test_export_writes_the_comparison_and_the_figure(iris_model, monkeypatch, tmp_path):
    import pandas as pd

    ex = _explorer(iris_model, False, monkeypatch)
    frame = ex.to_frame()
    assert list(frame.columns[:4]) == ["index", "label", "estimate", "actual"]
    np.testing.assert_array_equal(frame["index"], ex.last_indices.numpy())
    np.testing.assert_allclose(frame["estimate"], ex.last_estimates.numpy())
    names = iris_model.data.class_names
    assert frame["label"].tolist() == [names[int(iris_model.y_train[i])]
                                       for i in ex.last_indices]
    for key in ("solver", "damping", "curvature", "params", "ground_truth", "gt_steps"):
        assert frame[key].nunique() == 1, key
    paths = ex.export(tmp_path / "out")
    back = pd.read_csv(paths["csv"])
    np.testing.assert_allclose(back["actual"], ex.last_actual.numpy(), rtol=1e-12)
    assert back["solver"].iloc[0] == "exact" and back["test_index"].iloc[0] == ex.test_index
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp
    assert ex.export(tmp_path / "out") == paths  # same settings, same names


def test_history_overlays_an_earlier_run_on_the_same_axes(iris_model, monkeypatch):
    ex = _explorer(iris_model, False, monkeypatch)
    first = ex.outcome
    ex.controls.solver.value = "cg"
    ex.compute(raise_errors=True)
    assert ex.history[0] is ex.outcome and ex.history[1].request == first.request
    labels = [label for label, _ in ex.overlay_pick.options]
    assert any("exact" in lab for lab in labels[1:])
    ex.overlay(1)
    [grey] = ex._artists["overlay"]
    np.testing.assert_allclose(np.asarray(grey.get_offsets())[:, 0], first.estimated.numpy())
    legend = [t.get_text() for t in ex._artists["legend"].get_texts()]
    assert any("exact" in t for t in legend)
    ex.overlay(None)
    assert ex._artists["overlay"] == []


def test_an_iterative_solver_is_measured_against_the_exact_solve(iris_model, monkeypatch):
    ex = _explorer(iris_model, False, monkeypatch, solver="cg")
    vs = ex.outcome.vs_exact
    exact = ex.session.estimate(
        iw.widgets.session.Request(model=MODEL, test_index=ex.test_index, solver="exact"))
    cg = ex.outcome.estimate.values[0].double()
    ref = exact.values[0].double()
    assert vs["rel_error"] == pytest.approx(float((cg - ref).norm() / ref.norm()), rel=1e-9)
    assert vs["rel_error"] < 1e-3 and vs["pearson"] > 0.999
    assert "vs exact solve" in ex.stats.value
    ex.controls.solver.value = "exact"
    ex.compute(raise_errors=True)
    assert ex.outcome.vs_exact is None and "vs exact solve" not in ex.stats.value


def test_the_noise_floor_says_what_its_seeds_randomised(iris_model, monkeypatch):
    ex = _explorer(iris_model, False, monkeypatch)
    assert ex.outcome.noise_std is not None
    assert "initialisation" in ex.stats.value and "seeds;" in ex.stats.value


def test_the_explorer_uses_real_retraining_noise_never_a_perturbed_start(iris_model, monkeypatch):
    """Issue 19 (3): the band and 'within noise' use real retraining randomness (new
    initialisations), the same floor as the library's default; a perturbation-only floor exists
    only on request, labelled as such."""
    ex = _explorer(iris_model, False, monkeypatch)
    assert "noise-perturbation-only" not in ex.last_report.codes
    real = iw.retraining_noise(iris_model, iris_model.train, iris_model.data.test, n_seeds=3,
                               config=iris_model.config.replace(loss=None, weight_decay=None),
                               return_result=True)
    assert real.kind == "retraining"
    assert ex.outcome.noise_std == pytest.approx(float(real.std[ex.test_index]), rel=1e-9)
    X, y = iris_model.data.test
    nudged = iw.ground_truth.retraining_noise(
        iris_model, iris_model.train, (X[:3], y[:3]), n_seeds=2, mode="warm_start", store=None,
        config=iw.TrainConfig(optimizer="adam", lr=1e-3, steps=50), return_result=True)
    assert nudged.kind == "perturbation"
    assert "noise-perturbation-only" in [f.code for f in nudged.findings]


def test_interactive_is_a_constructor_argument_and_names_do_not_clash(iris_model):
    ex = iw.InfluenceExplorer({MODEL: iris_model}, model=MODEL, threaded=False, interactive=False)
    assert ex.canvas is None and not ex.interactive
    other = iw.wrap(torch.nn.Linear(4, 3).double(), iris_model.train, iris_model.data.test,
                    weight_decay=0.0, name=MODEL)
    with pytest.raises(ValueError, match="already has a model named"):
        iw.InfluenceExplorer({MODEL: iris_model}, model=other, threaded=False)


def test_the_overlay_stays_on_the_same_run_when_a_new_run_arrives(iris_model, monkeypatch):
    ex = _explorer(iris_model, False, monkeypatch)
    first = ex.outcome
    ex.controls.solver.value = "cg"
    ex.compute(raise_errors=True)
    ex.overlay(1)  # the exact run
    assert ex._overlay is first
    ex.controls.solver.value = "lissa"
    ex.compute(raise_errors=True)  # the history shifts by one
    assert ex._overlay is first and ex._artists["overlay"]
