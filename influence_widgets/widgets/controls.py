"""The explorer's input widgets; each solver's and each ground truth's controls are built from
its settings dataclass.

The solver list and every solver's controls come from the solver registry
(:data:`~influence_widgets.influence.SOLVERS`), the ground-truth list and every truth's controls
from the ground-truth registry (:data:`~influence_widgets.ground_truth.TRUTHS`): a registered
entry appears here with one control per field of its ``Settings`` (fields marked ``advanced``
stay Python-only), the field's help as the control's tooltip, and its validation as the error
message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import ipywidgets as W

from .._settings import FieldInfo
from ..ground_truth.truths import TRUTHS, TruthSettings, truth_class
from ..influence.settings import SolverSettings
from ..influence.solvers import SOLVERS, solver_class

TEST_PICKS = [
    ("highest loss", "highest"),
    ("median loss", "median"),
    ("random", "random"),
    ("by index", "index"),
]
SELECTIONS = [("top-k by |estimate|", "top"), ("random k", "random")]

STYLE = {"description_width": "96px"}
DAMPING_HELP = "added to the curvature: (H + damping I)^-1; a number >= 0, shared by every solver"


def _wide() -> W.Layout:
    """A fresh layout per widget: a shared Layout would hide/show every widget using it."""
    return W.Layout(width="296px")


def solver_options() -> list[tuple[str, str]]:
    """``(label, name)`` of every registered solver, for the solver dropdown."""
    return [(cls.label or name, name) for name, cls in SOLVERS.items()]


def truth_options() -> list[tuple[str, str]]:
    """``(label, name)`` of every registered ground truth, for the ground-truth dropdown."""
    return [(cls.label or name, name) for name, cls in TRUTHS.items()]


def _setting_widget(info: FieldInfo) -> W.Widget:
    """A control for one settings field: a checkbox, a choice, a number, or a text box for an
    optional field (blank = None)."""
    common = {"description": info.name, "tooltip": info.help, "style": STYLE, "layout": _wide()}
    if info.optional:
        return W.Text(value="" if info.default is None else str(info.default),
                      placeholder=info.blank or "automatic", **common)
    if info.choices is not None:
        return W.Dropdown(options=list(info.choices), value=info.default, **common)
    if info.kind is bool:
        return W.Checkbox(value=info.default, indent=False, **common)
    if info.kind is int:
        return W.IntText(value=info.default, **common)
    if info.kind is float:
        return W.FloatText(value=info.default, **common)
    return W.Text(value=info.default, **common)


def _parse_optional(info: FieldInfo, text: str) -> Any:
    text = text.strip()
    if not text:
        return None
    try:
        return info.kind(text)
    except ValueError:
        raise ValueError(
            f"setting {info.name!r} must be {'an integer' if info.kind is int else 'a number'}"
            f" or blank ({info.blank or 'automatic'}), got {text!r}"
        ) from None


class SettingsControls:
    """One control per setting (not ``advanced``, not in ``skip``) of every entry of a registry
    (name -> a class with a ``Settings`` dataclass); only the chosen entry's controls are shown."""

    def __init__(self, registry: Mapping[str, type], skip: Iterable[str] = ()) -> None:
        skip = set(skip)
        self.fields: dict[str, list[FieldInfo]] = {}
        self.widgets: dict[str, dict[str, W.Widget]] = {}
        for name, cls in registry.items():
            infos = [f for f in cls.Settings.fields() if not f.advanced and f.name not in skip]
            self.fields[name] = infos
            self.widgets[name] = {f.name: _setting_widget(f) for f in infos}
        self.box = W.VBox([w for ws in self.widgets.values() for w in ws.values()])

    def show_for(self, chosen: str) -> None:
        """Show exactly the settings of ``chosen``."""
        for name, ws in self.widgets.items():
            for w in ws.values():
                w.layout.display = None if name == chosen else "none"

    def reset(self) -> None:
        """Every setting back to its default."""
        for name, infos in self.fields.items():
            for info in infos:
                w = self.widgets[name][info.name]
                w.value = ("" if info.default is None else str(info.default)) if info.optional \
                    else info.default

    def values(self, name: str) -> dict[str, Any]:
        """The chosen values of ``name``'s settings (blank optional fields: None)."""
        values = {}
        for info in self.fields.get(name, []):
            w = self.widgets[name][info.name]
            values[info.name] = _parse_optional(info, w.value) if info.optional else w.value
        return values


