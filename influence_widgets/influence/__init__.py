"""The influence engine: objective, per-sample gradients, HVPs, solvers and the public entry points."""

from .api import InfluenceEngine, InfluenceResult, hessian_spectrum, influence
from .objective import Objective, hvp_route
from .settings import SolverSettings, setting
from .solvers import (
    SOLVERS,
    ArnoldiSettings,
    ArnoldiSolver,
    CGSettings,
    CGSolver,
    DivergenceError,
    ExactSettings,
    ExactSolver,
    HessianTooLargeError,
    LiSSASettings,
    LiSSASolver,
    NegativeCurvatureError,
    Solve,
    Solver,
    SolverError,
    make_settings,
    make_solver,
    power_iteration,
    register_solver,
    solver_class,
    unregister_solver,
)

__all__ = [
    "SOLVERS", "ArnoldiSettings", "ArnoldiSolver", "CGSettings", "CGSolver", "DivergenceError",
    "ExactSettings", "ExactSolver", "HessianTooLargeError", "InfluenceEngine", "InfluenceResult",
    "LiSSASettings", "LiSSASolver", "NegativeCurvatureError", "Objective", "Solve", "Solver",
    "SolverError", "SolverSettings", "hessian_spectrum", "hvp_route", "influence", "make_settings",
    "make_solver", "power_iteration", "register_solver", "setting", "solver_class",
    "unregister_solver",
]
