"""The influence engine: objective, per-sample gradients, HVPs, solvers and the public entry points."""

from .api import InfluenceEngine, InfluenceResult, hessian_spectrum, influence
from .objective import Objective
from .solvers import (
    SOLVERS,
    ArnoldiSolver,
    CGSolver,
    DivergenceError,
    ExactSolver,
    HessianTooLargeError,
    LiSSASolver,
    NegativeCurvatureError,
    Solver,
    SolverError,
    SolverSettings,
    make_solver,
    power_iteration,
)

__all__ = [
    "SOLVERS", "ArnoldiSolver", "CGSolver", "DivergenceError", "ExactSolver", "HessianTooLargeError",
    "InfluenceEngine", "InfluenceResult", "LiSSASolver", "NegativeCurvatureError", "Objective",
    "Solver", "SolverError", "SolverSettings", "hessian_spectrum", "influence", "make_solver",
    "power_iteration",
]
