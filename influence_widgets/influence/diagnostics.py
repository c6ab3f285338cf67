"""What a solver measured, typed: one dataclass per solver, declared by the solver class
(``Solver.Diagnostics``), that also says what its numbers mean for the answer
(:meth:`Diagnostics.findings`).

A diagnostics object reads like the plain dict it replaces (``d["min_eigenvalue"]``,
``d.get("restarts")``, ``dict(d)``: the fields that were measured, never the ``None`` ones), so
results and notebooks keep working, but the package reads its fields as attributes: a renamed
field is an error where it is read, not a silent ``None``. The package's own solvers are strict
(a key they report that is not a field is a ``TypeError``); a user's solver that keeps the base
class may report anything, kept in ``extra``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .._findings import (
    Finding,
    indefinite_finding,
    lissa_inexact_finding,
    lissa_restarted_finding,
    not_converged_finding,
)


@dataclass
class Diagnostics(Mapping):
    """What every solver may report; its own solver's subclass adds the rest.

    ``min_eigenvalue`` (when known) drives the indefinite-curvature finding; ``converged`` False
    means the answer is inexact (a solver's own finding says why)."""

    STRICT: ClassVar[bool] = False

    solver: str = ""
    damping: float | None = None
    n_params: int | None = None
    top_eigenvalue: float | None = None
    min_eigenvalue: float | None = None
    n_negative: int | None = None
    converged: bool | None = None
    residual: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Diagnostics:
        """From the ``key=value`` pairs a solver reported; a key that is not a field is kept in
        ``extra``, or, for a strict class (the package's solvers), a ``TypeError``."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in values.items() if k in names}
        unknown = {k: v for k, v in values.items() if k not in names}
        if unknown and cls.STRICT:
            raise TypeError(f"{cls.__name__} has no field {', '.join(map(repr, sorted(unknown)))}; "
                            f"its fields are: {', '.join(sorted(names))}")
        return cls(**known, extra=unknown)

    # ------------------------------------------------------------------ the dict view
    def _view(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "extra" and getattr(self, f.name) is not None}
        out.update(self.extra)
        return out

    def __getitem__(self, key: str) -> Any:
        return self._view()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._view())

    def __len__(self) -> int:
        return len(self._view())

    def to_dict(self) -> dict[str, Any]:
        return self._view()

    # ------------------------------------------------------------------ what it means
    def findings(self, damping: float) -> tuple[Finding, ...]:
        """What these numbers say about the answer (the base: an indefinite curvature that
        the damping does not fix)."""
        lo = self.min_eigenvalue
        if lo is not None and math.isfinite(lo) and lo + damping <= 0:
            return (indefinite_finding(lo, damping),)
        return ()


@dataclass
class ExactDiagnostics(Diagnostics):
    STRICT: ClassVar[bool] = True

    factorization: str | None = None


@dataclass
class CGDiagnostics(Diagnostics):
    STRICT: ClassVar[bool] = True

    iterations: int | None = None
    tol: float | None = None
    residual_trace: list[float] | None = None
    block: bool | None = None
    precondition: int | None = None
    lanczos_products: int | None = None

    def findings(self, damping: float) -> tuple[Finding, ...]:
        out = super().findings(damping)
        if self.converged is False:
            out += (not_converged_finding("CG", self.iterations, self.residual, self.tol),)
        return out


@dataclass
class LiSSADiagnostics(Diagnostics):
    STRICT: ClassVar[bool] = True

    scale: float | None = None
    scale_source: str | None = None
    restarts: int | None = None
    steps: int | None = None
    repeats: int | None = None
    norm_trace: list[float] | None = None
    estimated_error: float | None = None
    residual_tol: float | None = None

    def findings(self, damping: float) -> tuple[Finding, ...]:
        out = super().findings(damping)
        if self.restarts:
            out += (lissa_restarted_finding(self.restarts, self.scale),)
        if self.converged is False:
            out += (lissa_inexact_finding(self.residual, self.residual_tol, self.steps,
                                          self.scale, self.scale_source),)
        return out


@dataclass
class ArnoldiDiagnostics(Diagnostics):
    STRICT: ClassVar[bool] = True

    rank: int | None = None
    complement: float | None = None


@dataclass
class FisherDiagnostics(Diagnostics):
    """The identity, diagonal, K-FAC and EK-FAC solvers."""

    STRICT: ClassVar[bool] = True

    curvature: str | None = None
    fisher: str | None = None
    chunk_size: int | None = None
    passes: int | None = None
    layers: list[str] | None = None
    factor_numbers: int | None = None
    null_directions: int | None = None
