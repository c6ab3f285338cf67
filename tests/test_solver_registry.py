"""A new solver is one settings class and one registry line: it then appears in ``iw.influence``,
the CLI's ``list`` and the explorer's controls (a toy solver, added and removed here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from conftest import rel_err
from torch import nn

import influence_widgets as iw
from influence_widgets.__main__ import cmd_list
from influence_widgets.influence import (
    SOLVERS,
    InfluenceEngine,
    Solver,
    SolverSettings,
    register_solver,
    setting,
    unregister_solver,
)
from influence_widgets.widgets.controls import Controls

DT = torch.float64


# --- the whole of a new solver: its settings, its class, one registry line ---------------------
@dataclass(frozen=True)
class DiagonalShiftSettings(SolverSettings):
    shift: float = setting(2.0, "the curvature is taken to be shift * I", above=0)


class DiagonalShiftSolver(Solver):
    """``(shift I + damping I)^{-1} V``: a gradient dot product, scaled."""

    name = "diagonal-shift"
    label = "Shift"
    summary = "a toy: the curvature is shift * I"
    Settings = DiagonalShiftSettings

    def _fit(self, objective: Any) -> None:
        self.fit_diagnostics.update(shift=self.settings.shift)

    def _solve(self, V: torch.Tensor, damping: float, info: dict[str, Any]) -> torch.Tensor:
        return V / (self.settings.shift + damping)
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def toy_solver():
    register_solver(DiagonalShiftSolver)
    try:
        yield DiagonalShiftSolver
    finally:
        unregister_solver(DiagonalShiftSolver.name)
    assert DiagonalShiftSolver.name not in SOLVERS


def _problem():
    g = torch.Generator().manual_seed(0)
    X, Xt = torch.randn(20, 3, generator=g, dtype=DT), torch.randn(4, 3, generator=g, dtype=DT)
    y, yt = torch.arange(20) % 3, torch.arange(4) % 3
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).to(DT), (X, y), (Xt, yt)


def test_a_registered_solver_works_through_the_public_api(toy_solver):
    model, train, test = _problem()
    res = iw.influence(model, train, test, solver=toy_solver.name, damping=0.5, shift=1.5,
                       return_result=True)
    engine = InfluenceEngine(model, train)
    G, Gt = (engine.objective.per_sample_grads(*d) for d in (train, test))
    assert rel_err(res.values, Gt @ G.T / (1.5 + 0.5) / 20) < 1e-12
    assert res.diagnostics["shift"] == 1.5 and res.diagnostics["settings"] == {"shift": 1.5}
    with pytest.raises(ValueError, match=r"DiagonalShiftSettings.shift must be > 0"):
        iw.influence(model, train, test, solver=toy_solver.name, shift=0.0)
    with pytest.raises(TypeError, match=r"has no option 'rank'; its options are: shift"):
        iw.influence(model, train, test, solver=toy_solver.name, rank=3)


def test_a_registered_solver_is_listed_by_the_cli(toy_solver):
    text = cmd_list()
    assert "diagonal-shift" in text and "a toy: the curvature is shift * I" in text
    assert "shift = 2.0: the curvature is taken to be shift * I" in text


def test_a_registered_solver_gets_explorer_controls(toy_solver):
    controls = Controls(["m"], ["cpu"], 10)
    assert ("Shift", "diagonal-shift") in controls.solver.options
    widget = controls.settings.widgets["diagonal-shift"]["shift"]
    assert widget.value == 2.0 and widget.tooltip == "the curvature is taken to be shift * I"
    controls.settings.show_for("diagonal-shift")
    assert widget.layout.display is None
    assert controls.settings.widgets["cg"]["tol"].layout.display == "none"
    widget.value = 4.0
    assert controls.settings.settings("diagonal-shift") == DiagonalShiftSettings(shift=4.0)


def test_registry_refuses_what_is_not_a_solver():
    with pytest.raises(TypeError, match="Solver subclass"):
        register_solver(int)  # type: ignore[arg-type]

    class Nameless(Solver):
        pass

    with pytest.raises(TypeError, match="non-empty name"):
        register_solver(Nameless)

    class Clash(Solver):
        name = "cg"

    with pytest.raises(ValueError, match="already registered"):
        register_solver(Clash)
    with pytest.raises(ValueError, match="built-in"):
        unregister_solver("cg")


def test_studies_compare_every_curvature_aware_solver_with_the_baselines(toy_solver):
    """The studies read which solvers use the curvature from the registry (each solver's
    ``baseline`` flag), not from a list of names: a registered solver joins them."""
    from influence_widgets.experiments.studies import curvature_aware

    aware = curvature_aware()
    assert toy_solver.name in aware
    assert {"exact", "cg", "lissa", "arnoldi", "kfac", "ekfac"} <= set(aware)
    assert not {"identity", "diagonal"} & set(aware)
