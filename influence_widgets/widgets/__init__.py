"""Jupyter front ends: :class:`InfluenceExplorer` (estimates against leave-one-out retraining)."""

from .explorer import InfluenceExplorer
from .session import ExplorerSession, Outcome, Request

__all__ = ["ExplorerSession", "InfluenceExplorer", "Outcome", "Request"]
