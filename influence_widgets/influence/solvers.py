"""Inverse-HVP solvers behind one protocol: ``fit(objective)`` once, then ``solve(V, damping)``.

Every solver solves ``(H + damping * I) X = V`` for the same ``H`` (the objective's curvature,
weight decay included), for a batch ``V (k, p)`` of right-hand sides at once. Its settings are a
frozen dataclass of its own (:mod:`.settings`); the damping is an argument of each solve, so one
fit (an eigendecomposition, a Lanczos basis, a top eigenvalue) serves every damping. Solvers are
found by name in :data:`SOLVERS`: a new solver is one class (with its ``Settings``) and one
:func:`register_solver` line, and appears in ``iw.influence``, the CLI's ``list`` and the
explorer's controls.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .._settings import Registry
from .diagnostics import (
    ArnoldiDiagnostics,
    CGDiagnostics,
    Diagnostics,
    ExactDiagnostics,
    LiSSADiagnostics,
)
from .objective import Objective, memory_budget
from .settings import SolverSettings, check_damping, setting

Progress = Callable[[int, int, dict[str, Any]], None]


class SolverError(RuntimeError):
    """A solver could not produce a trustworthy answer; the message says what to change."""


class NegativeCurvatureError(SolverError):
    pass


class DivergenceError(SolverError):
    pass


class HessianTooLargeError(MemoryError):
    pass


class NotEnoughMemoryError(MemoryError):
    """A solve would need more memory than the device has available; the message says how much
    and what to change."""


@dataclass(frozen=True)
class Cost:
    """What a solver declares it needs, before it runs (its cost model).

    ``fit_products`` and ``solve_products``: curvature-vector products of the fit (once per
    setting) and of each solve (each product takes every right-hand side at once);
    ``fit_passes``: passes over the training set's per-sample gradients during the fit (besides
    the one every estimate makes); ``fit_bytes`` / ``solve_bytes``: the largest memory the fit
    and a solve of ``k`` vectors hold; ``bound``: the products are an upper bound (the solver
    may stop early), ``note`` says how they were counted. ``known=False``: the solver declared
    nothing, and the numbers are a cautious guess (as expensive as the exact solver)."""

    fit_products: int = 0
    solve_products: int = 0
    fit_passes: float = 0.0
    fit_bytes: int = 0
    solve_bytes: int = 0
    bound: bool = False
    note: str = ""
    known: bool = True


def available_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors on ``device`` now (CUDA: the allocator's free memory plus
    what it caches; CPU: the system's available memory, within a cgroup's limit), or None when
    it cannot be told. Used only to refuse a solve that cannot fit, never to size chunks."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit) as f:
                cap = f.read().strip()
            with open(usage) as f:
                used = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if cap.isdigit() and int(cap) < 1 << 60:
            # the page cache counts as used but is given back under pressure: leave out the
            # inactive part of it, as container runtimes do
            stat = limit.rsplit("/", 1)[0] + "/memory.stat"
            try:
                with open(stat) as f:
                    pairs = dict(line.split() for line in f if line.count(" ") == 1)
                used -= int(pairs.get("inactive_file", pairs.get("total_inactive_file", 0)))
            except (OSError, ValueError):
                pass
            found.append(max(0, int(cap) - max(0, used)))
        break
    return min(found) if found else None


def _gb(b: float) -> str:
    return f"{b / 1e9:.2f} GB"


def check_memory(cls: type[Solver], settings: SolverSettings, objective: Objective, n_test: int,
                 available: int | None = None) -> None:
    """Refuse, before anything is allocated, a solve whose test gradients (``n_test x p``) and
    solver (its declared :class:`Cost`) would not fit in the memory available on the device,
    with a :class:`NotEnoughMemoryError` that says how much and what to change."""
    p, item = objective.p, objective.dtype.itemsize
    cost = cls.cost(settings, p, objective.n, n_test, item)
    grads = n_test * p * item
    own = max(cost.fit_bytes, cost.solve_bytes) if cost.known else 0  # a guess refuses nothing
    need = grads + own
    free = available_bytes(objective.device) if available is None else available
    if free is None or need <= free:
        return
    raise NotEnoughMemoryError(
        f"solver {cls.name!r} on {p:,} parameters needs about {_gb(need)} ({_gb(grads)} for the "
        f"{n_test} test gradients, {_gb(own)} for the solver), "
        f"but only {_gb(free)} is available on {objective.device}; score fewer test points at "
        "once (test_indices=...), restrict the parameters (params='last_layer'), use a solver "
        "that needs less (arnoldi with a smaller rank, kfac, identity), or free memory")


@dataclass
class Solve:
    """One solve's answer ``X (k, p)`` and what the solver measured on the way (its typed
    :class:`~.diagnostics.Diagnostics`, which also read as a dict)."""

    X: torch.Tensor
    diagnostics: Diagnostics


class Solver:
    """Base class: subclasses set ``name``, ``label``, ``Settings`` and implement :meth:`_fit`
    and :meth:`_solve`.

    ``fit`` computes what every damping shares (and records it in ``fit_diagnostics``);
    ``solve(V, damping)`` validates the damping and returns the answer with the diagnostics of
    the fit and of this solve. A fitted solver is never reconfigured from outside: a different
    setting is a different solver.
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""  # the name shown in the explorer and the CLI
    summary: ClassVar[str] = ""  # one line: what it computes and when to use it
    #: True for a baseline that leaves the curvature out (gradient dot products, a diagonal):
    #: what a curvature-aware solver must beat (the studies compare each of the others with it)
    baseline: ClassVar[bool] = False
    Settings: ClassVar[type[SolverSettings]] = SolverSettings
    #: What its fits and solves report (typed; the base class keeps unknown keys in ``extra``)
    Diagnostics: ClassVar[type[Diagnostics]] = Diagnostics

    @classmethod
    def cost(cls, settings: SolverSettings, p: int, n: int, k: int, itemsize: int) -> Cost:
        """What a fit and a solve of ``k`` vectors need on ``p`` parameters and ``n`` training
        rows (:class:`Cost`). A solver that does not declare it is assumed to be as expensive
        as the exact solver (``p`` products, ``p x p`` memory), never free."""
        return Cost(fit_products=p, fit_passes=2.0, fit_bytes=p * p * itemsize,
                    solve_bytes=2 * k * p * itemsize, known=False,
                    note=f"{cls.name}: declares no cost model; assumed as expensive as the exact "
                         f"solver ({p} products)")

    def __init__(self, settings: SolverSettings | None = None) -> None:
        settings = self.Settings() if settings is None else settings
        if not isinstance(settings, self.Settings):
            raise TypeError(f"solver {self.name!r} takes {self.Settings.__name__}, "
                            f"got {type(settings).__name__}")
        self.settings = settings
        self.objective: Objective | None = None
        self.fit_diagnostics: dict[str, Any] = {}  # what the fit reports, for every solve
        self.diagnostics: Diagnostics = self.Diagnostics(solver=self.name)  # of the last solve
        self._progress: Progress | None = None

    def fit(self, objective: Objective, progress: Progress | None = None) -> Solver:
        self.objective = objective
        self.fit_diagnostics = {"solver": self.name}
        self._progress = progress
        try:
            self._fit(objective)
        finally:
            self._progress = None
        self.diagnostics = self.Diagnostics.of(self.fit_diagnostics)
        return self

    def solve(self, V: torch.Tensor, damping: float = 0.0, progress: Progress | None = None) -> Solve:
        """``(H + damping I)^{-1} V`` for ``V`` of shape ``(k, p)`` (or ``(p,)``), with diagnostics."""
        damping = check_damping(damping)
        if self.objective is None:
            raise RuntimeError("call fit(objective) before solving")
        single = V.dim() == 1
        V = V.unsqueeze(0) if single else V
        if V.shape[1] != self.objective.p:
            raise ValueError(f"vectors have {V.shape[1]} entries, the objective has {self.objective.p} parameters")
        info: dict[str, Any] = {}
        self._progress = progress
        try:
            X = self._solve(V.to(self.objective.device, self.objective.dtype), damping, info)
        finally:
            self._progress = None
        diag = self.Diagnostics.of({**self.fit_diagnostics, **info, "damping": damping})
        self.diagnostics = diag
        return Solve(X[0] if single else X, diag)

    def inverse_hvp(self, V: torch.Tensor, damping: float = 0.0, progress: Progress | None = None) -> torch.Tensor:
        """``(H + damping I)^{-1} V`` (see :meth:`solve`)."""
        return self.solve(V, damping, progress).X

    def _report(self, step: int, total: int, info: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress(step, total, {"solver": self.name, **info})

    def _fit(self, objective: Objective) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _solve(self, V: torch.Tensor, damping: float, info: dict[str, Any]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def _eigen_inverse(evals: torch.Tensor, evecs: torch.Tensor, damping: float, V: torch.Tensor) -> torch.Tensor:
    shifted = evals + damping
    tiny = torch.finfo(evals.dtype).eps * max(1.0, float(evals.abs().max()))
    inv = torch.where(shifted.abs() > tiny, 1.0 / shifted, torch.zeros_like(shifted))
    return ((V @ evecs) * inv) @ evecs.T


@dataclass(frozen=True)
class ExactSettings(SolverSettings):
    """Settings of the exact solver."""

    method: str = setting("auto", "eigh: eigendecompose H once (every damping is then free, and "
                          "the whole spectrum is known); cholesky: factorise H + damping I once "
                          "per damping (many times cheaper for large p); auto: up to 320 "
                          "parameters the spectrum (eigenvalues only, half the cost of eigh) and "
                          "a Cholesky factor per damping, the eigendecomposition where H + "
                          "damping I is not positive definite; above, cholesky",
                          choices=("auto", "eigh", "cholesky"))
    max_bytes: int | None = setting(None, "memory the p x p matrices may take, in bytes (blank: "
                                    "half of the device's memory budget)", minimum=1,
                                    advanced=True, blank="from memory")


class ExactSolver(Solver):
    """The explicit curvature matrix, factorised once: a new damping costs no new Hessian.

    Builds ``H`` (p x p) from batched HVPs on identity columns, so it needs about ``3 p^2``
    numbers of memory, and refuses (:class:`HessianTooLargeError`, naming the bytes and what to
    use instead) a Hessian that would not fit.
    """

    name = "exact"
    label = "exact"
    summary = "the explicit Hessian, eigendecomposed or factorised: exact up to rounding; small models"
    Settings = ExactSettings
    Diagnostics = ExactDiagnostics
    EIGH_MAX: ClassVar[int] = 320

    @staticmethod
    def required_bytes(p: int, itemsize: int) -> int:
        return 3 * p * p * itemsize  # matrix, eigenvectors or factor, workspace

    @classmethod
    def cost(cls, settings: SolverSettings, p: int, n: int, k: int, itemsize: int) -> Cost:
        return Cost(fit_products=p, fit_bytes=cls.required_bytes(p, itemsize),
                    solve_bytes=2 * k * p * itemsize)

    def _fit(self, objective: Objective) -> None:
        st = self.settings
        need = self.required_bytes(objective.p, objective.dtype.itemsize)
        limit = st.max_bytes if st.max_bytes is not None else memory_budget(objective.device) * 2
        if need > limit:
            raise HessianTooLargeError(
                f"the exact solver needs about {need:,} bytes ({need / 1e9:.2f} GB) for a "
                f"{objective.p} x {objective.p} Hessian ({objective.dtype}), over the {limit:,} bytes "
                f"({limit / 1e9:.2f} GB) allowed; use solver='cg', 'lissa' or 'arnoldi', or "
                "params='last_layer'"
            )
        H = objective.hessian(progress=self._progress)
        diag = self.fit_diagnostics
        diag.update(n_params=objective.p)
        self._factors: dict[float, tuple] = {}
        self.H, self.evals, self.evecs, self.spectrum = H, None, None, None
        if st.method == "eigh":
            self.evals, self.evecs = torch.linalg.eigh(H)
            self.spectrum, self.H = self.evals, None
        elif st.method == "auto" and objective.p <= self.EIGH_MAX:
            self.spectrum = torch.linalg.eigvalsh(H)  # half the time of eigh at p = 133
        if self.spectrum is not None:
            diag.update(
                factorization="eigh" if self.evecs is not None else "cholesky",
                top_eigenvalue=float(self.spectrum[-1]),
                min_eigenvalue=float(self.spectrum[0]),
                n_negative=int((self.spectrum < 0).sum()),
            )
        else:
            diag.update(factorization="cholesky")
            top, _, _ = _lanczos(lambda v: H @ v, H.shape[0], H.dtype, H.device, min(H.shape[0], 30))
            diag.update(top_eigenvalue=float(top.max()))

    def _pseudo_inverse_needed(self, damping: float) -> bool:
        """Whether ``H + damping I`` (spectrum known) is not safely positive definite: then the
        eigendecomposition solves it, inverting no eigenvalue within rounding of 0."""
        if self.spectrum is None:
            return False
        tiny = torch.finfo(self.spectrum.dtype).eps * max(1.0, float(self.spectrum.abs().max()))
        return float(self.spectrum[0]) + damping <= tiny

    def _factor(self, damping: float) -> tuple[tuple, dict[str, Any]]:
        """The factor of ``H + damping I`` (cached for the last two dampings) and what it says."""
        hit = self._factors.get(damping)
        if hit is not None:
            return hit
        A = self.H.clone()
        A.diagonal().add_(damping)
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) == 0:
            hit = (("cholesky", L), {"factorization": "cholesky"})
        else:
            del L
            lu, pivots, singular = torch.linalg.lu_factor_ex(A)
            if int(singular) == 0:
                lo = _smallest_eigenvalue(self.H)
                hit = (("lu", lu, pivots), {"factorization": "lu",
                                            "min_eigenvalue": min(lo, -damping),
                                            "n_negative": None})
            else:  # exactly singular (a degenerate model, no damping): the eigh path's
                # pseudo-inverse, as for small models, instead of a division by zero
                del lu, pivots
                evals, evecs = torch.linalg.eigh(self.H)
                hit = (("eigh", evals, evecs),
                       {"factorization": "eigh (H + damping I is singular: pseudo-inverse)",
                        "min_eigenvalue": float(evals[0]),
                        "n_negative": int((evals < 0).sum())})
        del A
        if len(self._factors) >= 2:  # each factor is p x p: keep the last two dampings
            self._factors.pop(next(iter(self._factors)))
        self._factors[damping] = hit
        return hit

    def _solve(self, V: torch.Tensor, damping: float, info: dict[str, Any]) -> torch.Tensor:
        if self.evecs is None and self._pseudo_inverse_needed(damping):
            self.evals, self.evecs = torch.linalg.eigh(self.H)  # once, for every such damping
        if self.evecs is not None and (self.settings.method == "eigh"
                                       or self._pseudo_inverse_needed(damping)):
            info.update(factorization="eigh")
            return _eigen_inverse(self.evals, self.evecs, damping, V)
        f, what = self._factor(damping)
        info.update(what)
        if f[0] == "cholesky":
            return torch.cholesky_solve(V.T, f[1]).T
        if f[0] == "eigh":
            return _eigen_inverse(f[1], f[2], damping, V)
        return torch.linalg.lu_solve(f[1], f[2], V.T).T


def _smallest_eigenvalue(H: torch.Tensor, n_iter: int = 100) -> float:
    """The smallest eigenvalue of a symmetric matrix by Lanczos on its products (exact up to
    ``n_iter`` rows; an upper bound on it, usually close, for larger matrices)."""
    evals, _, _ = _lanczos(lambda v: H @ v, H.shape[0], H.dtype, H.device, min(H.shape[0], n_iter))
    return float(evals.min())


@dataclass(frozen=True)
class CGSettings(SolverSettings):
    """Settings of conjugate gradient."""

    tol: float = setting(1e-8, "stop when every vector's relative residual ||b - A x|| / ||b|| is "
                         "below this (raised to 10 x the dtype's rounding when smaller)", above=0)
    max_iter: int = setting(1000, "CG iteration limit (one batched Hessian-vector product each)",
                            minimum=1)
    block: bool = setting(True, "all vectors share one Krylov space (block CG): fewer iterations "
                          "when several test points are solved at once", advanced=True)
    precondition: int = setting(0, "top eigenpairs (by Lanczos, at fit time) for a spectral "
                                "preconditioner; 0: none", minimum=0, advanced=True)
    seed: int = setting(0, "seed of the Lanczos start vector of the preconditioner", advanced=True)


class CGSolver(Solver):
    """Conjugate gradient on ``H + damping I``; stops on negative curvature.

    With ``block=True`` (default) all right-hand sides share one Krylov space (block CG in
    Dubrulle's QR form, stable when residuals become dependent): each iteration costs one batched
    HVP, as plain batched CG does, and converges in far fewer iterations when ``k`` vectors are
    solved at once. ``block=False`` runs independent CG on each vector.
    """

    name = "cg"
    label = "CG"
    summary = "conjugate gradient on Hessian-vector products: exact at convergence; needs H + damping I > 0"
    Settings = CGSettings
    Diagnostics = CGDiagnostics

    #: CG is expected to need min(max_iter, p) / SHARE products (at most all): measured 0.19
    #: (the Hessian with a damping) to 0.36 (GGN) of min(1000, 1898) on digits-cnn
    SHARE: ClassVar[int] = 4

    @classmethod
    def cost(cls, settings: SolverSettings, p: int, n: int, k: int, itemsize: int) -> Cost:
        r = min(settings.precondition, p)
        lanczos = min(p, 2 * r + 10) if r else 0
        bound = min(settings.max_iter, p)
        return Cost(fit_products=lanczos, solve_products=math.ceil(bound / cls.SHARE),
                    fit_bytes=(lanczos + r) * p * itemsize, solve_bytes=6 * k * p * itemsize,
                    bound=True, note=f"CG stops once converged: 1/{cls.SHARE} of its {bound} "
                    f"products assumed, up to {cls.SHARE}x more")

    def _fit(self, objective: Objective) -> None:
        self._ritz: tuple[torch.Tensor, torch.Tensor] | None = None
        st = self.settings
        if st.precondition:
            # Top eigenpairs by Lanczos, for a spectral preconditioner M = U (L + d) U^T +
            # c (I - U U^T), c the smallest kept L + d: it maps the top of the spectrum to 1.
            r = min(st.precondition, objective.p)
            m = min(objective.p, 2 * r + 10)
            evals, evecs, _ = _lanczos(objective.hvp, objective.p, objective.dtype, objective.device,
                                       m, st.seed)
            top = torch.argsort(evals, descending=True)[:r]
            self._ritz = (evals[top], evecs[:, top].contiguous())
            self.fit_diagnostics.update(precondition=r, lanczos_products=m)

    def _scaler(self, damping: float) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """``M^{-1/2}`` applied to the rows of a matrix, or ``None`` (no usable preconditioner)."""
        if self._ritz is None:
            return None
        lam, U = self._ritz
        mu = lam + damping
        c = float(mu.min())
        if c <= 0:  # H + damping I is not positive there: let CG meet and report it
            return None
        w = mu.rsqrt() - c**-0.5

        def scale(M: torch.Tensor) -> torch.Tensor:
            return c**-0.5 * M + ((M @ U) * w) @ U.T

        return scale

    @staticmethod
    def _negative(value: float, it: int) -> NegativeCurvatureError:
        return NegativeCurvatureError(
            f"CG met negative curvature (p^T (H + damping I) p = {value:.3g}) at iteration {it}: "
            "H is indefinite here. Add damping (larger than the most negative eigenvalue's "
            "magnitude), use curvature='ggn', or solver='exact'"
        )

    def _solve(self, V: torch.Tensor, damping: float, info: dict[str, Any]) -> torch.Tensor:
        st = self.settings
        hvp = self.objective.hvp

        def A(M: torch.Tensor) -> torch.Tensor:
            return hvp(M) + damping * M

        P = self._scaler(damping)
        if P is not None:  # solve (P A P) Y = P V, then X = P Y, with P = M^{-1/2} symmetric
            plain = A
            A = lambda M: P(plain(P(M)))  # noqa: E731
            V = P(V)
        # a residual far below the rounding of the dtype cannot be reached reliably (float32)
        tol = max(st.tol, 10 * torch.finfo(V.dtype).eps)
        if st.block and V.shape[0] > 1:
            X, it, trace = self._solve_block(V, A, tol)
        else:
            X, it, trace = self._solve_plain(V, A, tol)
        if P is not None:
            X = P(X)
        if not torch.isfinite(X).all():
            raise DivergenceError("CG produced NaN/inf: add damping or use curvature='ggn'")
        info.update(iterations=it, residual=trace[-1], residual_trace=trace,
                    converged=trace[-1] <= tol, tol=tol, block=st.block)
        return X

    def _solve_plain(self, V: torch.Tensor, A: Callable[[torch.Tensor], torch.Tensor], tol: float
                     ) -> tuple[torch.Tensor, int, list[float]]:
        X = torch.zeros_like(V)
        R = V.clone()
        P = R.clone()
        rs = (R * R).sum(1)
        bnorm = V.norm(dim=1).clamp_min(torch.finfo(V.dtype).tiny)
        trace = []
        active = torch.ones(V.shape[0], dtype=torch.bool, device=V.device)
        it = 0
        for it in range(1, self.settings.max_iter + 1):
            AP = A(P)
            pAp = (P * AP).sum(1)
            bad = active & (pAp <= 0)
            if bad.any():
                raise self._negative(float(pAp[bad].min()), it)
            alpha = torch.where(active, rs / pAp.where(active, torch.ones_like(pAp)), torch.zeros_like(rs))
            X = X + alpha[:, None] * P
            R = R - alpha[:, None] * AP
            rs_new = (R * R).sum(1)
            rel = rs_new.sqrt() / bnorm
            trace.append(float(rel.max()))
            self._report(it, self.settings.max_iter, {"residual": trace[-1]})
            active = rel > tol
            if not active.any():
                break
            beta = torch.where(active, rs_new / rs.clamp_min(torch.finfo(rs.dtype).tiny), torch.zeros_like(rs))
            P = R + beta[:, None] * P
            rs = rs_new
        return X, it, trace

    def _solve_block(self, V: torch.Tensor, A: Callable[[torch.Tensor], torch.Tensor], tol: float
                     ) -> tuple[torch.Tensor, int, list[float]]:
        # Dubrulle (2001), BCGrQ: residual R = Q C with Q orthonormal, search directions S.
        B = V.T  # (p, k): columns are right-hand sides
        bnorm = B.norm(dim=0).clamp_min(torch.finfo(V.dtype).tiny)
        zero = bnorm <= torch.finfo(V.dtype).tiny
        X = torch.zeros_like(B)
        Q, C = torch.linalg.qr(B)
        S = Q
        eps = torch.finfo(V.dtype).eps
        trace: list[float] = []
        it = 0
        for it in range(1, self.settings.max_iter + 1):
            T = A(S.T).T
            StT = S.T @ T
            w, U = torch.linalg.eigh(0.5 * (StT + StT.T))
            wmax = float(w.abs().max())
            if float(w[0]) < -100 * eps * max(wmax, 1e-300) * S.shape[1]:
                raise self._negative(float(w[0]), it)
            inv = torch.where(w > eps * S.shape[1] * wmax, 1.0 / w, torch.zeros_like(w))
            alpha = (U * inv) @ U.T
            X = X + S @ (alpha @ C)
            Q, xi = torch.linalg.qr(Q - T @ alpha)
            S = Q + S @ xi.T
            C = xi @ C
            rel = (C.norm(dim=0) / bnorm).masked_fill(zero, 0.0)
            trace.append(float(rel.max()))
            self._report(it, self.settings.max_iter, {"residual": trace[-1]})
            if trace[-1] <= tol:
                break
        return X.T.contiguous(), it, trace


def power_iteration(objective: Objective, iters: int = 20, seed: int = 0) -> float:
    """Largest-magnitude eigenvalue of the curvature by power iteration."""
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


def top_eigenvalue(objective: Objective, n_iter: int = 30, seed: int = 0) -> tuple[float, float]:
    """The largest eigenvalue of the curvature by Lanczos, and the residual norm of its Ritz pair
    (an eigenvalue lies within that distance of the estimate)."""
    evals, _, resid = _lanczos(objective.hvp, objective.p, objective.dtype, objective.device,
                               min(objective.p, n_iter), seed)
    i = int(torch.argmax(evals))
    return float(evals[i]), float(resid[i])


@dataclass(frozen=True)
class LiSSASettings(SolverSettings):
    """Settings of LiSSA (``depth`` and ``tol`` are the old names of ``steps`` and ``error_tol``)."""

    ALIASES: ClassVar[dict[str, str]] = {"depth": "steps", "tol": "error_tol"}

    scale: float | None = setting(None, "divides H + damping I: must exceed half its largest "
                                  "eigenvalue with full-batch steps (the largest with "
                                  "mini-batches), else the recursion diverges; blank: automatic "
                                  "(from the top eigenvalue by Lanczos)", above=0, blank="automatic")
    steps: int = setting(1000, "recursion steps per repeat (terms of the Neumann series)", minimum=1)
    repeats: int = setting(1, "independent repeats averaged (only differ with mini-batches)",
                           minimum=1)
    batch_size: int | None = setting(None, "training points per Hessian-vector product (blank: "
                                     "the full training set, deterministic)", minimum=1,
                                     blank="full batch")
    error_tol: float = setting(0.0, "stop a repeat early once the estimated relative error of "
                               "every vector is below this (0: always run all steps)", minimum=0,
                               advanced=True)
    seed: int = setting(0, "seed of the mini-batch draws and of the Lanczos start vector",
                        advanced=True)
    residual_tol: float = setting(0.1, "after the solve, one full-batch product measures each "
                                  "vector's relative residual ||v - (H + damping I) x|| / ||v||; "
                                  "above this the answer is reported as inexact (a warning: "
                                  "too few steps or too large a scale); 0: no check",
                                  minimum=0, advanced=True)


class LiSSASolver(Solver):
    """Neumann-series recursion (Agarwal et al. 2016):
    ``h_j = v + (I - (H_batch + damping I) / scale) h_{j-1}``, answer ``h_J / scale`` after
    ``steps`` steps, averaged over ``repeats``. ``batch_size=None`` uses the full training set per
    step (deterministic).

    ``scale=None`` sets it from the top eigenvalue ``lambda`` of ``H + damping I`` (Lanczos, with
    its error bound added): ``0.52 lambda`` for full-batch steps, where any scale above
    ``lambda / 2`` converges and ``lambda / 2`` is the fastest (Richardson's optimal step when the
    smallest eigenvalue is near 0); ``1.1 lambda`` for mini-batch steps, whose Hessians have larger
    eigenvalues. If the recursion diverges with an automatic scale, the scale is doubled and the
    solve restarted (up to three times; recorded in the diagnostics). ``error_tol > 0`` stops a
    repeat (before ``steps``) once the estimated relative error of every vector is below it: the
    recursion is linear, so its increments shrink by a measured rate ``rho`` per step and the rest
    of the series sums to about ``increment * rho / (1 - rho)`` (full-batch steps; mini-batch noise
    keeps the estimate high).
    """

    name = "lissa"
    label = "LiSSA"
    summary = "stochastic Neumann series (Agarwal et al. 2016): approximate; needs a valid scale"
    Settings = LiSSASettings
    Diagnostics = LiSSADiagnostics

    LANCZOS: ClassVar[int] = 30  # products of the automatic scale's top eigenvalue

    @classmethod
    def cost(cls, settings: SolverSettings, p: int, n: int, k: int, itemsize: int) -> Cost:
        share = (settings.batch_size or n) / n
        solve = math.ceil(settings.repeats * settings.steps * min(1.0, share))
        return Cost(fit_products=cls.LANCZOS if settings.scale is None else 0,
                    solve_products=solve + (1 if settings.residual_tol else 0),
                    fit_bytes=cls.LANCZOS * p * itemsize, solve_bytes=5 * k * p * itemsize,
                    bound=bool(settings.error_tol))

    @property
    def _stochastic(self) -> bool:
        b = self.settings.batch_size
        return b is not None and b < self.objective.n

    def _fit(self, objective: Objective) -> None:
        self._top: tuple[float, float] | None = None
        if self.settings.scale is None:
            self._top = top_eigenvalue(objective, seed=self.settings.seed)

    def _auto_scale(self, damping: float) -> tuple[float, str]:
        lam, err = self._top
        factor = 1.1 if self._stochastic else 0.52
        return factor * (abs(lam) + err + damping), (
            f"automatic: {factor} x (top eigenvalue {lam:.6g} from Lanczos + its error bound "
            f"{err:.2g} + damping {damping:.3g})")

    def _hvp_batch(self, M: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        obj = self.objective
        if not self._stochastic:
            return obj.hvp(M)
        idx = torch.randint(obj.n, (self.settings.batch_size,), generator=g)
        return obj.hvp(M, rows=idx)

    def _solve(self, V: torch.Tensor, damping: float, info: dict[str, Any]) -> torch.Tensor:
        auto = self.settings.scale is None
        if auto:
            scale, source = self._auto_scale(damping)
        else:
            scale, source = float(self.settings.scale), "given"
        restarts = 0
        while True:
            try:
                out = self._recursion(V, damping, scale, info)
                break
            except DivergenceError:
                if not auto or restarts >= 3:
                    raise
                restarts += 1
                scale *= 2.0
        info.update(restarts=restarts, scale=scale, scale_source=source)
        tol = self.settings.residual_tol
        if tol:
            # One full-batch product: how far the truncated series is from the solve it stands
            # for (the relative residual is about the relative error of the answer when the
            # recursion is cut short or its scale is too large: both leave the small-eigenvalue
            # directions unsolved).
            A_x = self.objective.hvp(out) + damping * out
            rel = (V - A_x).norm(dim=1) / V.norm(dim=1).clamp_min(torch.finfo(V.dtype).tiny)
            residual = float(rel.max())
            info.update(residual=residual, residual_tol=tol, converged=residual <= tol)
        return out

    def _recursion(self, V: torch.Tensor, damping: float, s: float, info: dict[str, Any]) -> torch.Tensor:
        st = self.settings
        total = torch.zeros_like(V)
        trace: list[float] = []
        g = torch.Generator().manual_seed(st.seed)
        vnorm = float(V.norm(dim=1).max()) or 1.0
        limit = 1e4 * vnorm * max(1.0, st.steps)
        every = 10  # norms (divergence check, trace) every 10 steps: each costs a sync on GPUs
        keep = 1.0 - damping / s
        steps, estimate = 0, float("inf")
        window = 10  # steps between the increments compared for the error estimate
        for r in range(st.repeats):
            h = V.clone()
            prev, hits = None, 0
            for j in range(1, st.steps + 1):
                h_new = self._hvp_batch(h, g).div_(-s).add_(h, alpha=keep).add_(V)
                steps += 1
                if j % every == 0 or j == st.steps:
                    hn = h_new.norm(dim=1)
                    nrm = float(hn.max())
                    trace.append(nrm)
                    if not math.isfinite(nrm) or nrm > limit:
                        raise DivergenceError(
                            f"LiSSA diverged at step {j} (norm {nrm:.3g}) with scale {s:.4g} and damping "
                            f"{damping:.3g}: increase scale (it must exceed half the largest "
                            "eigenvalue of H + damping I, and the largest for mini-batches) or add "
                            "damping (H + damping I must be positive definite)"
                        )
                if st.error_tol and j % window == 0:
                    # A linear recursion: increments shrink by a rate rho per step, and what is
                    # still to come sums to about increment * rho / (1 - rho).
                    inc = (h_new - h).norm(dim=1)
                    if prev is not None:
                        rho = (inc / prev.clamp_min(torch.finfo(inc.dtype).tiny)) ** (1.0 / window)
                        err = torch.where(rho < 1, inc * rho / (1 - rho).clamp_min(1e-300),
                                          torch.full_like(inc, float("inf")))
                        estimate = float((err / h_new.norm(dim=1).clamp_min(torch.finfo(inc.dtype).tiny)).max())
                        hits = hits + 1 if estimate <= st.error_tol else 0
                    prev = inc
                h = h_new
                if j % 10 == 0 or j == st.steps:
                    self._report(r * st.steps + j, st.repeats * st.steps, {"norm": trace[-1]})
                if hits >= 3:
                    break
            total += h / s
        info.update(norm_trace=trace, steps=steps, repeats=st.repeats,
                    estimated_error=estimate if st.error_tol else None)
        return total / st.repeats


def _lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], p: int, dtype: torch.dtype,
             device: torch.device, m: int, seed: int = 0, progress: Progress | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lanczos with full re-orthogonalisation: Ritz values, Ritz vectors ``(p, m)`` and the
    residual norm of each Ritz pair."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(p, generator=g, dtype=dtype).to(device)
    Q = torch.zeros(m, p, dtype=dtype, device=device)
    alpha, beta = [], []
    q = q / q.norm()
    b = 0.0
    for j in range(m):
        Q[j] = q
        w = matvec(q)
        a = float(q @ w)
        w = w - a * q - (b * Q[j - 1] if j > 0 else 0.0)
        w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)  # full re-orthogonalisation, twice for safety
        w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
        alpha.append(a)
        b = float(w.norm())
        if progress is not None:
            progress(j + 1, m, {"stage": "lanczos"})
        if j + 1 == m:
            break
        if b < 1e-10 * max(1.0, abs(a)):
            # An invariant subspace is found (a repeated eigenvalue shows up once per Krylov
            # space): go on from a fresh random vector orthogonal to it.
            w = torch.randn(p, generator=g, dtype=dtype).to(device)
            for _ in range(2):
                w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
            b = 0.0
            q = w / w.norm()
        else:
            q = w / b
        beta.append(b)
    T = torch.diag(torch.tensor(alpha, dtype=dtype))
    if beta:
        off = torch.tensor(beta[: len(alpha) - 1], dtype=dtype)
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    evals, S = torch.linalg.eigh(T)
    resid = (b * S[-1]).abs()
    return evals.to(device), Q.T @ S.to(device), resid


