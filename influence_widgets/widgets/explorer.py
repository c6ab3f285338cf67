"""``iw.InfluenceExplorer``: pick a model, a test point and a solver; see estimates against LOO."""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as W
import numpy as np
import torch
from matplotlib.figure import Figure
from traitlets import Bool, Int, TraitError, Unicode, link, observe, validate

from .._findings import TrustReport
from ..ground_truth.truths import truth_class
from ..influence.solvers import HessianTooLargeError, SolverError
from ..models.training import TrainedModel
from . import panels
from .controls import Controls
from .export_panel import ExportPanel
from .scatter_view import ScatterView
from .session import (
    DEFAULT_GT_STEPS,
    DEFAULT_K,
    DEFAULT_MODEL,
    ComputeETA,
    ExplorerSession,
    Outcome,
    Request,
    describe_gt,
    expected_text,
    is_heavy,
    model_defaults,
)

INTRO = panels.intro_html()
AGREEMENT_PROMPT = (
    "<i>After a compute: does the agreement hold on other test points? This compares the "
    "current solver with the current ground truth on every test point, reusing the retrains "
    "(press the button).</i>")
VIEWS = ("full", "participant")
EXACT_DEFAULT_MAX_PARAMS = 2000  # larger models (and conv nets) start with CG, not exact
STAGE_PARTS = {"estimating": "estimate", "retraining": "retraining", "noise floor": "noise"}
LINKED = (
    "model_name",
    "test_pick",
    "test_index",
    "solver",
    "curvature",
    "params",
    "gt_mode",
    "gt_steps",
    "selection",
    "k",
    "device",
)


# the restricted settings, each with the control that lists its choices
CHOICES = {
    "model_name": "model",
    "test_pick": "test_pick",
    "solver": "solver",
    "curvature": "curvature",
    "params": "params",
    "gt_mode": "gt_mode",
    "selection": "selection",
    "device": "device",
}
CHOICE_HINTS = {
    "model_name": " (another model is added with models={name: TrainedModel} or iw.zoo.register)",
    "solver": " (a new one is added with influence_widgets.influence.register_solver)",
    "gt_mode": " (a new one is added with iw.ground_truth.register_truth)",
    "device": " (cuda is listed only where torch sees a CUDA GPU)",
}


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipywidgets
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def _interactive_canvas() -> bool:
    """Whether ipympl (matplotlib's widget canvas) is installed: the scatter is then a live
    canvas whose dots can be clicked and hovered; otherwise a static image."""
    try:
        import ipympl.backend_nbagg  # noqa: F401
    except ImportError:
        return False
    return True


def _model_names(models: dict[str, TrainedModel], available_only: bool = False
                 ) -> tuple[list[str], list[str]]:
    """The models to list (given ones first, then the zoo's) and the zoo models left out
    because their data are not on this machine (only with ``available_only``)."""
    from ..models import zoo

    names = list(models)
    zoo_names = [n for n in zoo.names() if n not in models]
    if not available_only:
        return names + zoo_names, []
    here = set(zoo.available_names())
    return names + [n for n in zoo_names if n in here], [n for n in zoo_names if n not in here]


