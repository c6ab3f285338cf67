"""InfluenceExplorer without a browser: set controls, click, inspect what it shows."""

from __future__ import annotations

import html
import math
import warnings

import numpy as np
import pytest
import torch

import influence_widgets as iw
from influence_widgets.influence import SOLVERS
from influence_widgets.plots.scatter import HIGHLIGHT_GID, POINTS_GID

MODEL = "iris-test"
K = 12
STEPS = 150


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory):
    """A small float64 Iris MLP with weight decay, trained once for the module (private cache)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INFLUENCE_WIDGETS_CACHE", str(tmp_path_factory.mktemp("iw-module-cache")))
        data = iw.datasets.iris()
        spec = iw.models.mlp_spec(
            data.input_shape, data.n_classes, depth=1, width=5, activation="tanh"
        )
        config = iw.TrainConfig(
            optimizer="lbfgs",
            lr=1.0,
            steps=300,
            dtype="float64",
            weight_decay=0.005,
            device="cpu",
            grad_tol=1e-5,
        )
        return iw.train(spec, data.train, config, name=MODEL, data=data)


@pytest.fixture
def explorer(iris_model):
    ex = iw.InfluenceExplorer({MODEL: iris_model}, model=MODEL, threaded=False)
    assert ex.error is None, ex.error
    ex.controls.k.value = K
    ex.controls.gt_steps.value = STEPS
    return ex


def _click(ex) -> None:
    ex.controls.compute.click()
    assert ex.error is None, ex.error


def _points(fig):
    ax = fig.axes[0]
    [points] = [c for c in ax.collections if c.get_gid() == POINTS_GID]
    [ring] = [c for c in ax.collections if c.get_gid() == HIGHLIGHT_GID]
    return points, ring


def test_compute_shows_correlations_and_one_point_per_evaluated_index(explorer):
    _click(explorer)
    stats = explorer.last_stats
    n = len(explorer.last_indices)
    assert n == K and explorer.last_estimates.shape == explorer.last_actual.shape == (K,)
    noise = explorer.outcome.noise_std
    expected = iw.compare(
        explorer.last_estimates,
        explorer.last_actual,
        **({"noise": noise} if noise is not None else {}),
    )
    for key in ("pearson", "spearman"):
        assert math.isfinite(stats[key])
        assert stats[key] == pytest.approx(expected[key], abs=1e-12)
        assert stats[f"{key}_ci"] is not None
    assert "Spearman" in explorer.stats.value and "Pearson" in explorer.stats.value
    points, ring = _points(explorer.last_figure)
    offsets = np.asarray(points.get_offsets())
    assert offsets.shape == (n, 2)
    np.testing.assert_allclose(offsets[:, 0], explorer.last_estimates.numpy())
    np.testing.assert_allclose(offsets[:, 1], explorer.last_actual.numpy())
    assert len(ring.get_offsets()) == 0
    assert explorer.scatter_out.outputs[0]["data"]["image/png"]
    assert explorer.retrain_count == explorer.outcome.retrains >= K  # + control + noise seeds


def test_selecting_a_training_point_highlights_it(explorer):
    _click(explorer)
    pos = explorer.controls.point.options[3][1]
    explorer.controls.point.value = pos
    assert explorer.selected == pos
    points, ring = _points(explorer.last_figure)
    np.testing.assert_allclose(
        np.asarray(ring.get_offsets()), np.asarray(points.get_offsets())[pos : pos + 1]
    )
    assert f"training point #{int(explorer.last_indices[pos])}" in explorer.point_html.value


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_solver_settings_hidden_unless_used(explorer, solver):
    explorer.controls.solver.value = solver
    assert explorer.solver == solver
    for owner, widgets in explorer.controls.settings.widgets.items():
        for name, widget in widgets.items():
            assert (widget.layout.display != "none") == (owner == solver), (solver, owner, name)
    assert explorer.controls.settings.damping.layout.display != "none"  # every solver's
    # each control is a field of the solver's settings, with the field's help as its tooltip
    fields = {f.name: f for f in SOLVERS[solver].Settings.fields()}
    for name, widget in explorer.controls.settings.widgets[solver].items():
        assert widget.tooltip == fields[name].help and not fields[name].advanced
    assert type(explorer.request().settings) is SOLVERS[solver].Settings


def test_injected_failure_is_shown(explorer, monkeypatch):
    def boom(self, *args, **kwargs):
        raise RuntimeError("injected failure in scores")

    monkeypatch.setattr(iw.InfluenceEngine, "scores", boom)
    explorer.controls.compute.click()
    assert explorer.error == "RuntimeError: injected failure in scores"
    assert (
        "RuntimeError" in explorer.error_box.value
        and "injected failure" in explorer.error_box.value
    )
    assert explorer.traceback.layout.display != "none"
    assert "Traceback" in explorer.traceback_out.outputs[0]["text"]
    assert not explorer.busy and not explorer.controls.compute.disabled


def test_lissa_divergence_is_shown(explorer):
    explorer.controls.solver.value = "lissa"
    explorer.controls.settings.widgets["lissa"]["scale"].value = "0.001"
    explorer.controls.settings.widgets["lissa"]["steps"].value = 50
    explorer.controls.compute.click()
    assert explorer.error is not None and explorer.error.startswith("DivergenceError")
    assert "increase scale" in explorer.error_box.value
    assert "DivergenceError" in explorer.diag_html.value  # the diagnostics panel says so too


def test_new_solver_reuses_loo_results(explorer):
    _click(explorer)
    count, indices = explorer.retrain_count, explorer.last_indices.clone()
    explorer.controls.solver.value = "cg"
    _click(explorer)
    assert explorer.retrain_count == count
    assert torch.equal(explorer.last_indices, indices)
    assert explorer.outcome.retrains == 0
    assert explorer.outcome.estimate.solver == "cg"
    assert explorer.trace_out.outputs, "CG residual trace should be drawn"


def test_exact_damping_change_does_not_refit(explorer):
    _click(explorer)
    engine = explorer.session.engines[explorer.request().engine_key]
    fits, before = engine.fits, explorer.last_estimates.clone()
    explorer.controls.settings.damping.value = 0.5
    _click(explorer)
    assert engine.fits == fits
    assert not torch.allclose(explorer.last_estimates, before)


def test_reopening_serves_results_from_the_store(explorer, iris_model):
    _click(explorer)
    again = iw.InfluenceExplorer({MODEL: iris_model}, model=MODEL, threaded=False)
    again.controls.k.value = K
    again.controls.gt_steps.value = STEPS
    _click(again)
    assert again.retrain_count == 0
    assert torch.allclose(again.last_actual, explorer.last_actual)


def test_test_point_pick_and_index(explorer):
    losses = explorer.session.test_losses(MODEL)
    assert explorer.test_index == int(torch.argmax(losses))
    explorer.controls.test_pick.value = "median"
    median = iw.ground_truth.pick_test_points(losses, how="median")[0]
    assert explorer.test_index == median
    explorer.controls.test_index.value = 3
    assert explorer.test_pick == "index" and explorer.test_index == 3
    assert "test point #3" in explorer.test_html.value and "loss" in explorer.test_html.value


def test_cancel_stops_retraining_without_an_error(explorer, monkeypatch):
    from influence_widgets.widgets.session import ExplorerSession

    real = ExplorerSession.actual

    def cancel_then_retrain(self, *args, **kwargs):
        explorer.cancel()  # as if the Cancel button were pressed once retraining starts
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ExplorerSession, "actual", cancel_then_retrain)
    explorer.controls.compute.click()
    assert explorer.error is None and explorer.outcome is None
    assert "cancelled" in explorer.controls.status.value
    assert not explorer.busy


def test_worker_thread_mode(iris_model):
    ex = iw.InfluenceExplorer({MODEL: iris_model}, model=MODEL, threaded=True)
    ex.wait(60)
    assert ex.error is None, ex.error
    ex.controls.k.value = K
    ex.controls.gt_steps.value = STEPS
    ex.controls.compute.click()
    assert ex.controls.compute.disabled  # busy while the worker runs
    ex.wait(60)
    assert ex.error is None, ex.error
    assert not ex.busy and not ex.controls.compute.disabled
    assert math.isfinite(ex.last_stats["spearman"]) and ex.outcome.noise_std is not None


def test_plot_helpers_draw_and_return_their_artists():
    from matplotlib.figure import Figure

    from influence_widgets.plots.scatter import (
        X_LABEL,
        Y_LABEL,
        scatter_estimated_vs_actual,
        thumbnail,
        trace_plot,
    )

    ax = Figure().add_subplot()
    est, act = np.array([0.1, -0.2, 0.3]), np.array([0.12, -0.1, 0.25])
    art = scatter_estimated_vs_actual(
        est, act, ax=ax, noise=0.05, stats={"pearson": 0.9}, highlight=1
    )
    assert np.asarray(art["points"].get_offsets()).shape == (3, 2)
    np.testing.assert_allclose(np.asarray(art["highlight"].get_offsets()), [[-0.2, -0.1]])
    assert (
        art["band"] is not None and art["line"] is not None and "Pearson" in art["text"].get_text()
    )
    assert ax.get_xlabel() == X_LABEL and ax.get_ylabel() == Y_LABEL
    assert "image" in thumbnail(torch.arange(64.0), image_shape=(1, 8, 8))
    assert "bars" in thumbnail(torch.tensor([1.0, -2.0, 0.5]))
    line = trace_plot([1.0, 0.1, 0.01], label="CG relative residual")["line"]
    assert line.axes.get_yscale() == "log"
    with pytest.raises(ValueError, match="same training points"):
        scatter_estimated_vs_actual(est, act[:2])


# ----------------------------------------------------------------------------- trust report


@pytest.fixture(scope="module")
def indefinite_model(tmp_path_factory):
    """An Iris MLP stopped after 40 Adam steps: far from a minimum, its Hessian is indefinite."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INFLUENCE_WIDGETS_CACHE", str(tmp_path_factory.mktemp("iw-indef-cache")))
        data = iw.datasets.iris()
        spec = iw.models.mlp_spec(
            data.input_shape, data.n_classes, depth=1, width=5, activation="tanh"
        )
        config = iw.TrainConfig(
            optimizer="adam", lr=0.01, steps=40, dtype="float64", device="cpu"
        )
        tm = iw.train(spec, data.train, config, name="iris-indefinite", data=data)
    assert iw.hessian_spectrum(tm, tm.train)["bottom"] < -0.1
    return tm


