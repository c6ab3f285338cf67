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
    """Explicit curvature matrix, factorised once: a new damping costs no new Hessian.

    ``method="eigh"`` eigendecomposes ``H`` (every damping is then free, and the diagnostics hold
    the whole spectrum's ends); ``"cholesky"`` factorises ``H + damping I`` once per damping (an
    LU factorisation when that is not positive definite), many times cheaper for large ``p``;
    ``"auto"`` takes eigh up to ``EIGH_MAX`` parameters.
    """

    name = "exact"
    EIGH_MAX: ClassVar[int] = 320
    METHODS: ClassVar[tuple[str, ...]] = ("auto", "eigh", "cholesky")

    def __init__(self, damping: float = 0.0, progress: Progress | None = None, max_bytes: int | None = None,
                 method: str = "auto"):
        super().__init__(damping, progress)
        if method not in self.METHODS:
            raise ValueError(f"unknown exact method {method!r}; valid: {', '.join(self.METHODS)}")
        self.max_bytes = max_bytes
        self.method = method
        self._factors: dict[float, tuple] = {}

    @staticmethod
    def required_bytes(p: int, itemsize: int) -> int:
        return 3 * p * p * itemsize  # matrix, eigenvectors or factor, workspace

    def _fit(self, objective: Objective) -> None:
        need = self.required_bytes(objective.p, objective.dtype.itemsize)
        limit = self.max_bytes if self.max_bytes is not None else memory_budget(objective.device) * 2
        if need > limit:
            raise HessianTooLargeError(
                f"the exact solver needs about {need:,} bytes ({need / 1e9:.2f} GB) for a "
                f"{objective.p} x {objective.p} Hessian ({objective.dtype}), over the {limit:,} bytes "
                f"({limit / 1e9:.2f} GB) allowed; use solver='cg', 'lissa' or 'arnoldi', or "
                "params='last_layer'"
            )
        H = objective.hessian(progress=self.progress)
        use_eigh = self.method == "eigh" or (self.method == "auto" and objective.p <= self.EIGH_MAX)
        self.diagnostics.update(n_params=objective.p, factorization="eigh" if use_eigh else "cholesky")
        self._factors = {}
        if use_eigh:
            self.H = None
            self.evals, self.evecs = torch.linalg.eigh(H)
            self.diagnostics.update(
                top_eigenvalue=float(self.evals[-1]),
                min_eigenvalue=float(self.evals[0]),
                n_negative=int((self.evals < 0).sum()),
            )
        else:
            self.H, self.evals, self.evecs = H, None, None
            top, _, _ = _lanczos(lambda v: H @ v, H.shape[0], H.dtype, H.device, min(H.shape[0], 30))
            self.diagnostics.update(top_eigenvalue=float(top.max()))

    def _factor(self, damping: float) -> tuple:
        f = self._factors.get(damping)
        if f is not None:
            return f
        A = self.H.clone()
        A.diagonal().add_(damping)
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) == 0:
            f = ("cholesky", L)
            self.diagnostics.update(factorization="cholesky")
        else:
            del L
            lo = _smallest_eigenvalue(self.H)
            self.diagnostics.update(factorization="lu", min_eigenvalue=min(lo, -damping), n_negative=None)
            f = ("lu", *torch.linalg.lu_factor(A))
        del A
        if len(self._factors) >= 2:  # each factor is p x p: keep the last two dampings
            self._factors.pop(next(iter(self._factors)))
        self._factors[damping] = f
        return f

    def _solve(self, V: torch.Tensor) -> torch.Tensor:
        if self.evals is not None:
            return _eigen_inverse(self.evals, self.evecs, self.damping, V)
        f = self._factor(self.damping)
        if f[0] == "cholesky":
            return torch.cholesky_solve(V.T, f[1]).T
        return torch.linalg.lu_solve(f[1], f[2], V.T).T


def _smallest_eigenvalue(H: torch.Tensor, n_iter: int = 100) -> float:
    """The smallest eigenvalue of a symmetric matrix by Lanczos on its products (exact up to
    ``n_iter`` rows; an upper bound on it, usually close, for larger matrices)."""
    evals, _, _ = _lanczos(lambda v: H @ v, H.shape[0], H.dtype, H.device, min(H.shape[0], n_iter))
    return float(evals.min())


