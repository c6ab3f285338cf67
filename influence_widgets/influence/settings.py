"""Settings of a solver: a frozen dataclass per solver, every field with its help and its bounds
(the generic machinery is :mod:`influence_widgets._settings`, shared with the ground truths)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from .._settings import ArgumentTypeError, FieldInfo, Settings, scalar, setting

__all__ = ["FieldInfo", "Settings", "SolverSettings", "check_damping", "setting"]


@dataclass(frozen=True)
class SolverSettings(Settings):
    """Base class of every solver's settings (no fields of its own)."""

    KIND: ClassVar[str] = "solver"
    UNKNOWN_NOTE: ClassVar[str] = " (damping is an argument of its own)"


def check_damping(damping: Any) -> float:
    """``damping`` as a float (numpy and 0-d torch numbers included), or a ``ValueError`` unless
    it is a finite number >= 0 (an :class:`ArgumentTypeError`, a ``TypeError`` too, for text
    and other types)."""
    damping = scalar(damping)
    if isinstance(damping, bool) or not isinstance(damping, int | float):
        raise ArgumentTypeError(f"damping must be a finite number >= 0, got {type(damping).__name__} "
                                f"{damping!r}; pass a number, e.g. damping=0.01 (it is added to "
                                "the curvature as (H + damping I))")
    if not (math.isfinite(damping) and damping >= 0):
        raise ValueError(f"damping must be a finite number >= 0, got {damping!r}; it is added to "
                         "the curvature as (H + damping I)")
    return float(damping)
