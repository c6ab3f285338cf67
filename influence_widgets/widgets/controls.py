"""The explorer's input widgets; solver settings are built from :class:`SolverSettings` fields."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import ipywidgets as W

from ..influence.solvers import SolverSettings

SOLVERS = [("exact", "exact"), ("CG", "cg"), ("LiSSA", "lissa"), ("Arnoldi", "arnoldi")]
TEST_PICKS = [
    ("highest loss", "highest"),
    ("median loss", "median"),
    ("random", "random"),
    ("by index", "index"),
]
GT_MODES = [
    ("warm start", "warm_start"),
    ("from scratch", "scratch"),
    ("last layer (warm start)", "last_layer"),
    ("PBRF", "pbrf"),
]
SELECTIONS = [("top-k by |estimate|", "top"), ("random k", "random")]

STYLE = {"description_width": "96px"}


def _wide() -> W.Layout:
    """A fresh layout per widget: a shared Layout would hide/show every widget using it."""
    return W.Layout(width="296px")


HELP = {
    "damping": "added to the curvature: (H + damping I)^-1",
    "tol": "CG stops at this relative residual",
    "max_iter": "CG iteration limit",
    "scale": "LiSSA scale; must exceed the top eigenvalue (blank: automatic, power iteration)",
    "depth": "LiSSA recursion depth",
    "repeats": "LiSSA repeats averaged",
    "batch_size": "LiSSA Hessian batch (blank: full batch)",
    "rank": "Arnoldi: number of top eigenpairs kept",
}
BLANK = {"scale": "automatic", "batch_size": "full batch"}


def _setting_widget(name: str, kind: Any, default: Any) -> W.Widget:
    """A control for one SolverSettings field: float, int, or optional (blank = None)."""
    common = {
        "description": name,
        "style": STYLE,
        "layout": _wide(),
        "description_allow_html": False,
    }
    optional = type(None) in typing.get_args(kind)
    if optional:
        return W.Text(
            value="" if default is None else str(default),
            placeholder=BLANK.get(name, "auto"),
            tooltip=HELP.get(name, ""),
            **common,
        )
    if kind is int:
        return W.IntText(value=default, tooltip=HELP.get(name, ""), **common)
    return W.FloatText(value=default, tooltip=HELP.get(name, ""), **common)


def _parse_optional(name: str, text: str, kind: Any) -> Any:
    text = text.strip()
    if not text:
        return None
    base = int if int in typing.get_args(kind) else float
    try:
        return base(text)
    except ValueError:
        raise ValueError(
            f"solver setting {name!r} must be {'an integer' if base is int else 'a number'}"
            f" or blank ({BLANK.get(name, 'automatic')}), got {text!r}"
        ) from None


class SolverControls:
    """One widget per :class:`SolverSettings` field; those a solver does not use are hidden."""

    def __init__(self) -> None:
        hints = typing.get_type_hints(SolverSettings)
        self.kinds = {f.name: hints[f.name] for f in dataclasses.fields(SolverSettings)}
        defaults = SolverSettings()
        self.widgets: dict[str, W.Widget] = {
            name: _setting_widget(name, kind, getattr(defaults, name))
            for name, kind in self.kinds.items()
        }
        self.box = W.VBox(list(self.widgets.values()))

    def show_for(self, solver: str) -> None:
        """Show exactly the settings ``solver`` uses (``SolverSettings.USED_BY``)."""
        used = SolverSettings.USED_BY[solver]
        for name, w in self.widgets.items():
            w.layout.display = None if name in used else "none"

    def settings(self) -> SolverSettings:
        """The current values as a validated :class:`SolverSettings`."""
        values = {}
        for name, w in self.widgets.items():
            kind = self.kinds[name]
            values[name] = (
                _parse_optional(name, w.value, kind) if isinstance(w, W.Text) else w.value
            )
        return SolverSettings(**values)


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
            options=SOLVERS, value="exact", description="solver", style=STYLE, layout=_wide()
        )
        self.settings = SolverControls()
        self.settings.show_for("exact")
        self.curvature = _toggle([("Hessian", "hessian"), ("GGN", "ggn")], "curvature")
        self.params = _toggle([("all", "all"), ("last layer", "last_layer")], "parameters")
        self.gt_mode = W.Dropdown(
            options=GT_MODES,
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
        )
        self.cancel = W.Button(
            description="Cancel", icon="stop", disabled=True, tooltip="stop the running computation"
        )
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="296px"))
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
                self.selection,
                self.k,
                self.device,
                W.HBox([self.compute, self.cancel]),
                self.progress,
                self.status,
            ],
            layout=W.Layout(flex="0 0 315px"),
        )