class InfluenceExplorer(W.VBox):
    """Influence estimates against leave-one-out retraining, for one test point at a time.

    Args:
        models: extra trained models by name (shown before the zoo presets); each needs ``.data``.
        model: the model selected first: a name, a ``TrainedModel`` (added to the list), or
            your own trained ``nn.Module`` together with ``train`` and ``test`` (its weights are
            used as they are, not retrained; see :func:`influence_widgets.wrap`).
        train, test: with a plain ``nn.Module`` as ``model``: ``(X, y)`` pairs (tensors or
            arrays) of the points it was trained on and of the points to explain; or ``data``,
            an ``iw.datasets.Data``, instead of both.
        feature_names, class_names: with a plain ``nn.Module``: one name per input column and
            one per output (class k is output k), shown beside each point.
        weight_decay: with a plain ``nn.Module``: the L2 coefficient it was trained with (the
            optimiser's ``weight_decay``; ``None``: 0 is assumed, with a warning). Other
            keywords of :func:`~influence_widgets.wrap` (``loss``, ``name``, ``config``) pass
            through.
        device: "cpu" (default) or "cuda".
        threaded: run the Compute button (and model loading) in a worker thread so that Cancel and
            the progress bar respond; the default is on inside a Jupyter kernel, off elsewhere.
        interactive: the scatter as a live canvas whose dots are clicked and hovered (needs
            ``ipympl``), or a static image with a dropdown to pick points (False); the default
            (None, or the class's ``INTERACTIVE``) is live inside a Jupyter kernel.

    Clicking **Compute** (or calling :meth:`compute`) estimates, picks the evaluated training
    points, retrains only what is not cached and compares. The evaluated set is chosen once per
    (model, test point, k, selection) — top-k by |estimate| of the solver in use at that first
    compute — and kept while solver, damping, curvature or parameters change, so a new solver
    costs no retraining; see :mod:`influence_widgets.widgets.session` for everything that is
    reused. Results: ``last_stats``, ``last_estimates``, ``last_actual``, ``last_indices``,
    ``last_figure``, ``last_report`` (the :class:`~influence_widgets.evaluate.TrustReport`: every
    finding of training, the estimate, the retrains, the noise floor and the comparison, shown
    beside the scatter with a button per one-click fix), ``error``, ``retrain_count`` (retrains
    computed, LOO and noise floor). ``stale`` is True while the results shown no longer match
    the controls (a control changed, or the last compute failed or was cancelled).

    Before computing, the time it will take is estimated from a short probe (``eta``, a
    :class:`~influence_widgets.widgets.session.ComputeETA`, typically well under a second) and
    shown; when it exceeds ``CONFIRM_SECONDS`` the Compute button does not start but asks, in a
    panel above the scatter (``confirm_box``): run anyway, or one of the cheaper settings that
    fit (last-layer retraining, fewer points, fewer steps), each with its own expected time.
    While computing, the status line counts the elapsed and remaining time. Heavy models (conv
    nets) start with fewer evaluated points and warm-start steps
    (:func:`~influence_widgets.widgets.session.model_defaults`), named in the title.
    """

    CONFIRM_SECONDS = 60.0  # a compute expected to take longer asks first
    FORECAST_SECONDS = 5.0  # the trust forecast is shown before the run when its estimate is cheaper
    #: The scatter as a live ipympl canvas (click or hover a dot to select it: True) or a static
    #: image with the dropdown below it (False); None: live inside a Jupyter kernel when ipympl
    #: is installed.
    INTERACTIVE: bool | None = None
    HISTORY = 6  # runs kept to overlay and compare (the newest first)

    model_name = Unicode(None, allow_none=True)
    test_pick = Unicode("highest")
    test_index = Int(0)
    solver = Unicode("exact")
    curvature = Unicode("hessian")
    params = Unicode("all")
    gt_mode = Unicode("warm_start")
    gt_steps = Int(DEFAULT_GT_STEPS)
    selection = Unicode("top")
    k = Int(DEFAULT_K)
    device = Unicode("cpu")
    selected = Int(None, allow_none=True)
    error = Unicode(None, allow_none=True)
    busy = Bool(False)
    retrain_count = Int(0)
    threaded = Bool(False)
    stale = Bool(False)

    def __init__(
        self,
        models: dict[str, TrainedModel] | None = None,
        *,
        model: str | TrainedModel | torch.nn.Module | None = None,
        device: str | None = None,
        threaded: bool | None = None,
        interactive: bool | None = None,
        train: Any = None,
        test: Any = None,
        data: Any = None,
        feature_names: Any = None,
        class_names: Any = None,
        weight_decay: float | None = None,
        view: str = "full",
        **wrap_options: Any,
    ) -> None:
        """The explorer, on the zoo's models (no arguments), on ``models`` / ``model`` (a name
        or a ``TrainedModel``), or on your own trained ``nn.Module``:
        ``InfluenceExplorer(model=net, train=(X, y), test=(X, y), weight_decay=...,
        feature_names=[...], class_names=[...])`` (see :func:`influence_widgets.wrap`; its
        weights are used as they are, not retrained). Every argument is described in
        ``help(InfluenceExplorer)``, above."""
        from ..models.wrap import explorer_model

        if view not in VIEWS:
            raise ValueError(f"view={view!r} is not one of: {', '.join(map(repr, VIEWS))} "
                             "(participant: the workshop app's simpler view)")
        model = explorer_model(model, train=train, test=test, data=data,
                               feature_names=feature_names, class_names=class_names,
                               weight_decay=weight_decay, **wrap_options)
        super().__init__()
        models = dict(models or {})
        if isinstance(model, TrainedModel):
            name = model.name or "my model"
            if models.get(name, model) is not model:
                raise ValueError(
                    f"models already has a model named {name!r}, and model= is another one: "
                    "give it another name (iw.wrap(..., name=...), or TrainedModel.name)")
            models[name] = model
            model = name
        self._interactive = interactive
        self.view = view
        self.session = ExplorerSession(models)
        self.threaded = _in_kernel() if threaded is None else threaded
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._picking = False
        self._random_draws = 0
        self._last_report = 0.0
        self.outcome: Outcome | None = None
        self.timings: dict[str, float] = {}
        self.eta: ComputeETA | None = None  # the last compute's expected time
        self._plan: tuple[ComputeETA, float] | None = None  # (eta, start) while computing
        self._defaults = {"k": DEFAULT_K, "gt_steps": DEFAULT_GT_STEPS}
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        names, self.missing_models = _model_names(models, available_only=view == "participant")
        initial = model or (
            DEFAULT_MODEL if DEFAULT_MODEL in names else (names[0] if names else None)
        )
        if initial is None:
            raise ValueError(
                "no models to explore: pass models={name: TrainedModel} or register "
                "one with iw.zoo.register"
            )
        if initial not in names:
            raise ValueError(
                f"model={initial!r} is not a model of this explorer; its models are: "
                f"{', '.join(names)} (pass your own with models={{name: TrainedModel}} or "
                "model=TrainedModel)")
        if device is not None and device not in devices:
            raise ValueError(
                f"device={device!r} is not available here; choose one of: {', '.join(devices)}"
                + ("" if "cuda" in devices else " (torch sees no CUDA GPU on this machine)"))
        self.controls = Controls(names, devices, DEFAULT_GT_STEPS)
        if view == "participant":  # models named in words
            from .workshop import model_words

            self.controls.model.options = [(model_words(n), n) for n in names]
        self.controls.model.value = initial
        if device is not None:
            self.controls.device.value = device
        self._build_outputs()
        self.children = self._layout()
        self.add_class("iw-explorer")
        for name in LINKED[1:]:  # linking copies each control's value into the trait
            link((getattr(self.controls, name), "value"), (self, name))
        link((self.controls.model, "value"), (self, "model_name"))  # last: loads the model
        self.controls.compute.on_click(lambda _b: self._start(self._asking_job, "computing"))
        self.controls.cancel.on_click(lambda _b: self.cancel())
        self.controls.reset.on_click(lambda _b: self._guard(self.reset_settings, "resetting"))
        self.controls.point.observe(self._on_point_choice, names="value")
        # any setting that the results depend on: they turn stale when it no longer matches
        self.observe(self._on_setting, names=[n for n in LINKED if n != "model_name"])
        self.controls.settings.damping.observe(self._on_setting, names="value")
        for widgets in self.controls.settings.widgets.values():
            for w in widgets.values():
                w.observe(self._on_setting, names="value")

    # ------------------------------------------------------------------ layout
    def _build_outputs(self) -> None:
        live = self.INTERACTIVE if self._interactive is None else self._interactive
        self.interactive = (_in_kernel() and _interactive_canvas()) if live is None else live
        self.scatter = ScatterView(self.interactive, self._on_pick, self._on_hover)
        self.history: list[Outcome] = []  # the last HISTORY runs, the newest first
        self.overlay_pick = W.Dropdown(
            options=[("(none)", -1)], value=-1, description="overlay",
            tooltip="draw an earlier run on the same axes (grey crosses) to compare with",
            style={"description_width": "56px"}, layout=W.Layout(width="350px"))
        self.overlay_pick.observe(self._on_overlay, names="value")
        self.exporter = ExportPanel(lambda: self.outcome, self.to_frame, self.scatter.png)
        self.exporter.button.on_click(lambda _b: self._guard(self._download_click, "exporting"))
        self.history_box = W.VBox([W.HBox([self.overlay_pick, self.exporter.button]),
                                   self.exporter.links], layout=W.Layout(width="520px"))
        self.intro = W.HTML(INTRO)
        self.model_line = W.HTML(layout=W.Layout(width="300px"))
        self.stats = W.HTML("<i>Press Compute.</i>", layout=W.Layout(width="520px"))
        self.test_html = W.HTML()
        self.test_out = W.Output()
        self.point_html = W.HTML()
        self.point_out = W.Output()
        self.extremes_out = W.Output()
        self.extremes_html = W.HTML()
        self.diag_html = W.HTML("<i>Diagnostics appear after a compute.</i>")
        self.agreement_button = W.Button(
            description="Agreement per test point", icon="bar-chart",
            layout=W.Layout(width="230px"),
            tooltip="Spearman of this solver against this ground truth on every test point, over "
            "the training points evaluated now (nothing is retrained)")
        self.agreement_button.add_class("iw-agreement-button")
        self.agreement_button.on_click(
            lambda _b: self._start(self._agreement_job, "computing the agreement per test point"))
        self.agreement_html = W.HTML(AGREEMENT_PROMPT)
        self.agreement_out = W.Output()
        self.last_agreement = None  # the last agreement per test point (a DataFrame)
        self.trace_out = W.Output()
        self.error_box = W.HTML()
        self.traceback_out = W.Output()
        self.traceback = W.Accordion(
            children=[self.traceback_out], selected_index=None, layout=W.Layout(display="none")
        )
        self.traceback.set_title(0, "traceback")
        self.stale_html = W.HTML(layout=W.Layout(width="520px"))
        self.report_box = W.VBox(
            [W.HTML("<i>The trust report appears after a compute.</i>")],
            layout=W.Layout(width="520px"),
        )
        self.report_box.add_class("iw-report-panel")
        self.action_buttons: list[tuple[Any, dict, W.Button]] = []
        self.confirm_box = W.VBox(layout=W.Layout(width="520px", display="none"))
        self.confirm_box.add_class("iw-confirm")
        self.confirm_buttons: list[tuple[str, dict, W.Button]] = []

    def _layout(self) -> list[W.Widget]:
        if self.view == "participant":
            return self._participant_layout()
        c = self.controls
        side = W.VBox(
            [
                W.HTML("<b>Test point</b>"),
                self.test_html,
                self.test_out,
                W.HTML("<b>Selected training point</b>"),
                self.point_html,
                self.point_out,
            ],
            # grows into the room the row leaves (long feature names wrap, never cut off)
            layout=W.Layout(flex="1 1 200px", min_width="200px", max_width="340px",
                            padding="0 0 0 10px"),
        )
        center = W.VBox(
            [self.confirm_box, self.stale_html, self.scatter_box, self.hover_html, self.stats,
             self.history_box, self.report_box, c.point],
            layout=W.Layout(flex="0 0 525px"),
        )
        tabs = W.Tab(
            children=[
                W.VBox([self.extremes_html, self.extremes_out]),
                W.VBox([self.diag_html, self.trace_out]),
                W.VBox([self.agreement_button, self.agreement_html, self.agreement_out]),
            ]
        )
        tabs.set_title(0, "helpful / harmful")
        tabs.set_title(1, "diagnostics")
        tabs.set_title(2, "across test points")
        row = W.HBox([c.box(), center, side], layout=W.Layout(flex_flow="row wrap"))
        return [self.intro, row, tabs, self.error_box, self.traceback]

    def _participant_layout(self) -> list[W.Widget]:
        """The workshop app: errors first, the explorer at once (no long header), the basic
        controls, every other setting folded under "Advanced settings"."""
        from .workshop import missing_note

        c = self.controls
        advanced = W.VBox([c.settings.box, c.curvature, c.params, c.gt_mode, c.gt_steps,
                           c.truth_settings.box, c.selection, c.k, c.device])
        fold = W.Accordion(children=[advanced], selected_index=None)
        fold.set_title(0, "Advanced settings")
        fold.add_class("iw-advanced")
        column = W.VBox([W.HTML("<b>Model</b>"), c.model, self.model_line, c.test_pick,
                         c.test_index, c.solver, W.HBox([c.compute, c.cancel, c.reset]),
                         c.progress, c.status, fold,
                         W.HTML(missing_note(self.missing_models))],
                        layout=W.Layout(flex="0 0 315px"))
        side = W.VBox([W.HTML("<b>Test point</b>"), self.test_html, self.test_out,
                       W.HTML("<b>Selected training point</b>"), self.point_html,
                       self.point_out],
                      layout=W.Layout(flex="1 1 200px", min_width="200px", max_width="340px",
                                      padding="0 0 0 10px"))
        center = W.VBox([self.confirm_box, self.stale_html, self.scatter_box, self.hover_html,
                         self.stats, self.history_box, self.report_box, c.point],
                        layout=W.Layout(flex="0 0 525px"))
        tabs = W.Tab(children=[W.VBox([self.extremes_html, self.extremes_out]),
                               W.VBox([self.agreement_button, self.agreement_html,
                                       self.agreement_out])])
        tabs.set_title(0, "helpful / harmful")
        tabs.set_title(1, "across test points")
        self.add_class("iw-participant")
        row = W.HBox([column, center, side], layout=W.Layout(flex_flow="row wrap"))
        return [self.intro, self.error_box, row, tabs]

    # ------------------------------------------------------------------ jobs, errors, progress
    def _start(self, job: Callable[[], Any], context: str) -> None:
        """Run ``job`` now, or in a worker thread when ``threaded``; errors go to the widget."""
        if self.busy:
            self.controls.status.value = "busy: wait for the running job or press Cancel"
            return
        self._cancel.clear()
        self.busy = True
        if not self.threaded:
            try:
                self._guard(job, context)
            finally:
                self.busy = False
            return

        def run() -> None:
            try:
                self._guard(job, context)
            finally:
                self.busy = False

        self._thread = threading.Thread(target=run, name="influence-explorer", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a job started in the worker thread (no-op when none runs)."""
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    def cancel(self) -> None:
        """Ask the running job to stop (polled by retraining and solvers via ``should_stop``)."""
        self._cancel.set()
        self.controls.status.value = "cancelling…"

    def _guard(self, job: Callable[[], Any], context: str, raise_errors: bool = False) -> Any:
        self._show_error(None)
        try:
            return job()
        except InterruptedError as e:
            self.controls.status.value = f"cancelled: {html.escape(str(e))}"
        except Exception as e:
            self._show_error(e, context)
            self.controls.status.value = (
                "<span style='color:#c33'>failed (see the message below)</span>"
            )
            if raise_errors:
                raise
        return None

    def _show_error(self, exc: BaseException | None, context: str = "") -> None:
        if exc is None:
            self.error = None
            self.error_box.value = ""
            self.traceback.layout.display = "none"
            self.traceback_out.outputs = ()
            return
        self.error = f"{type(exc).__name__}: {exc}"
        if self.view == "participant":  # plain words at the top, no traceback
            self.error_box.value = panels.plain_error_html(exc, context)
            return
        self.error_box.value = panels.error_html(exc, context)
        if isinstance(exc, SolverError | HessianTooLargeError):  # where solvers are judged:
            self.diag_html.value = panels.note_html(  # a pointer, not the message a second time
                f"{self.solver} failed ({type(exc).__name__}): the message and what to do are "
                "shown below the explorer")
            self.trace_out.outputs = ()
        panels.show_text(self.traceback_out, panels.format_traceback(exc))
        self.traceback.selected_index = None
        self.traceback.layout.display = None

    def _should_stop(self) -> bool:
        return self._cancel.is_set()

    def _progress(self, stage: str) -> Callable[[int, int, dict[str, Any]], None]:
        """A progress callback for ``stage``: moves the bar, shows the step within a chunk and
        the elapsed and remaining time (while a compute runs), raises when Cancel was pressed."""
        began = time.monotonic()

        def report(step: int, total: int, info: dict[str, Any]) -> None:
            if self._cancel.is_set():
                raise InterruptedError(f"cancelled while {stage}")
            if "note" in info:  # e.g. waiting for the same job started elsewhere
                self.controls.status.value = f"{html.escape(stage)}: {html.escape(info['note'])}"
                return
            now = time.monotonic()
            if step < total and now - self._last_report < 0.1:
                return
            self._last_report = now
            fraction = min(1.0, max(0.0, float(info.get("fraction", step / total if total else 0.0))))
            overall, timing = self._timing(STAGE_PARTS.get(stage), fraction, now - began, now)
            self.controls.progress.value = overall
            detail = f" (step {info['step']}/{info['steps']})" if "steps" in info else ""
            self.controls.status.value = f"{html.escape(stage)}: {step}/{total}{detail}{timing}"

        return report

    def _timing(self, part: str | None, fraction: float, in_stage: float,
                now: float) -> tuple[float, str]:
        """The bar's value and " · 12 s elapsed, ~30 s left" while a compute runs: the rest of
        this part from its rate so far (from its expected time at first, and for the estimate,
        whose solvers may stop early), then the parts after it as expected."""
        if self._plan is None or part is None:
            return fraction, ""
        eta, start = self._plan
        parts = eta.parts
        order = list(parts)
        expected = parts[part]
        if part != "estimate" and fraction >= 0.05 and in_stage > 0.5:
            left = in_stage * (1.0 - fraction) / fraction
        else:
            left = max(0.0, expected - in_stage)
        left += sum(parts[p] for p in order[order.index(part) + 1 :])
        before = sum(parts[p] for p in order[: order.index(part)])
        total = eta.seconds
        overall = (before + fraction * expected) / total if total > 0 else fraction
        return min(1.0, overall), (
            f" · {now - start:.0f} s elapsed, ~{left:.0f} s left ({expected_text(total)})"
        )

    # ------------------------------------------------------------------ observers
    @observe("model_name")
    def _on_model(self, change: dict[str, Any]) -> None:
        if self.busy:  # results for the old model are no longer wanted
            self.cancel()
            self.wait(30)
        self._clear_results()
        self._start(self._load_model, f"loading model {change['new']!r}")

    def _load_model(self) -> None:
        name = self.model_name
        self.controls.status.value = f"loading {html.escape(name)}…"
        tm = self.session.model(name, progress=self._progress(f"training {name}"))
        self.controls.test_index.max = tm.data.X_test.shape[0] - 1
        self.controls.progress.value = 1.0
        if self.view == "participant":
            from .workshop import model_line

            self.model_line.value = model_line(tm)
        n_params = sum(p.numel() for p in tm.model.parameters())
        note = ""
        if (n_params > EXACT_DEFAULT_MAX_PARAMS or is_heavy(tm)) and self.solver == "exact":
            self.solver = "cg"
            note = " · solver set to CG (an exact Hessian of this model is slow)"
        note += self._apply_defaults(model_defaults(tm))
        self.controls.status.value = (
            f"{html.escape(name)} ready: {tm.data.X_train.shape[0]} "
            f"training points, {n_params} parameters{note}"
        )
        self._pick_test_point()
        self._show_test_point()

    def _apply_defaults(self, defaults: dict[str, int]) -> str:
        """Set k and the warm-start steps to the model's defaults where they still hold the
        last model's (a value the user chose stays); says what changed."""
        changed = []
        for name, value in defaults.items():
            if getattr(self, name) == self._defaults.get(name) and getattr(self, name) != value:
                getattr(self.controls, name).value = value
                changed.append(f"{'k' if name == 'k' else 'LOO steps'} {value}")
        self._defaults = dict(defaults)
        return f" · {', '.join(changed)} (defaults for this model's size)" if changed else ""

    @observe("test_pick")
    def _on_test_pick(self, change: dict[str, Any]) -> None:
        if self.model_name in self.session.models:
            self._guard(self._pick_test_point, "picking a test point")

    def _pick_test_point(self) -> None:
        if self.test_pick == "index":
            return
        from ..ground_truth import pick_test_points

        losses = self.session.test_losses(self.model_name)
        seed = 0
        if self.test_pick == "random":  # a new random point each time "random" is chosen
            self._random_draws += 1
            seed = self._random_draws
        picked = pick_test_points(losses, how=self.test_pick, seed=seed)
        self._picking = True
        try:
            self.test_index = int(torch.as_tensor(picked).reshape(-1)[0])
        finally:
            self._picking = False
        self._show_test_point()

    @observe("test_index")
    def _on_test_index(self, change: dict[str, Any]) -> None:
        if not self._picking and self.test_pick != "index":
            self.test_pick = "index"
        if self.model_name in self.session.models:
            self._guard(self._show_test_point, "showing the test point")

    @validate(*CHOICES)
    def _valid_choice(self, proposal: dict[str, Any]) -> str:
        """A restricted setting takes one of its control's choices; anything else is refused
        (the value is not kept) with the valid ones named."""
        name, value = proposal["trait"].name, proposal["value"]
        control = getattr(self.controls, CHOICES[name])
        valid = [o[1] if isinstance(o, tuple) else o for o in control.options]
        if value not in valid:
            raise TraitError(
                f"{name} = {value!r} is not one of its choices: "
                f"{', '.join(repr(v) for v in valid)}{CHOICE_HINTS.get(name, '')}")
        return value

    @validate("test_index")
    def _valid_test_index(self, proposal: dict[str, Any]) -> int:
        value, top = int(proposal["value"]), self.controls.test_index.max
        if not 0 <= value <= top:
            raise TraitError(f"test_index = {value} is out of range: {self.model_name!r} has "
                             f"{top + 1} test points, 0 to {top}")
        return value

    @validate("selected")
    def _valid_selected(self, proposal: dict[str, Any]) -> int | None:
        value = proposal["value"]
        if value is None:
            return None
        n = 0 if self.outcome is None else len(self.outcome.estimated)
        if not 0 <= value < n:
            what = ("nothing is computed yet: press Compute first" if self.outcome is None
                    else f"the scatter has {n} dots: 0 to {n - 1} (None: no selection)")
            raise TraitError(f"selected = {value} is out of range: {what}")
        return int(value)

    @validate("k", "gt_steps")
    def _valid_count(self, proposal: dict[str, Any]) -> int:
        name, value = proposal["trait"].name, int(proposal["value"])
        low = 3 if name == "k" else 1
        if value < low:
            what = "points to compare" if name == "k" else "retraining steps"
            raise TraitError(f"{name} = {value} is too small: at least {low} {what}")
        return value

    @observe("solver")
    def _on_solver(self, change: dict[str, Any]) -> None:
        self.controls.settings.show_for(change["new"])

    @observe("gt_mode")
    def _on_gt_mode(self, change: dict[str, Any]) -> None:
        cls = truth_class(change["new"])
        steps = "steps" in {f.name for f in cls.Settings.fields()}
        self.controls.gt_steps.layout.display = None if steps else "none"
        # the truth draws its own units (random subsets): no choice of training points
        self.controls.selection.layout.display = "none" if cls.draws_units else None
        self.controls.k.description = f"k ({cls.dot}s)" if cls.draws_units else "k (points)"
        self.controls.truth_settings.show_for(change["new"])
        self.intro.value = panels.intro_html(cls.dot, cls.draws_units)
        if self.outcome is None:
            self._name_point_control()

    def _name_point_control(self) -> None:
        """The point selector's name: what one dot is under the current ground truth."""
        cls = truth_class(self.gt_mode)
        self.controls.point.description = cls.dot if cls.draws_units else "training point"

    @observe("busy")
    def _on_busy(self, change: dict[str, Any]) -> None:
        self.controls.compute.disabled = change["new"]
        self.controls.cancel.disabled = not change["new"]
        # the bar shows only while something runs (a full blue bar at rest reads as "working")
        self.controls.progress.layout.visibility = "visible" if change["new"] else "hidden"

    def _on_point_choice(self, change: dict[str, Any]) -> None:
        self.selected = None if change["new"] in (None, -1) else int(change["new"])

    @observe("selected")
    def _on_selected(self, change: dict[str, Any]) -> None:
        self._guard(self._render_selection, "showing the selected training point")

    # ------------------------------------------------------------------ compute
    def request(self) -> Request:
        """The current settings as a :class:`~influence_widgets.widgets.session.Request`."""
        return Request(
            model=self.model_name,
            test_index=self.test_index,
            solver=self.solver,
            settings=self.controls.settings.settings(self.solver),
            damping=self.controls.settings.damping.value,
            curvature=self.curvature,
            params=self.params,
            gt_mode=self.gt_mode,
            gt_steps=self.gt_steps,
            gt_settings=self.controls.truth_settings.settings(self.gt_mode, steps=self.gt_steps),
            k=self.k,
            selection=self.selection,
            device=self.device,
        )

    def compute(self, raise_errors: bool = False, ask: bool = False) -> Outcome | None:
        """What the Compute button does, synchronously; the button also asks first when the
        compute is expected to take over ``CONFIRM_SECONDS`` (``ask=True`` here: then None is
        returned and the question shown). Errors are shown in the widget and kept in ``error``
        (and raised when ``raise_errors``). Returns the :class:`Outcome` or None."""
        self.wait()
        self._cancel.clear()
        return self._guard(lambda: self._compute_job(ask), "computing", raise_errors)

    def _asking_job(self) -> Outcome | None:
        return self._compute_job(ask=True)

    def _compute_job(self, ask: bool = False) -> Outcome | None:
        try:
            return self._compute_steps(ask)
        except InterruptedError:
            self._update_stale("the last compute was cancelled")
            raise
        except Exception:
            self._update_stale("the last compute failed")
            raise
        finally:
            self._plan = None

    def _compute_steps(self, ask: bool = False) -> Outcome | None:
        req = self.request()
        self._hide_confirm()
        self.controls.progress.value = 0.0
        self.controls.status.value = "estimating how long this takes…"
        session = self.session
        eta = self.eta = session.eta(req)
        long = ask and eta.seconds > self.CONFIRM_SECONDS
        if long and not eta.indices_known and eta.parts["estimate"] < self.CONFIRM_SECONDS / 6:
            # the points it would evaluate may be in the store already: the estimate is short,
            # so choose them first, and plan again knowing what is stored
            session.choose_points(req, self._progress("estimating"))
            eta = self.eta = session.eta(req)
            long = eta.seconds > self.CONFIRM_SECONDS
        # the trust forecast first, when its one estimate is cheap: what to expect of the
        # retraining before it runs (else it is made inside the run, after the estimate)
        forecast = (session.forecast(req) if long or eta.parts["estimate"] < self.FORECAST_SECONDS
                    else None)
        ahead = f" · {forecast.line()}" if forecast is not None else ""
        if long:
            self._show_confirm(eta, forecast)
            return None
        self.controls.status.value = html.escape(eta.describe() + ahead)
        self._plan = (eta, time.monotonic())
        out = session.run(
            req, progress=self._progress, should_stop=self._should_stop, with_noise=False
        )
        self._show_outcome(out)
        if out.noise_std is None and not session.noise_known(req):  # the noise band follows
            self.controls.status.value = "scatter shown; computing the noise floor…"
            out = session.add_noise(out, progress=self._progress, should_stop=self._should_stop)
            self._show_outcome(out, scatter_only=True)
        self.controls.progress.value = 1.0
        beside = (f" · {out.forecast.beside(float(out.stats['spearman']))}"
                  if out.forecast is not None else "")
        self.controls.status.value = html.escape(
            f"done in {out.seconds['total']:.2f} s ({expected_text(eta.seconds)}) · "
            f"{out.retrains} new retrains{beside}"
        )
        return out

    # ------------------------------------------------------------------ asking before long work
    def _show_confirm(self, eta: ComputeETA, forecast: Any = None) -> None:
        """The question before a long compute: run anyway, or a cheaper setting that fits (with
        the trust forecast: what the retraining is expected to show)."""
        limit = self.CONFIRM_SECONDS
        alternatives = self.session.alternatives(eta, limit)
        run = W.Button(
            description=f"Run anyway (~{eta.seconds:.0f} s)",
            button_style="warning",
            tooltip="start the compute with the settings as they are",
            layout=W.Layout(width="auto"),
        )
        run.on_click(lambda _b: self._start(self._compute_job, "computing"))
        self.confirm_buttons = [("run anyway", {}, run)]
        for label, action, seconds in alternatives:
            b = W.Button(
                description=f"{label} (~{seconds:.0f} s)",
                tooltip=f"set {', '.join(f'{k} = {v}' for k, v in action.items())} and compute",
                layout=W.Layout(width="auto"),
            )
            b.on_click(lambda _b, a=action: self._on_alternative(a))
            self.confirm_buttons.append((label, action, b))
        for _label, _action, b in self.confirm_buttons:
            b.add_class("iw-confirm-button")
        dismiss = W.Button(description="Not now", layout=W.Layout(width="auto"))
        dismiss.on_click(lambda _b: self._hide_confirm("not started"))
        self.confirm_box.children = [
            W.HTML(panels.confirm_html(eta, limit, bool(alternatives))
                   + (f"<div class='iw-forecast'>Trust forecast, before any retraining: "
                      f"{html.escape(forecast.line())}</div>" if forecast is not None else "")),
            W.HBox([b for _, _, b in self.confirm_buttons] + [dismiss],
                   layout=W.Layout(flex_flow="row wrap")),
        ]
        self.confirm_box.layout.display = None
        self.controls.status.value = (
            f"{html.escape(eta.describe())}: over {limit:g} s, so it waits for you (above the "
            "scatter)"
        )

    def _hide_confirm(self, status: str | None = None) -> None:
        if self.confirm_box.layout.display != "none":
            self.confirm_box.layout.display = "none"
            self.confirm_box.children = ()
            self.confirm_buttons = []
            if status is not None:
                self.controls.status.value = status

    def _on_alternative(self, action: Mapping[str, Any]) -> None:
        """A cheaper setting's button: set its controls, then compute (asking again if it still
        would not fit)."""
        if self.busy:
            self.controls.status.value = "busy: wait for the running job or press Cancel"
            return
        if self._guard(lambda: self.apply_action(action) or True, "applying a cheaper setting"):
            self._start(self._asking_job, "computing")

    def _show_outcome(self, out: Outcome, scatter_only: bool = False) -> None:
        self.exporter.clear()  # the links were for the results before these
        self.retrain_count = self.session.retrain_count
        self.outcome = out
        self._remember(out)
        self.timings = out.seconds
        if out.request.damping != self.controls.settings.damping.value:
            self.controls.settings.damping.value = out.request.damping  # a damping it picked
        if scatter_only:
            self._render_scatter(out)
            if self.selected is not None:
                self._render_selection()
        else:
            self._render(out)
        self._render_report(out)
        self._update_stale()

    # ------------------------------------------------------------------ trust report, staleness
    @property
    def last_report(self) -> TrustReport | None:
        """The trust report of the results shown (None before the first compute)."""
        return None if self.outcome is None else self.outcome.report

    def _render_report(self, out: Outcome) -> None:
        children, self.action_buttons = panels.report_widgets(out.report, self._on_action)
        self.report_box.children = children

    def _on_action(self, action: Mapping[str, Any]) -> None:
        """A fix's button: set its controls, then compute as the Compute button does."""
        if self.busy:
            self.controls.status.value = "busy: wait for the running job or press Cancel"
            return
        if self._guard(lambda: self.apply_action(action) or True, "applying a fix"):
            self._start(self._asking_job, "computing")

    def reset_settings(self) -> None:
        """Every control back to its default for the model shown (the Reset button): test point
        of highest loss, the model's default solver, no damping, Hessian, all parameters, LOO
        warm start with the model's steps and k, top-k, no overlay. The results stay, marked
        stale where they no longer match."""
        c = self.controls
        tm = self.session.models.get(self.model_name)
        defaults = {"k": DEFAULT_K, "gt_steps": DEFAULT_GT_STEPS}
        solver = "exact"
        if tm is not None:
            defaults.update(model_defaults(tm))
            n_params = sum(p.numel() for p in tm.model.parameters())
            if n_params > EXACT_DEFAULT_MAX_PARAMS or is_heavy(tm):
                solver = "cg"
        c.settings.reset()
        c.truth_settings.reset()
        c.settings.damping.value = 0.0
        for name, value in (("solver", solver), ("curvature", "hessian"), ("params", "all"),
                            ("gt_mode", "warm_start"), ("selection", "top"),
                            ("k", defaults["k"]), ("gt_steps", defaults["gt_steps"]),
                            ("test_pick", "highest")):
            getattr(c, name).value = value
        self._defaults = {"k": defaults["k"], "gt_steps": defaults["gt_steps"]}
        self.overlay(None)
        c.status.value = "settings reset to their defaults"

    def apply_action(self, action: Mapping[str, Any]) -> None:
        """Set the controls a finding's ``action`` names (``{"damping": 0.12}``,
        ``{"curvature": "ggn"}``, ``{"scale": 3.1}``: a setting of the chosen solver); the
        solver first, since the other settings may be its own."""
        c = self.controls
        for key in sorted(action, key=lambda k: k != "solver"):
            value = action[key]
            own = c.settings.widgets.get(self.solver, {})
            if key == "damping":
                c.settings.damping.value = float(value)
            elif key in LINKED and key != "model_name":
                getattr(c, key).value = value
            elif key in own:
                w = own[key]
                if isinstance(w, W.Text):  # an optional setting: blank is its default
                    value = "" if value is None else (
                        format(value, ".6g") if isinstance(value, float) else str(value)
                    )
                w.value = value
            else:
                raise ValueError(
                    f"the fix sets {key!r}, which is neither a control of the explorer nor a "
                    f"setting of the solver {self.solver!r}"
                )

    def _on_setting(self, change: dict[str, Any]) -> None:
        self._hide_confirm()  # its question was about other settings
        self._reset_hover()  # a dot's numbers named under the scatter belong to the old settings
        self._update_stale()

    def _update_stale(self, reason: str | None = None) -> None:
        """Mark the results stale (``reason``, or: the controls no longer match them)."""
        out = self.outcome
        if out is None:
            self._set_stale(None)
            return
        if reason is None:
            try:
                current = self.request()
            except Exception as e:  # an invalid setting: the results cannot be for it
                reason = f"the settings are invalid: {e}"
            else:
                reason = None if current == out.request else "the controls changed"
        self._set_stale(reason)

    def _set_stale(self, reason: str | None) -> None:
        self.stale = reason is not None
        marked = (self.scatter_box, self.stats, self.report_box)
        if reason is None:
            self.stale_html.value = ""
            for w in marked:
                w.remove_class("iw-stale")
            return
        self.stale_html.value = panels.stale_html(
            panels.describe_request(self.outcome.request), reason
        )
        for w in marked:
            w.add_class("iw-stale")

    # ------------------------------------------------------------------ the scatter panel's parts
    @property
    def last_figure(self) -> Figure:
        """The scatter's figure (see :class:`~influence_widgets.widgets.scatter_view.ScatterView`)."""
        return self.scatter.figure

    @property
    def canvas(self) -> Any:
        """The live ipympl canvas, or None (a static image)."""
        return self.scatter.canvas

    @property
    def figure_lock(self) -> threading.RLock:
        return self.scatter.lock

    @property
    def scatter_box(self) -> W.VBox:
        return self.scatter.box

    @property
    def scatter_out(self) -> W.Output:
        return self.scatter.out

    @property
    def scatter_alt(self) -> W.HTML:
        return self.scatter.alt

    @property
    def scatter_label(self) -> str:
        """The scatter in words (what screen readers read)."""
        return self.scatter.label_text

    @property
    def hover_html(self) -> W.HTML:
        return self.scatter.hover

    @property
    def _artists(self) -> dict[str, Any]:
        return self.scatter.artists

    # ------------------------------------------------------------------ results
    @property
    def last_stats(self) -> dict[str, Any] | None:
        return None if self.outcome is None else self.outcome.stats

    @property
    def last_estimates(self) -> torch.Tensor | None:
        return None if self.outcome is None else self.outcome.estimated

    @property
    def last_actual(self) -> torch.Tensor | None:
        return None if self.outcome is None else self.outcome.actual

    @property
    def last_indices(self) -> torch.Tensor | None:
        return None if self.outcome is None else self.outcome.indices

    @property
    def state(self) -> dict[str, Any]:
        """Settings and the last results, as plain values."""
        s = {name: getattr(self, name) for name in LINKED}
        s.update(
            error=self.error,
            retrain_count=self.retrain_count,
            timings=dict(self.timings),
            stats=self.last_stats,
            stale=self.stale,
            eta=None if self.eta is None else self.eta.parts,
            findings=None if self.outcome is None else list(self.outcome.report.codes),
        )
        return s

    def _clear_results(self) -> None:
        self.outcome = None
        self.scatter.clear()
        self.extremes_out.outputs = ()
        self.extremes_html.value = ""
        self.trace_out.outputs = ()
        self.agreement_out.outputs = ()
        self.agreement_html.value = AGREEMENT_PROMPT
        self.last_agreement = None
        self.stats.value = "<i>Press Compute.</i>"
        self.exporter.clear()
        self.diag_html.value = "<i>Diagnostics appear after a compute.</i>"
        self.controls.point.options = [("(none)", -1)]
        self._name_point_control()
        self._reset_hover()
        self.point_html.value = ""
        self.point_out.outputs = ()
        self.report_box.children = (W.HTML("<i>The trust report appears after a compute.</i>"),)
        self.action_buttons = []
        self._set_stale(None)

    # ------------------------------------------------------------------ rendering
    def _render(self, out: Outcome) -> None:
        self._render_scatter(out)
        self._render_extremes(out)
        self._render_diagnostics(out)
        self._render_point_choices(out)

    def _render_scatter(self, out: Outcome) -> None:
        req = out.request
        subsets = req.draws_units
        noise_kind = self.session.noise_kind(req)
        # a perturbation-only floor is not retraining noise: no band ("no different from 0")
        band = None if noise_kind == "perturbation" else out.noise_std
        self.scatter.plot(
            out.estimated.numpy(),
            out.actual.numpy(),
            noise=band,
            stats=out.stats,
            title=panels.plot_title(req, out.loo.dtype, len(out.indices)),
            overlay=self._overlay_series(out),
            yerr=out.actual_se,
            **panels.unit_labels(req),
        )
        self.scatter.label(panels.scatter_alt_text(out))
        self.stats.value = panels.stats_html(
            out.stats,
            index_note=out.index_note,
            gt_note=describe_gt(req, out.loo.objective, out.loo.dtype,
                                self.session.model(req.model)),
            noise=out.noise_std,
            retrains=out.retrains,
            seconds=out.seconds,
            lds=subsets,
            vs_exact=out.vs_exact,
            noise_source=self.session.noise_source(req),
            noise_kind=noise_kind,
        )
        other = self._overlay
        if other is not None and other is not out:
            self.stats.value += panels.overlay_html(other)

    # ------------------------------------------------------------------ keep and compare
    def _remember(self, out: Outcome) -> None:
        """Keep ``out`` first in the history (replacing the run of the same request: the noise
        floor completes a run), at most :attr:`HISTORY`; refresh the overlay choices."""
        kept = self._overlay  # read before the indices move
        self.history = [out] + [h for h in self.history if h.request != out.request]
        del self.history[self.HISTORY:]
        options = [("(none)", -1)] + [(panels.run_label(h), i)
                                      for i, h in enumerate(self.history) if h is not out]
        self.overlay_pick.unobserve(self._on_overlay, names="value")
        try:
            self.overlay_pick.options = options
            pos = next((i for i, h in enumerate(self.history) if h is kept and h is not out), -1)
            self.overlay_pick.value = pos
        finally:
            self.overlay_pick.observe(self._on_overlay, names="value")

    @property
    def _overlay(self) -> Outcome | None:
        i = self.overlay_pick.value
        return self.history[i] if i is not None and 0 <= i < len(self.history) else None

    def _overlay_series(self, out: Outcome) -> list[tuple[str, Any, Any]]:
        other = self._overlay
        if other is None or other is out:
            return []
        return [(panels.overlay_label(other), other.estimated.numpy(), other.actual.numpy())]

    def overlay(self, run: int | None) -> None:
        """Draw run ``run`` of :attr:`history` (0 = the newest) on the scatter beside the
        current one (None: no overlay), as the overlay dropdown does."""
        self.overlay_pick.value = -1 if run is None else int(run)

    def _on_overlay(self, change: dict[str, Any]) -> None:
        self.exporter.clear()  # the figure changes
        if self.outcome is not None:
            self._guard(lambda: self._render_scatter(self.outcome), "drawing the overlay")
            if self.selected is not None:
                self._render_selection()

    def to_frame(self) -> Any:
        """The comparison shown, as a ``pandas.DataFrame`` (see
        :meth:`~influence_widgets.widgets.session.Outcome.to_frame`); None before a compute."""
        out = self.outcome
        if out is None:
            return None
        return out.to_frame(self.session.model(out.request.model).data)

    def export_stem(self) -> str:
        """The exported files' name (see :meth:`ExportPanel.stem`)."""
        return self.exporter.stem()

    def export_bytes(self) -> dict[str, bytes]:
        """The comparison shown as CSV bytes (one row per dot: its features, estimate, actual
        change, the statistics and every setting) and the figure as PNG bytes."""
        return self.exporter.files()

    def export(self, folder: Any = "influence_exports") -> dict[str, Any]:
        """Write the comparison shown as a CSV (one row per dot, with its features, the
        statistics and the settings) and the figure as a PNG into ``folder`` (``~`` is your
        home folder; created if missing); both written atomically (a temporary file, then a
        rename), named by :meth:`export_stem`, readable as any file you create. Returns
        ``{"csv": path, "png": path}``. In the browser, the Download button gives the same
        two files without writing on the server."""
        return self.exporter.write(folder)

    @property
    def export_button(self) -> W.Button:
        return self.exporter.button

    @property
    def download_html(self) -> W.HTML:
        return self.exporter.links

    @property
    def visitor(self) -> str:
        """This explorer's own id in exported file names."""
        return self.exporter.visitor

    def _download_click(self) -> None:
        """The Download button: two links that save the CSV and the PNG in the browser."""
        stem = self.exporter.offer()
        self.controls.status.value = f"ready to save: {html.escape(stem)}.csv and .png"

    # ------------------------------------------------------------------ clicking and hovering
    def _on_pick(self, event: Any) -> None:
        """A click on a dot selects it (as choosing it in the dropdown does)."""
        if event.artist is not self._artists.get("points"):
            return
        pos = self.scatter.dot_at(event.mouseevent)
        if pos is None:
            pos = int(np.asarray(event.ind)[0])
        self.controls.point.value = pos  # sets ``selected`` and shows the point

    def _reset_hover(self) -> None:
        """The hover line's prompt, for what the dots are now (no dot's numbers: they would
        belong to results that changed)."""
        cls = truth_class(self.gt_mode)
        self.scatter.prompt(cls.dot if cls.draws_units else "training point")

    def _on_hover(self, event: Any) -> None:
        """Hovering a dot names it below the scatter (nothing is drawn over the data)."""
        out = self.outcome
        pos = None if out is None else self.scatter.dot_at(event)
        if pos is None:
            if out is None:
                self._reset_hover()
            else:
                self.scatter.prompt(out.request.truth.dot if out.request.draws_units
                                    else "training point")
            return
        self.hover_html.value = panels.dot_html(out, pos) + (
            " <span style='color:#666'>(click to select)</span>")

    def agreement_by_test_point(self) -> Any:
        """The agreement of the results shown, per test point (see
        :meth:`~influence_widgets.widgets.session.ExplorerSession.agreement_by_test_point`),
        drawn in the "across test points" tab; what its button does, synchronously."""
        self.wait()
        return self._guard(self._agreement_job, "computing the agreement per test point",
                           raise_errors=True)

    def _agreement_job(self) -> Any:
        out = self.outcome
        if out is None:
            raise ValueError("nothing computed yet: press Compute first, then this button")
        self.controls.status.value = "agreement per test point: estimating every test point…"
        frame = self.session.agreement_by_test_point(
            out, progress=self._progress("estimating every test point"))
        self.last_agreement = frame
        self.agreement_html.value = panels.agreement_html(frame, out)
        panels.show_figure(self.agreement_out, panels.agreement_figure(frame, out))
        self.controls.status.value = "agreement per test point: done (nothing was retrained)"
        return frame

    def _data_view(self) -> dict[str, Any]:
        data = self.session.model(self.model_name).data
        shape = data.info.get("image_shape") if data.is_image else None
        return {
            "class_names": data.class_names,
            "image_shape": shape,
            "feature_names": data.info.get("feature_names"),
        }

    def _render_extremes(self, out: Outcome) -> None:
        if out.request.draws_units:
            self.extremes_out.outputs = ()
            self.extremes_html.value = panels.note_html(
                f"With the {out.request.truth.short or out.request.gt_mode} ground truth each dot "
                f"is a {out.request.truth.dot}, not a training point, so there is no actual effect "
                "per training point to show here: choose a LOO ground truth for the most helpful "
                "and harmful points.")
            return
        tm = self.session.model(out.request.model)
        view = self._data_view()
        pos = panels.extreme_positions(out.estimated.numpy())
        X, y = tm.X_train.cpu(), tm.y_train.cpu()
        if tm.data.is_image and any(pos.values()):
            self.extremes_html.value = ""
            fig = panels.extremes_figure(
                X,
                y,
                pos,
                out.indices,
                out.estimated,
                out.actual,
                class_names=view["class_names"],
                image_shape=view["image_shape"],
                info=tm.data.info,
            )
            panels.show_figure(self.extremes_out, fig)
        else:
            self.extremes_out.outputs = ()
            self.extremes_html.value = panels.extremes_html(
                X,
                y,
                pos,
                out.indices,
                out.estimated,
                out.actual,
                info=tm.data.info,
                class_names=view["class_names"],
                feature_names=view["feature_names"],
            )

    def _render_diagnostics(self, out: Outcome) -> None:
        tm = self.session.model(out.request.model)
        diag = out.estimate.diagnostics
        model_diag = dict(tm.diagnostics)
        model_diag["grad_norm"] = diag.get("grad_norm", model_diag.get("grad_norm"))
        self.diag_html.value = panels.diagnostics_html(
            diag, out.eigen, model_diag, curvature=out.request.curvature, solver=out.request.solver
        )
        fig = panels.trace_figure(diag)
        if fig is None:
            self.trace_out.outputs = ()
        else:
            panels.show_figure(self.trace_out, fig)

    def _render_point_choices(self, out: Outcome) -> None:
        order = np.argsort(-np.abs(out.estimated.numpy()))
        options = [("(none)", -1)] + [(panels.dot_label(out, int(p)), int(p)) for p in order]
        self.controls.point.description = (out.request.truth.dot if out.request.draws_units
                                           else "training point")
        self.controls.point.options = options
        self.controls.point.value = -1

    def _render_selection(self) -> None:
        out, pos = self.outcome, self.selected
        if out is None or not self.scatter.artists:
            return
        self.scatter.highlight(pos)
        if pos is None:
            self.point_html.value, self.point_out.outputs = "", ()
            return
        tm = self.session.model(out.request.model)
        if out.request.draws_units:
            self.point_html.value = panels.subset_html(out, pos, tm.data.class_names,
                                                       tm.y_train)
            self.point_out.outputs = ()
            return
        i = int(out.indices[pos])
        view = self._data_view()
        extra = (
            f"<br>estimated {float(out.estimated[pos]):+.3g}<br>"
            f"actual {float(out.actual[pos]):+.3g}"
        )
        self.point_html.value = panels.point_html(
            f"training point #{i}",
            panels.for_display(tm.X_train[i], tm.data.info),
            int(tm.y_train[i]),
            class_names=view["class_names"],
            is_image=view["image_shape"] is not None or tm.data.is_image,
            feature_names=view["feature_names"],
            extra=extra,
        )
        self._show_thumbnail(self.point_out, tm.X_train[i], view["image_shape"], tm.data.is_image)

    def _show_test_point(self) -> None:
        name = self.model_name
        tm = self.session.model(name)
        t = self.test_index
        preds, losses = self.session.predictions(name)
        view = self._data_view()
        extra = (
            f" · predicted <b>{html.escape(str(view['class_names'][int(preds[t])]))}</b>"
            f"<br>loss {float(losses[t]):.4g} (rank {int((losses > losses[t]).sum()) + 1} "
            f"of {losses.numel()})"
        )
        self.test_html.value = panels.point_html(
            f"test point #{t}",
            panels.for_display(tm.data.X_test[t], tm.data.info),
            int(tm.data.y_test[t]),
            class_names=view["class_names"],
            is_image=tm.data.is_image,
            feature_names=view["feature_names"],
            extra=extra,
        )
        self._show_thumbnail(
            self.test_out, tm.data.X_test[t], view["image_shape"], tm.data.is_image
        )

    def _show_thumbnail(
        self, out: W.Output, x: torch.Tensor, image_shape: Any, is_image: bool
    ) -> None:
        if is_image:
            info = self.session.model(self.model_name).data.info
            panels.show_figure(
                out, panels.thumbnail_figure(panels.for_display(x, info), image_shape)
            )
        else:
            out.outputs = ()