def _indefinite_explorer(tm):
    ex = iw.InfluenceExplorer({tm.name: tm}, model=tm.name, threaded=False)
    assert ex.error is None, ex.error
    ex.controls.k.value = K
    ex.controls.gt_steps.value = STEPS
    return ex


def _buttons(ex, code):
    return [(action, b) for f, action, b in ex.action_buttons if f.code == code]


def _panel_html(ex) -> str:
    import ipywidgets

    return "".join(w.value for w in ex.report_box.children if isinstance(w, ipywidgets.HTML))


def test_indefinite_model_does_not_fail_on_the_first_click(indefinite_model, monkeypatch):
    from dataclasses import replace

    from influence_widgets.influence import NegativeCurvatureError
    from influence_widgets.widgets import explorer as explorer_module

    monkeypatch.setattr(explorer_module, "EXACT_DEFAULT_MAX_PARAMS", 10)  # CG by default
    ex = _indefinite_explorer(indefinite_model)
    assert ex.solver == "cg" and ex.controls.settings.damping.value == 0.0
    with pytest.raises(NegativeCurvatureError):  # what the first click met before
        ex.session.estimate(replace(ex.request(), damping=0.0))
    _click(ex)
    picked = ex.outcome.request.damping
    assert picked > 0 and ex.controls.settings.damping.value == picked and not ex.stale
    finding = ex.last_report.get("damping-picked")
    assert finding is not None and f"damping {picked:g} was picked" in finding.what
    assert "damping-picked" in _panel_html(ex) and "Lanczos" in _panel_html(ex)
    [(action, _)] = _buttons(ex, "damping-picked")
    assert action == {"curvature": "ggn"}