def lanczos(objective: Objective, k: int, n_iter: int | None = None, seed: int = 0,
            progress: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Ritz pairs of the curvature by Lanczos with full re-orthogonalisation: ``(evals, evecs (p, m))``."""
    m = min(objective.p, n_iter or max(2 * k, k + 20))
    evals, evecs, _ = _lanczos(objective.hvp, objective.p, objective.dtype, objective.device, m, seed, progress)
    return evals, evecs


@dataclass(frozen=True)
class ArnoldiSettings(SolverSettings):
    """Settings of the Arnoldi (Lanczos) low-rank solver."""

    rank: int = setting(20, "eigenpairs kept: those whose data curvature (eigenvalue minus the "
                        "weight decay) is largest in magnitude; outside their span the curvature "
                        "is taken to be the weight decay alone (with neither weight decay nor "
                        "damping, the inverse acts on their span only)", minimum=1)
    n_iter: int | None = setting(None, "Lanczos iterations (blank: max(2 rank, rank + 20))",
                                 minimum=1, advanced=True, blank="automatic")
    seed: int = setting(0, "seed of the Lanczos start vector", advanced=True)


class ArnoldiSolver(Solver):
    """Top-``rank`` eigenpairs by Lanczos/Arnoldi (Schioppa et al. 2022): a low-rank data term.

    ``H = H_data + weight_decay I``; the kept eigenpairs are those of largest ``|eigenvalue -
    weight_decay|`` (the data curvature), and outside their span ``H_data`` is taken to be 0, so
    ``(H + damping I)^{-1} = U diag(1 / (lambda + damping)) U^T + (I - U U^T) / (weight_decay +
    damping)``: exact once the rank covers the data term's range. Without weight decay and
    damping the second term is left out (the inverse on the span alone).
    """

    name = "arnoldi"
    label = "Arnoldi"
    summary = "top eigenpairs by Lanczos (Schioppa et al. 2022): a low-rank inverse; large models"
    Settings = ArnoldiSettings
    Diagnostics = ArnoldiDiagnostics

    @classmethod
    def cost(cls, settings: SolverSettings, p: int, n: int, k: int, itemsize: int) -> Cost:
        m = min(p, settings.n_iter or max(2 * settings.rank, settings.rank + 20))
        return Cost(fit_products=m, fit_bytes=2 * m * p * itemsize,
                    solve_bytes=(2 * k + settings.rank) * p * itemsize)

    def _fit(self, objective: Objective) -> None:
        st = self.settings
        evals, evecs = lanczos(objective, st.rank, st.n_iter, st.seed, self._progress)
        self.floor = objective.weight_decay  # H outside the kept span
        keep = torch.argsort((evals - self.floor).abs(), descending=True)[: st.rank]
        self.evals, self.evecs = evals[keep], evecs[:, keep]
        self.fit_diagnostics.update(rank=int(keep.numel()), top_eigenvalue=float(self.evals.max()),
                                    min_eigenvalue=float(self.evals.min()))

    def _solve(self, V: torch.Tensor, damping: float, info: dict[str, Any]) -> torch.Tensor:
        X = _eigen_inverse(self.evals, self.evecs, damping, V)
        rest = self.floor + damping
        if rest > torch.finfo(V.dtype).eps * max(1.0, float(self.evals.abs().max())):
            X = X + (V - (V @ self.evecs) @ self.evecs.T) / rest  # the complement of the span
        info.update(complement=rest if rest > 0 else None)
        return X


# ----------------------------------------------------------------------------- the registry

#: Every solver by name. A new one is a :class:`Solver` subclass with its ``Settings`` and one
#: :func:`register_solver` call; ``iw.influence``, the CLI's ``list`` and the explorer read it.
SOLVERS: Registry = Registry("solver", Solver, SolverSettings)
register_solver = SOLVERS.register
unregister_solver = SOLVERS.unregister

for _cls in (ExactSolver, CGSolver, LiSSASolver, ArnoldiSolver):
    register_solver(_cls)


def solver_class(name: str) -> type[Solver]:
    """The solver class called ``name``, or a ``ValueError`` listing the valid names."""
    return SOLVERS.lookup(name)


def make_settings(name: str, settings: SolverSettings | None = None, **options: Any) -> SolverSettings:
    """The settings of solver ``name``: ``settings`` (its own class) with ``options`` replacing fields."""
    cls = solver_class(name).Settings
    if settings is None:
        return cls.from_options(name, **options)
    if not isinstance(settings, cls):
        raise TypeError(f"solver {name!r} takes {cls.__name__}, got {type(settings).__name__}")
    return cls.from_options(name, **{**settings.options(), **options}) if options else settings


def make_solver(name: str, settings: SolverSettings | None = None, **options: Any) -> Solver:
    """An unfitted solver by name; unknown names and options are clear errors."""
    return solver_class(name)(make_settings(name, settings, **options))
