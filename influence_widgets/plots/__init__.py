"""Figures: estimated-vs-actual scatter, thumbnails, solver traces, and the study figures.

Every helper takes arrays or tidy tables and ``ax=``, draws, and returns what it drew.
"""

from .scatter import scatter_estimated_vs_actual, thumbnail, trace_plot
from .studies import (
    correlation_spread,
    correlation_vs,
    correlation_vs_eigenvalue,
    scatter_grid,
    solver_error,
    study_figures,
)

__all__ = [
    "correlation_spread", "correlation_vs", "correlation_vs_eigenvalue",
    "scatter_estimated_vs_actual", "scatter_grid", "solver_error", "study_figures", "thumbnail",
    "trace_plot",
]