def test_report_action_sets_the_control_and_recomputes(indefinite_model):
    ex = _indefinite_explorer(indefinite_model)
    with pytest.warns(RuntimeWarning, match="indefinite"):
        _click(ex)
    assert "indefinite-hessian" in ex.last_report.codes
    html_ = _panel_html(ex)
    assert "Trust report" in html_ and "indefinite-hessian" in html_ and "why:" in html_
    [(action, button), (alternative, _)] = _buttons(ex, "indefinite-hessian")
    assert alternative == {"curvature": "ggn"}
    assert button.description == f"apply damping = {action['damping']:g}"
    button.click()
    assert ex.error is None, ex.error
    assert ex.controls.settings.damping.value == action["damping"]
    assert ex.outcome.request.damping == action["damping"] and not ex.stale
    assert "indefinite-hessian" not in ex.last_report.codes  # the fix worked
    assert ex.last_report.get("not-stationary") and not _buttons(ex, "not-stationary")
    ex.apply_action({"curvature": "ggn"})
    assert ex.curvature == "ggn" and ex.stale
    with pytest.raises(ValueError, match="not a control|neither a control"):
        ex.apply_action({"learning_rate": 1.0})


def test_results_turn_stale_when_a_control_changes(explorer):
    _click(explorer)
    assert not explorer.stale and explorer.stale_html.value == ""
    assert "Trust report" in _panel_html(explorer)
    explorer.controls.settings.damping.value = 0.5
    assert explorer.stale
    note = explorer.stale_html.value
    assert "stale" in note and "press Compute" in note and "damping 0 " in note
    assert "iw-stale" in explorer.scatter_box._dom_classes
    explorer.controls.settings.damping.value = 0.0  # back to what the results are for
    assert not explorer.stale and "iw-stale" not in explorer.scatter_box._dom_classes
    explorer.controls.k.value = K + 1
    assert explorer.stale
    _click(explorer)
    assert not explorer.stale and explorer.state["stale"] is False