class SolverControls(SettingsControls):
    """The damping (every solver) and one control per setting of each registered solver."""

    def __init__(self) -> None:
        super().__init__(SOLVERS)
        self.damping = W.FloatText(value=0.0, description="damping", tooltip=DAMPING_HELP,
                                   style=STYLE, layout=_wide())
        self.box = W.VBox([self.damping, *self.box.children])

    def settings(self, solver: str) -> SolverSettings:
        """The chosen values of ``solver``'s settings, validated by its settings class."""
        return solver_class(solver).Settings.from_options(solver, **self.values(solver))


class TruthControls(SettingsControls):
    """One control per setting of each registered ground truth, except ``steps`` (the explorer's
    own "LOO steps" control, shared by every truth that has it)."""

    def __init__(self) -> None:
        super().__init__(TRUTHS, skip=("steps",))

    def settings(self, truth: str, **fixed: Any) -> TruthSettings:
        """The chosen settings of ground truth ``truth`` (with ``fixed`` ones, e.g. ``steps``),
        validated by its settings class."""
        names = {f.name for f in truth_class(truth).Settings.fields()}
        given = {**self.values(truth), **{k: v for k, v in fixed.items() if k in names}}
        return truth_class(truth).Settings.from_options(truth, **given)


def _toggle(options: list[tuple[str, str]], description: str) -> W.ToggleButtons:
    return W.ToggleButtons(
        options=options, description=description, style={**STYLE, "button_width": "92px"}
    )


class Controls:
    """Every input of the explorer, plus the buttons and the progress bar."""

    def __init__(self, model_options: list[str], devices: list[str], gt_steps: int) -> None:
        self.model = W.Dropdown(
            options=model_options, description="model", style=STYLE, layout=_wide()
        )
        self.test_pick = W.Dropdown(
            options=TEST_PICKS,
            value="highest",
            description="test point",
            style=STYLE,
            layout=_wide(),
        )
        self.test_index = W.BoundedIntText(
            value=0, min=0, max=0, description="test index", style=STYLE, layout=_wide()
        )
        self.solver = W.Dropdown(
            options=solver_options(), value="exact", description="solver", style=STYLE, layout=_wide()
        )
        self.settings = SolverControls()
        self.settings.show_for("exact")
        self.curvature = _toggle([("Hessian", "hessian"), ("GGN", "ggn")], "curvature")
        self.params = _toggle([("all", "all"), ("last layer", "last_layer")], "parameters")
        self.gt_mode = W.Dropdown(
            options=truth_options(),
            value="warm_start",
            description="ground truth",
            style=STYLE,
            layout=_wide(),
        )
        self.gt_steps = W.BoundedIntText(
            value=gt_steps,
            min=1,
            max=1_000_000,
            description="LOO steps",
            style=STYLE,
            layout=_wide(),
        )
        self.truth_settings = TruthControls()
        self.truth_settings.show_for("warm_start")
        self.selection = W.Dropdown(
            options=SELECTIONS, value="top", description="evaluate", style=STYLE, layout=_wide()
        )
        self.k = W.BoundedIntText(
            value=40, min=3, max=1_000_000, description="k (points)", style=STYLE, layout=_wide()
        )
        self.device = W.Dropdown(
            options=devices, value=devices[0], description="device", style=STYLE, layout=_wide()
        )
        self.compute = W.Button(
            description="Compute",
            button_style="primary",
            icon="play",
            tooltip="estimate, retrain the evaluated points (only what is new), compare",
            layout=W.Layout(width="118px"),
        )
        self.cancel = W.Button(
            description="Cancel", icon="stop", disabled=True, tooltip="stop the running computation",
            layout=W.Layout(width="92px"),
        )
        self.reset = W.Button(
            description="Reset", icon="undo", layout=W.Layout(width="86px"),
            tooltip="every setting back to its default for this model (the model stays)")
        self.progress = W.FloatProgress(  # shown while a job runs
            value=0.0, min=0.0, max=1.0, layout=W.Layout(width="296px", visibility="hidden"))
        self.status = W.HTML(value="")
        self.point = W.Dropdown(
            options=[("(none)", -1)],
            value=-1,
            description="training point",
            style=STYLE,
            layout=W.Layout(width="515px"),
        )

    def box(self) -> W.VBox:
        """The control column."""

        def section(title: str) -> W.HTML:
            return W.HTML(f"<b>{title}</b>")

        return W.VBox(
            [
                section("Model and test point"),
                self.model,
                self.test_pick,
                self.test_index,
                section("Estimate"),
                self.solver,
                self.settings.box,
                self.curvature,
                self.params,
                section("Ground truth"),
                self.gt_mode,
                self.gt_steps,
                self.truth_settings.box,
                self.selection,
                self.k,
                self.device,
                W.HBox([self.compute, self.cancel, self.reset]),
                self.progress,
                self.status,
            ],
            layout=W.Layout(flex="0 0 315px"),
        )
