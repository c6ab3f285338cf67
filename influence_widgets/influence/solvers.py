"""Inverse-HVP solvers behind one protocol: ``fit(objective)`` once, then ``inverse_hvp(V)``.

Every solver solves ``(H + damping * I) X = V`` for the same ``H`` (the objective's curvature,
weight decay included), for a batch ``V (k, p)`` of right-hand sides at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .objective import Objective, memory_budget

Progress = Callable[[int, int, dict[str, Any]], None]


class SolverError(RuntimeError):
    """A solver could not produce a trustworthy answer; the message says what to change."""


class NegativeCurvatureError(SolverError):
    pass


class DivergenceError(SolverError):
    pass


class HessianTooLargeError(MemoryError):
    pass


class Solver:
    """Base class: subclasses set ``name`` and implement :meth:`_fit` and :meth:`_solve`."""

    name: ClassVar[str] = ""

    def __init__(self, damping: float = 0.0, progress: Progress | None = None) -> None:
        if not (damping >= 0 and math.isfinite(damping)):
            raise ValueError(f"damping must be a finite number >= 0, got {damping}")
        self.damping = float(damping)
        self.progress = progress
        self.objective: Objective | None = None
        self.diagnostics: dict[str, Any] = {"solver": self.name}

    def fit(self, objective: Objective) -> Solver:
        self.objective = objective
        self._fit(objective)
        return self

    def inverse_hvp(self, V: torch.Tensor) -> torch.Tensor:
        """``(H + damping I)^{-1} V`` for ``V`` of shape ``(k, p)`` (or ``(p,)``)."""
        if self.objective is None:
            raise RuntimeError("call fit(objective) before inverse_hvp")
        single = V.dim() == 1
        V = V.unsqueeze(0) if single else V
        if V.shape[1] != self.objective.p:
            raise ValueError(f"vectors have {V.shape[1]} entries, the objective has {self.objective.p} parameters")
        X = self._solve(V.to(self.objective.device, self.objective.dtype))
        return X[0] if single else X

    def _report(self, step: int, total: int, info: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress(step, total, {"solver": self.name, **info})

    def _fit(self, objective: Objective) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _solve(self, V: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def _eigen_inverse(evals: torch.Tensor, evecs: torch.Tensor, damping: float, V: torch.Tensor) -> torch.Tensor:
    shifted = evals + damping
    tiny = torch.finfo(evals.dtype).eps * max(1.0, float(evals.abs().max()))
    inv = torch.where(shifted.abs() > tiny, 1.0 / shifted, torch.zeros_like(shifted))
    return ((V @ evecs) * inv) @ evecs.T


class ExactSolver(Solver):
    """Explicit curvature matrix, eigendecomposed once: a new damping costs no new Hessian."""

    name = "exact"

    def __init__(self, damping: float = 0.0, progress: Progress | None = None, max_bytes: int | None = None):
        super().__init__(damping, progress)
        self.max_bytes = max_bytes

    @staticmethod
    def required_bytes(p: int, itemsize: int) -> int:
        return 3 * p * p * itemsize  # matrix, eigenvectors, workspace

    def _fit(self, objective: Objective) -> None:
        need = self.required_bytes(objective.p, objective.dtype.itemsize)
        limit = self.max_bytes if self.max_bytes is not None else memory_budget(objective.device) * 2
        if need > limit:
            raise HessianTooLargeError(
                f"the exact solver needs about {need / 1e9:.2f} GB for a {objective.p} x {objective.p} "
                f"Hessian ({objective.dtype}), over the {limit / 1e9:.2f} GB allowed; use "
                "solver='cg', 'lissa' or 'arnoldi', or params='last_layer'"
            )
        H = objective.hessian(progress=self.progress)
        self.evals, self.evecs = torch.linalg.eigh(H)
        self.diagnostics.update(
            n_params=objective.p,
            top_eigenvalue=float(self.evals[-1]),
            min_eigenvalue=float(self.evals[0]),
            n_negative=int((self.evals < 0).sum()),
        )

    def _solve(self, V: torch.Tensor) -> torch.Tensor:
        return _eigen_inverse(self.evals, self.evecs, self.damping, V)


class CGSolver(Solver):
    """Batched conjugate gradient on ``H + damping I``; stops on negative curvature."""

    name = "cg"

    def __init__(self, damping: float = 0.0, progress: Progress | None = None, tol: float = 1e-8,
                 max_iter: int = 1000):
        super().__init__(damping, progress)
        if tol <= 0 or max_iter < 1:
            raise ValueError("cg needs tol > 0 and max_iter >= 1")
        self.tol, self.max_iter = tol, max_iter

    def _fit(self, objective: Objective) -> None:
        pass

    def _solve(self, V: torch.Tensor) -> torch.Tensor:
        A = lambda M: self.objective.hvp(M) + self.damping * M  # noqa: E731
        X = torch.zeros_like(V)
        R = V.clone()
        P = R.clone()
        rs = (R * R).sum(1)
        bnorm = V.norm(dim=1).clamp_min(torch.finfo(V.dtype).tiny)
        trace = []
        active = torch.ones(V.shape[0], dtype=torch.bool, device=V.device)
        it = 0
        for it in range(1, self.max_iter + 1):
            AP = A(P)
            pAp = (P * AP).sum(1)
            bad = active & (pAp <= 0)
            if bad.any():
                raise NegativeCurvatureError(
                    f"CG met negative curvature (p^T (H + damping I) p = {float(pAp[bad].min()):.3g}) at "
                    f"iteration {it}: H is indefinite here. Add damping (larger than the most negative "
                    "eigenvalue's magnitude), use curvature='ggn', or solver='exact'"
                )
            alpha = torch.where(active, rs / pAp.where(active, torch.ones_like(pAp)), torch.zeros_like(rs))
            X = X + alpha[:, None] * P
            R = R - alpha[:, None] * AP
            rs_new = (R * R).sum(1)
            rel = rs_new.sqrt() / bnorm
            trace.append(float(rel.max()))
            self._report(it, self.max_iter, {"residual": trace[-1]})
            active = rel > self.tol
            if not active.any():
                break
            beta = torch.where(active, rs_new / rs.clamp_min(torch.finfo(rs.dtype).tiny), torch.zeros_like(rs))
            P = R + beta[:, None] * P
            rs = rs_new
        if not torch.isfinite(X).all():
            raise DivergenceError("CG produced NaN/inf: add damping or use curvature='ggn'")
        self.diagnostics.update(iterations=it, residual=trace[-1], residual_trace=trace,
                                converged=trace[-1] <= self.tol)
        return X


def power_iteration(objective: Objective, iters: int = 20, seed: int = 0) -> float:
    """Largest-magnitude eigenvalue of the curvature by power iteration (for LiSSA's scale)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(objective.p, generator=g, dtype=objective.dtype).to(objective.device)
    v = v / v.norm()
    lam = 0.0
    for _ in range(iters):
        w = objective.hvp(v)
        lam = float(v @ w)
        nrm = w.norm()
        if nrm == 0:
            return 0.0
        v = w / nrm
    return abs(lam) if lam != 0 else float(nrm)


class LiSSASolver(Solver):
    """Stochastic Neumann-series recursion (Agarwal et al. 2016):
    ``h_j = v + (I - (H_batch + damping I) / scale) h_{j-1}``, answer ``h_J / scale``, averaged
    over ``repeats``. ``scale=None`` sets it from power iteration (``1.1 x`` the top eigenvalue).
    ``batch_size=None`` uses the full training set per step (deterministic).
    """

    name = "lissa"

    def __init__(self, damping: float = 0.0, progress: Progress | None = None, scale: float | None = None,
                 depth: int = 1000, repeats: int = 1, batch_size: int | None = None, seed: int = 0,
                 tol: float = 0.0):
        super().__init__(damping, progress)
        if depth < 1 or repeats < 1 or (scale is not None and scale <= 0):
            raise ValueError("lissa needs depth >= 1, repeats >= 1 and scale > 0 (or None for automatic)")
        self.scale, self.depth, self.repeats = scale, depth, repeats
        self.batch_size, self.seed, self.tol = batch_size, seed, tol

    def _fit(self, objective: Objective) -> None:
        if self.scale is None:
            lam = power_iteration(objective, seed=self.seed)
            self._scale = 1.1 * (lam + self.damping)
            self.diagnostics.update(scale=self._scale, scale_source=f"automatic: 1.1 x (top eigenvalue "
                                    f"{lam:.4g} from power iteration + damping)")
        else:
            self._scale = float(self.scale)
            self.diagnostics.update(scale=self._scale, scale_source="given")

    def _hvp_batch(self, M: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        obj = self.objective
        if self.batch_size is None or self.batch_size >= obj.n:
            return obj.hvp(M)
        idx = torch.randint(obj.n, (self.batch_size,), generator=g).to(obj.device)
        sub = Objective.__new__(Objective)
        sub.__dict__.update(obj.__dict__)
        sub.X, sub.y, sub.n = obj.X[idx], obj.y[idx], self.batch_size
        return sub.hvp(M)

    def _solve(self, V: torch.Tensor) -> torch.Tensor:
        s = self._scale
        total = torch.zeros_like(V)
        trace: list[float] = []
        g = torch.Generator().manual_seed(self.seed)
        vnorm = float(V.norm(dim=1).max()) or 1.0
        limit = 1e4 * vnorm * max(1.0, self.depth)
        for r in range(self.repeats):
            h = V.clone()
            for j in range(1, self.depth + 1):
                h_new = V + h - (self._hvp_batch(h, g) + self.damping * h) / s
                nrm = float(h_new.norm(dim=1).max())
                step = float((h_new - h).norm(dim=1).max())
                trace.append(nrm)
                if not math.isfinite(nrm) or nrm > limit:
                    raise DivergenceError(
                        f"LiSSA diverged at step {j} (norm {nrm:.3g}) with scale {s:.4g} and damping "
                        f"{self.damping:.3g}: increase scale (it must exceed the largest eigenvalue) "
                        "or add damping (H + damping I must be positive definite)"
                    )
                h = h_new
                if j % 10 == 0 or j == self.depth:
                    self._report(r * self.depth + j, self.repeats * self.depth, {"norm": nrm})
                if self.tol and step <= self.tol * nrm:
                    break
            total += h / s
        self.diagnostics.update(norm_trace=trace, steps=len(trace), repeats=self.repeats)
        return total / self.repeats


def lanczos(objective: Objective, k: int, n_iter: int | None = None, seed: int = 0,
            progress: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Ritz pairs of the curvature by Lanczos with full re-orthogonalisation: ``(evals, evecs (p, m))``."""
    p = objective.p
    m = min(p, n_iter or max(2 * k, k + 20))
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(p, generator=g, dtype=objective.dtype).to(objective.device)
    Q = torch.zeros(m, p, dtype=objective.dtype, device=objective.device)
    alpha, beta = [], []
    q = q / q.norm()
    b = 0.0
    for j in range(m):
        Q[j] = q
        w = objective.hvp(q)
        a = float(q @ w)
        w = w - a * q - (b * Q[j - 1] if j > 0 else 0.0)
        w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)  # full re-orthogonalisation, twice for safety
        w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
        alpha.append(a)
        b = float(w.norm())
        if progress is not None:
            progress(j + 1, m, {"stage": "lanczos"})
        if j + 1 < m:
            if b < 1e-10 * max(1.0, abs(a)):
                m = j + 1
                Q = Q[:m]
                break
            beta.append(b)
            q = w / b
    T = torch.diag(torch.tensor(alpha, dtype=objective.dtype))
    if beta:
        off = torch.tensor(beta[: len(alpha) - 1], dtype=objective.dtype)
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    evals, S = torch.linalg.eigh(T)
    return evals.to(objective.device), Q.T @ S.to(objective.device)


class ArnoldiSolver(Solver):
    """Top-``rank`` eigenpairs by Lanczos/Arnoldi (Schioppa et al. 2022); inverse on that subspace."""

    name = "arnoldi"

    def __init__(self, damping: float = 0.0, progress: Progress | None = None, rank: int = 20,
                 n_iter: int | None = None, seed: int = 0):
        super().__init__(damping, progress)
        if rank < 1:
            raise ValueError(f"arnoldi needs rank >= 1, got {rank}")
        self.rank, self.n_iter, self.seed = rank, n_iter, seed

    def _fit(self, objective: Objective) -> None:
        evals, evecs = lanczos(objective, self.rank, self.n_iter, self.seed, self.progress)
        keep = torch.argsort(evals.abs(), descending=True)[: self.rank]
        self.evals, self.evecs = evals[keep], evecs[:, keep]
        self.diagnostics.update(rank=int(keep.numel()), top_eigenvalue=float(self.evals.max()),
                                min_eigenvalue=float(self.evals.min()))

    def _solve(self, V: torch.Tensor) -> torch.Tensor:
        return _eigen_inverse(self.evals, self.evecs, self.damping, V)


SOLVERS: dict[str, type[Solver]] = {s.name: s for s in (ExactSolver, CGSolver, LiSSASolver, ArnoldiSolver)}


def make_solver(name: str, damping: float = 0.0, progress: Progress | None = None, **options: Any) -> Solver:
    """A solver by name; unknown names and options are clear errors."""
    try:
        cls = SOLVERS[name]
    except KeyError:
        raise ValueError(f"unknown solver {name!r}; valid names: {', '.join(SOLVERS)}") from None
    try:
        return cls(damping=damping, progress=progress, **options)
    except TypeError as e:
        raise TypeError(f"solver {name!r} got an unknown option: {e}") from None


@dataclass(frozen=True)
class SolverSettings:
    """The settings each solver takes (used to build widget controls)."""

    damping: float = 0.0
    tol: float = 1e-8
    max_iter: int = 1000
    scale: float | None = None
    depth: int = 1000
    repeats: int = 1
    batch_size: int | None = None
    rank: int = 20

    USED_BY: ClassVar[dict[str, tuple[str, ...]]] = {
        "exact": ("damping",),
        "cg": ("damping", "tol", "max_iter"),
        "lissa": ("damping", "scale", "depth", "repeats", "batch_size"),
        "arnoldi": ("damping", "rank"),
    }

    def options_for(self, solver: str) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.USED_BY[solver] if k != "damping"}