def test_results_turn_stale_after_an_error_or_a_cancel(explorer, monkeypatch):
    from influence_widgets.widgets.session import ExplorerSession

    _click(explorer)
    shown = explorer.outcome
    explorer.controls.solver.value = "lissa"
    explorer.controls.settings.widgets["lissa"]["scale"].value = "0.001"
    explorer.controls.settings.widgets["lissa"]["steps"].value = 50
    explorer.controls.compute.click()
    assert explorer.error is not None and explorer.outcome is shown
    assert explorer.stale and "the last compute failed" in explorer.stale_html.value
    # a cancelled compute leaves the results stale too
    explorer.controls.solver.value = "exact"
    real = ExplorerSession.actual

    def cancel_then_retrain(self, *args, **kwargs):
        explorer.cancel()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ExplorerSession, "actual", cancel_then_retrain)
    explorer.controls.k.value = K + 2  # new points to retrain: the cancel is seen
    explorer.controls.compute.click()
    assert explorer.error is None and "cancelled" in explorer.controls.status.value
    assert explorer.stale and "cancelled" in explorer.stale_html.value


# ----------------------------------------------------------------------------- time, before it is spent


def _confirm_html(ex) -> str:
    import ipywidgets

    return "".join(w.value for w in ex.confirm_box.children if isinstance(w, ipywidgets.HTML))


def test_a_long_compute_asks_first_and_starts_only_after_run_anyway(explorer, monkeypatch):
    monkeypatch.setattr(iw.InfluenceExplorer, "CONFIRM_SECONDS", 0.01)
    explorer.controls.compute.click()
    assert explorer.error is None, explorer.error
    assert explorer.outcome is None and explorer.retrain_count == 0  # nothing started
    assert explorer.confirm_box.layout.display != "none"
    eta = explorer.eta
    assert eta is not None and eta.seconds > 0.01 and set(eta.parts) == {
        "estimate", "retraining", "noise"}
    # "expected ~1.2 s" or, on a fast machine, "expected 0.4 s": the wording, not the time
    assert eta.describe() in html.unescape(_confirm_html(explorer))
    assert "retraining" in _confirm_html(explorer)
    assert "waits for you" in explorer.controls.status.value
    label, action, run = explorer.confirm_buttons[0]
    assert label == "run anyway" and action == {} and run.description.startswith("Run anyway")
    run.click()
    assert explorer.error is None, explorer.error
    assert explorer.outcome is not None and explorer.retrain_count >= K
    assert explorer.confirm_box.layout.display == "none"
    status = explorer.controls.status.value
    assert "done in" in status and "expected" in status
    assert explorer.state["eta"] == eta.parts or explorer.eta is not eta


def test_a_cheaper_setting_is_one_click_and_asks_again_if_still_long(explorer, monkeypatch):
    from influence_widgets.widgets.session import ExplorerSession

    monkeypatch.setattr(iw.InfluenceExplorer, "CONFIRM_SECONDS", 0.01)
    monkeypatch.setattr(
        ExplorerSession, "alternatives", lambda self, eta, limit: [("k = 5 points", {"k": 5}, 0.0)]
    )
    explorer.controls.compute.click()
    [(_, _, run), (label, action, cheaper)] = explorer.confirm_buttons
    assert label == "k = 5 points" and "(~0 s)" in cheaper.description
    cheaper.click()
    assert explorer.k == 5 and explorer.outcome is None  # set, and asked again (still > 0.01 s)
    assert explorer.eta.request.k == 5 and explorer.confirm_box.layout.display != "none"
    explorer.controls.k.value = K  # a control changes: the question is gone
    assert explorer.confirm_box.layout.display == "none"
    monkeypatch.setattr(iw.InfluenceExplorer, "CONFIRM_SECONDS", 1e9)
    _click(explorer)  # short enough: starts at once
    assert explorer.outcome is not None and len(explorer.last_indices) == K


