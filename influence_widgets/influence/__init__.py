"""The influence engine: objective, per-sample gradients, HVPs, solvers and the public entry points."""

from .api import InfluenceEngine, InfluenceResult, hessian_spectrum, influence
from .diagnostics import (
    ArnoldiDiagnostics,
    CGDiagnostics,
    Diagnostics,
    ExactDiagnostics,
    FisherDiagnostics,
    LiSSADiagnostics,
)
from .factored import (
    DiagonalSettings,
    DiagonalSolver,
    EKFACSettings,
    EKFACSolver,
    FisherSettings,
    IdentitySettings,
    IdentitySolver,
    KFACSettings,
    KFACSolver,
    UnsupportedLayerError,
)
from .objective import Objective, hvp_route
from .settings import SolverSettings, setting
from .solvers import (
    SOLVERS,
    ArnoldiSettings,
    ArnoldiSolver,
    CGSettings,
    CGSolver,
    Cost,
    DivergenceError,
    ExactSettings,
    ExactSolver,
    HessianTooLargeError,
    LiSSASettings,
    LiSSASolver,
    NegativeCurvatureError,
    NotEnoughMemoryError,
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
    "ArnoldiDiagnostics", "CGDiagnostics", "Cost", "Diagnostics", "ExactDiagnostics",
    "FisherDiagnostics", "LiSSADiagnostics", "NotEnoughMemoryError",
    "ArnoldiSettings", "ArnoldiSolver", "CGSettings", "CGSolver", "DiagonalSettings",
    "DiagonalSolver", "DivergenceError", "EKFACSettings", "EKFACSolver", "ExactSettings",
    "ExactSolver", "FisherSettings", "HessianTooLargeError", "IdentitySettings", "IdentitySolver",
    "InfluenceEngine", "InfluenceResult", "KFACSettings", "KFACSolver", "LiSSASettings",
    "LiSSASolver", "NegativeCurvatureError", "Objective", "SOLVERS", "Solve", "Solver",
    "SolverError", "SolverSettings", "UnsupportedLayerError", "hessian_spectrum", "hvp_route",
    "influence", "make_settings", "make_solver", "power_iteration", "register_solver", "setting",
    "solver_class", "unregister_solver",
]