class CGSolver(Solver):
    """Conjugate gradient on ``H + damping I``; stops on negative curvature.

    With ``block=True`` (default) all right-hand sides share one Krylov space (block CG in
    Dubrulle's QR form, stable when residuals become dependent): each iteration costs one batched
    HVP, as plain batched CG does, and converges in far fewer iterations when ``k`` vectors are
    solved at once. ``block=False`` runs independent CG on each vector. ``tol`` is the relative
    residual ``||b - A x|| / ||b||`` at which each vector stops.
    """

    name = "cg"

    def __init__(self, damping: float = 0.0, progress: Progress | None = None, tol: float = 1e-8,
                 max_iter: int = 1000, block: bool = True, precondition: int = 0, seed: int = 0):
        super().__init__(damping, progress)
        if tol <= 0 or max_iter < 1 or precondition < 0:
            raise ValueError("cg needs tol > 0, max_iter >= 1 and precondition >= 0")
        self.tol, self.max_iter, self.block = tol, max_iter, block
        self.precondition, self.seed = precondition, seed
        self._ritz: tuple[torch.Tensor, torch.Tensor] | None = None

    def _fit(self, objective: Objective) -> None:
        self._ritz = None
        if self.precondition:
            # Top eigenpairs by Lanczos, for a spectral preconditioner M = U (L + d) U^T +
            # c (I - U U^T), c the smallest kept L + d: it maps the top of the spectrum to 1.
            r = min(self.precondition, objective.p)
            m = min(objective.p, 2 * r + 10)
            evals, evecs, _ = _lanczos(objective.hvp, objective.p, objective.dtype, objective.device,
                                       m, self.seed)
            top = torch.argsort(evals, descending=True)[:r]
            self._ritz = (evals[top], evecs[:, top].contiguous())
            self.diagnostics.update(precondition=r, lanczos_products=m)

    def _scaler(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """``M^{-1/2}`` applied to the rows of a matrix, or ``None`` (no usable preconditioner)."""
        if self._ritz is None:
            return None
        lam, U = self._ritz
        mu = lam + self.damping
        c = float(mu.min())
        if c <= 0:  # H + damping I is not positive there: let CG meet and report it
            return None
        w = mu.rsqrt() - c**-0.5

        def scale(M: torch.Tensor) -> torch.Tensor:
            return c**-0.5 * M + ((M @ U) * w) @ U.T

        return scale

    def _apply(self, M: torch.Tensor) -> torch.Tensor:
        return self.objective.hvp(M) + self.damping * M

    def _negative(self, value: float, it: int) -> NegativeCurvatureError:
        return NegativeCurvatureError(
            f"CG met negative curvature (p^T (H + damping I) p = {value:.3g}) at iteration {it}: "
            "H is indefinite here. Add damping (larger than the most negative eigenvalue's "
            "magnitude), use curvature='ggn', or solver='exact'"
        )

    def _solve(self, V: torch.Tensor) -> torch.Tensor:
        P = self._scaler()
        A = self._apply
        if P is not None:  # solve (P A P) Y = P V, then X = P Y, with P = M^{-1/2} symmetric
            A = lambda M: P(self._apply(P(M)))  # noqa: E731
            V = P(V)
        # a residual far below the rounding of the dtype cannot be reached reliably (float32)
        self._tol = max(self.tol, 10 * torch.finfo(V.dtype).eps)
        X, it, trace = self._solve_block(V, A) if self.block and V.shape[0] > 1 else self._solve_plain(V, A)
        if P is not None:
            X = P(X)
        if not torch.isfinite(X).all():
            raise DivergenceError("CG produced NaN/inf: add damping or use curvature='ggn'")
        self.diagnostics.update(iterations=it, residual=trace[-1], residual_trace=trace,
                                converged=trace[-1] <= self._tol, tol=self._tol, block=self.block)
        return X

    def _solve_plain(self, V: torch.Tensor, A: Callable[[torch.Tensor], torch.Tensor]
                     ) -> tuple[torch.Tensor, int, list[float]]:
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
                raise self._negative(float(pAp[bad].min()), it)
            alpha = torch.where(active, rs / pAp.where(active, torch.ones_like(pAp)), torch.zeros_like(rs))
            X = X + alpha[:, None] * P
            R = R - alpha[:, None] * AP
            rs_new = (R * R).sum(1)
            rel = rs_new.sqrt() / bnorm
            trace.append(float(rel.max()))
            self._report(it, self.max_iter, {"residual": trace[-1]})
            active = rel > self._tol
            if not active.any():
                break
            beta = torch.where(active, rs_new / rs.clamp_min(torch.finfo(rs.dtype).tiny), torch.zeros_like(rs))
            P = R + beta[:, None] * P
            rs = rs_new
        return X, it, trace

    def _solve_block(self, V: torch.Tensor, A: Callable[[torch.Tensor], torch.Tensor]
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
        for it in range(1, self.max_iter + 1):
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
            self._report(it, self.max_iter, {"residual": trace[-1]})
            if trace[-1] <= self._tol:
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


class LiSSASolver(Solver):
    """Neumann-series recursion (Agarwal et al. 2016):
    ``h_j = v + (I - (H_batch + damping I) / scale) h_{j-1}``, answer ``h_J / scale``, averaged
    over ``repeats``. ``batch_size=None`` uses the full training set per step (deterministic).

    ``scale=None`` sets it from the top eigenvalue ``lambda`` of ``H + damping I`` (Lanczos, with
    its error bound added): ``0.52 lambda`` for full-batch steps, where any scale above
    ``lambda / 2`` converges and ``lambda / 2`` is the fastest (Richardson's optimal step when the
    smallest eigenvalue is near 0); ``1.1 lambda`` for mini-batch steps, whose Hessians have larger
    eigenvalues. If the recursion diverges with an automatic scale, the scale is doubled and the
    solve restarted (up to three times; recorded in the diagnostics). ``tol > 0`` stops a repeat
    (before ``depth``) once the estimated relative error of every vector is below ``tol``: the
    recursion is linear, so its increments shrink by a measured rate ``rho`` per step and the rest
    of the series sums to about ``increment * rho / (1 - rho)`` (full-batch steps; mini-batch noise
    keeps the estimate high).
    """

    name = "lissa"

    def __init__(self, damping: float = 0.0, progress: Progress | None = None, scale: float | None = None,
                 depth: int = 1000, repeats: int = 1, batch_size: int | None = None, seed: int = 0,
                 tol: float = 0.0):
        super().__init__(damping, progress)
        if depth < 1 or repeats < 1 or (scale is not None and scale <= 0):
            raise ValueError("lissa needs depth >= 1, repeats >= 1 and scale > 0 (or None for automatic)")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"lissa needs batch_size >= 1 or None, got {batch_size}")
        self.scale, self.depth, self.repeats = scale, depth, repeats
        self.batch_size, self.seed, self.tol = batch_size, seed, tol

    @property
    def _stochastic(self) -> bool:
        return self.batch_size is not None and self.batch_size < self.objective.n

    def _fit(self, objective: Objective) -> None:
        if self.scale is not None:
            self._scale = float(self.scale)
            self.diagnostics.update(scale=self._scale, scale_source="given")
            return
        lam, err = top_eigenvalue(objective, seed=self.seed)
        self._top = (lam, err)
        self._set_auto_scale()

    def _set_auto_scale(self) -> None:
        lam, err = self._top
        top = abs(lam) + err + self.damping
        factor = 1.1 if self._stochastic else 0.52
        self._scale = factor * top
        self._scale_damping = self.damping
        self.diagnostics.update(scale=self._scale, scale_source=(
            f"automatic: {factor} x (top eigenvalue {lam:.6g} from Lanczos + its error bound "
            f"{err:.2g} + damping {self.damping:.3g})"))

    def _hvp_batch(self, M: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        obj = self.objective
        if not self._stochastic:
            return obj.hvp(M)
        idx = torch.randint(obj.n, (self.batch_size,), generator=g)
        return obj.hvp(M, rows=idx)

    def _solve(self, V: torch.Tensor) -> torch.Tensor:
        auto = self.scale is None
        if auto and self._scale_damping != self.damping:
            self._set_auto_scale()
        restarts = 0
        while True:
            try:
                out = self._recursion(V)
                break
            except DivergenceError:
                if not auto or restarts >= 3:
                    raise
                restarts += 1
                self._scale *= 2.0
        self.diagnostics.update(restarts=restarts, scale=self._scale)
        return out

    def _recursion(self, V: torch.Tensor) -> torch.Tensor:
        s = self._scale
        total = torch.zeros_like(V)
        trace: list[float] = []
        g = torch.Generator().manual_seed(self.seed)
        vnorm = float(V.norm(dim=1).max()) or 1.0
        limit = 1e4 * vnorm * max(1.0, self.depth)
        every = 10  # norms (divergence check, trace) every 10 steps: each costs a sync on GPUs
        keep = 1.0 - self.damping / s
        steps, estimate = 0, float("inf")
        window = 10  # steps between the increments compared for the error estimate
        for r in range(self.repeats):
            h = V.clone()
            prev, hits = None, 0
            for j in range(1, self.depth + 1):
                h_new = self._hvp_batch(h, g).div_(-s).add_(h, alpha=keep).add_(V)
                steps += 1
                if j % every == 0 or j == self.depth:
                    hn = h_new.norm(dim=1)
                    nrm = float(hn.max())
                    trace.append(nrm)
                    if not math.isfinite(nrm) or nrm > limit:
                        raise DivergenceError(
                            f"LiSSA diverged at step {j} (norm {nrm:.3g}) with scale {s:.4g} and damping "
                            f"{self.damping:.3g}: increase scale (it must exceed half the largest "
                            "eigenvalue of H + damping I, and the largest for mini-batches) or add "
                            "damping (H + damping I must be positive definite)"
                        )
                if self.tol and j % window == 0:
                    # A linear recursion: increments shrink by a rate rho per step, and what is
                    # still to come sums to about increment * rho / (1 - rho).
                    inc = (h_new - h).norm(dim=1)
                    if prev is not None:
                        rho = (inc / prev.clamp_min(torch.finfo(inc.dtype).tiny)) ** (1.0 / window)
                        err = torch.where(rho < 1, inc * rho / (1 - rho).clamp_min(1e-300),
                                          torch.full_like(inc, float("inf")))
                        estimate = float((err / h_new.norm(dim=1).clamp_min(torch.finfo(inc.dtype).tiny)).max())
                        hits = hits + 1 if estimate <= self.tol else 0
                    prev = inc
                h = h_new
                if j % 10 == 0 or j == self.depth:
                    self._report(r * self.depth + j, self.repeats * self.depth, {"norm": trace[-1]})
                if hits >= 3:
                    break
            total += h / s
        self.diagnostics.update(norm_trace=trace, steps=steps, repeats=self.repeats,
                                estimated_error=estimate if self.tol else None)
        return total / self.repeats


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