def test_progress_counts_elapsed_and_remaining_time(explorer):
    statuses = []
    real = explorer._progress

    def spy(stage):
        report = real(stage)

        def wrapped(step, total, info):
            report(step, total, info)
            statuses.append(explorer.controls.status.value)

        return wrapped

    explorer._progress = spy
    _click(explorer)
    retraining = [s for s in statuses if s.startswith("retraining")]
    assert retraining and all("elapsed" in s and "left" in s for s in retraining)
    assert any("(step " in s for s in retraining)  # steps within a chunk, not just chunks


@pytest.fixture(scope="module")
def tiny_cnn(tmp_path_factory):
    """A 2-channel CNN on 150 digits images: a conv net, so heavy-model defaults apply."""
    from dataclasses import replace

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INFLUENCE_WIDGETS_CACHE", str(tmp_path_factory.mktemp("iw-cnn-cache")))
        data = iw.datasets.digits(flat=False)
        data = replace(data, X_train=data.X_train[:150], y_train=data.y_train[:150],
                       X_test=data.X_test[:40], y_test=data.y_test[:40])
        spec = iw.ModelSpec("small_cnn", data.input_shape, data.n_classes, {"channels": 2})
        config = iw.TrainConfig(optimizer="adam", lr=0.01, steps=150, weight_decay=1e-3,
                                device="cpu")
        return iw.train(spec, data.train, config, name="tiny-cnn", data=data)


def test_conv_net_defaults_are_named_in_the_results(tiny_cnn):
    from influence_widgets.widgets.session import HEAVY_DEFAULTS, retrain_options

    ex = iw.InfluenceExplorer({"tiny-cnn": tiny_cnn}, model="tiny-cnn", threaded=False)
    assert ex.error is None, ex.error
    assert (ex.k, ex.gt_steps) == (HEAVY_DEFAULTS["k"], HEAVY_DEFAULTS["gt_steps"])
    assert ex.solver == "cg" and "defaults for this model" in ex.controls.status.value
    assert retrain_options(tiny_cnn, ex.request()) == {"dtype": "float32", "batch_width": 4}
    with warnings.catch_warnings():  # what the trust report finds in this tiny model
        warnings.simplefilter("ignore")
        _click(ex)
    steps, k = HEAVY_DEFAULTS["gt_steps"], HEAVY_DEFAULTS["k"]
    assert ex.outcome.loo.dtype == "float32" and ex.outcome.loo.steps == steps
    title = ex.last_figure.axes[0].get_title()
    assert f"{steps} steps" in title and "float32" in title and f"k = {k}" in title
    assert f"{steps} steps, float32" in ex.stats.value


def test_model_defaults_follow_the_model_unless_chosen(explorer):
    explorer.controls.k.value = 40  # the last model's default: follows the next model's
    note = explorer._apply_defaults({"k": 20, "gt_steps": 100})
    assert explorer.k == 20 and "k 20" in note
    assert explorer.gt_steps == STEPS  # chosen by the user (the fixture): stays


def test_eta_counts_stored_retrains_once_the_points_are_chosen(explorer, iris_model):
    _click(explorer)  # its retrains are now in the store
    again = iw.InfluenceExplorer({MODEL: iris_model}, model=MODEL, threaded=False)
    again.controls.k.value = K
    again.controls.gt_steps.value = STEPS
    eta = again.session.eta(again.request())
    assert not eta.indices_known and eta.retrain.n_computed == K  # the control is known stored
    again.session.choose_points(again.request())  # what a long compute does before asking
    eta = again.session.eta(again.request())
    assert eta.indices_known and eta.estimate is None and eta.seconds == 0.0
    assert eta.retrain.n_loaded == K + 1 and "all in the store" in eta.details()[1]


def test_an_unknown_solver_on_the_trait_is_a_clear_error(explorer):
    from traitlets import TraitError

    with pytest.raises(TraitError, match=r"solver = 'newton' is not one of its choices: 'exact', 'cg'"):
        explorer.solver = "newton"
    assert explorer.solver != "newton"
