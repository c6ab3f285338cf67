"""Curvature that is cheap to invert: K-FAC and EK-FAC for ``nn.Linear``/``nn.Conv2d`` layers, and
the identity and diagonal baselines that show what the Hessian buys.

Every solver here replaces ``H`` (the Hessian of ``mean_i loss_i + (wd/2) ||theta||^2``) by an
approximation ``C`` it can invert in closed form, and solves ``(C + damping I) X = V``. ``C`` is
fitted once (:meth:`Solver.fit`, streaming over the training data in chunks: memory is the size of
the factors plus one chunk's activations, never ``n x p``) and every damping and test point reuses
it. The engine's ``curvature=`` does not apply: each solver's curvature is its own, below.

The Fisher these solvers fit is set by ``fisher``:

* ``"sampled"`` (K-FAC's and the diagonal's default, as in Kronfluence):
  ``E_n[g(x_n, y~) g(x_n, y~)^T]`` with one target
  ``y~`` drawn from the model's own predictive distribution per training row (a class from the
  softmax for cross-entropy; ``f(x) + N(0, I)`` for mse, whose loss is ``||f - y||^2 / 2``). The
  draws are made once per fit from ``seed`` (on the CPU, for every row at once), so the same seed
  gives the same targets whatever the chunking, and the same targets serve every pass of a fit.
* ``"empirical"``: the true training labels, ``E_n[g_n g_n^T]``.
* ``"ggn"``: the expectation over the model's distribution taken exactly (the GGN ``J^T H_f J``
  of these losses): a sum over every class ``k`` weighted by its probability (cross-entropy), or
  over the unit residuals ``e_k`` (mse). It costs one backward pass per output instead of one,
  and has no sampling noise. EK-FAC's default: the most accurate of the three against the exact
  scores, for 2-3x the fit time (:class:`EKFACSettings`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..models.losses import per_sample_loss
from ..models.modes import eval_mode
from .diagnostics import FisherDiagnostics
from .objective import Objective, memory_budget
from .settings import SolverSettings, setting
from .solvers import Cost, Solver, register_solver

FISHERS = ("sampled", "empirical", "ggn")
BASES = ("nearest", "kfac")
#: The nearest Kronecker factors stop refining once both change by less than this (relative).
NKP_TOL = 1e-6
SUPPORTED_LAYERS = (nn.Linear, nn.Conv2d)


class UnsupportedLayerError(ValueError):
    """The parameters in play belong to layers a factored solver cannot handle."""


# ----------------------------------------------------------------------------- the Fisher's targets


def label_noise(n: int, width: int, loss: str, seed: int) -> torch.Tensor:
    """The random numbers behind ``fisher="sampled"``, for all ``n`` training rows at once (on the
    CPU, float64): one uniform per row for cross-entropy, ``width`` standard normals per row for
    mse. Row ``i`` gets the same numbers whatever the chunking."""
    g = torch.Generator().manual_seed(seed)
    if loss == "cross_entropy":
        return torch.rand(n, generator=g, dtype=torch.float64)
    return torch.randn(n, width, generator=g, dtype=torch.float64)


def fisher_targets(outputs: torch.Tensor, y: torch.Tensor, loss: str, fisher: str,
                   noise: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Targets and row weights whose loss gradients make up the chosen Fisher.

    Returns ``[(targets_j, weights_j)]`` (``weights_j`` ``(N,)`` or ``None`` for ones): the Fisher
    of these rows is ``sum_j sum_n w_jn g(x_n, targets_jn) g(x_n, targets_jn)^T``. ``noise`` is this
    chunk's rows of :func:`label_noise` (``fisher="sampled"`` only).
    """
    if fisher == "empirical":
        return [(y, None)]
    out = outputs.detach()
    n = out.shape[0]
    if loss == "cross_entropy":
        p = torch.softmax(out.reshape(n, -1).double(), dim=-1)
        k = p.shape[1]
        if fisher == "sampled":
            u = noise.to(p.device).reshape(n, 1)
            labels = (p.cumsum(-1) < u).sum(-1).clamp_max(k - 1)  # inverse CDF
            return [(labels, None)]
        return [(torch.full((n,), c, dtype=torch.long, device=out.device), p[:, c].to(out.dtype))
                for c in range(k)]
    if fisher == "sampled":  # y ~ N(f(x), I): the loss gradient f - y is standard normal
        return [(out + noise.to(out.device, out.dtype).reshape(out.shape), None)]
    flat = out.reshape(n, -1)
    eye = torch.eye(flat.shape[1], dtype=out.dtype, device=out.device)
    return [((flat - eye[c]).reshape(out.shape), None) for c in range(flat.shape[1])]


@dataclass(frozen=True)
class FisherSettings(SolverSettings):
    """Settings shared by the solvers that fit a Fisher (see the module docstring)."""

    fisher: str = setting("sampled", "the Fisher fitted: sampled (targets drawn from the model, "
                          "seeded; as Kronfluence), empirical (the true labels) or ggn (the exact "
                          "expectation over the model's outputs: one backward pass per class)",
                          choices=FISHERS)
    seed: int = setting(0, "seed of the targets drawn from the model (fisher='sampled')",
                        advanced=True)
    chunk_size: int | None = setting(None, "training rows per streamed chunk (blank: from the "
                                     "memory budget); the answer does not depend on it",
                                     minimum=1, advanced=True, blank="from memory")


class _FisherSolver(Solver):
    """What every Fisher-fitting solver shares: the targets, drawn once per fit."""

    Diagnostics = FisherDiagnostics

    @classmethod
    def fit_passes(cls, settings: SolverSettings) -> float:
        """Passes over the training gradients a fit counts as (see :meth:`cost`)."""
        return 2.0

    @classmethod
    def cost(cls, settings: SolverSettings, p: int, n: int, k: int, itemsize: int) -> Cost:
        # fitting streams the per-sample gradients (or the layers' inputs and output
        # gradients) about twice; its factors take about p numbers per layer pair
        passes = cls.fit_passes(settings)
        return Cost(fit_passes=passes, fit_bytes=2 * p * itemsize, solve_bytes=2 * k * p * itemsize,
                    note=f"{cls.name}: fitting counted as {passes:g} passes over the training "
                         "gradients")

    def _targets(self, obj: Objective, outputs: torch.Tensor, yc: torch.Tensor, start: int
                 ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        st = self.settings
        noise = None
        if st.fisher == "sampled":
            if self._noise is None:
                width = outputs[0].numel()
                self._noise = label_noise(obj.n, width, obj.loss, st.seed)
            noise = self._noise[start : start + outputs.shape[0]]
        return fisher_targets(outputs, yc, obj.loss, st.fisher, noise)


def _safe_reciprocal(d: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``1 / d`` with entries at rounding level set to 0 (a pseudo-inverse, as the exact solver's
    eigen route), and how many were."""
    tiny = torch.finfo(d.dtype).eps * max(1.0, float(d.abs().max()))
    keep = d.abs() > tiny
    return torch.where(keep, 1.0 / d.where(keep, torch.ones_like(d)), torch.zeros_like(d)), int((~keep).sum())


# ----------------------------------------------------------------------------- baselines


@dataclass(frozen=True)
class IdentitySettings(SolverSettings):
    """The identity solver has no settings."""


class IdentitySolver(Solver):
    """The curvature is taken to be the identity: ``C = I`` (weight decay and the data ignored), so
    ``(C + damping I)^{-1} V = V / (1 + damping)`` and the estimate is the gradient dot product
    ``g_t . g_i / (n (1 + damping))``. The baseline with no curvature at all: what any Hessian
    approximation must beat. Damping keeps its meaning of "added to the curvature"; it only
    rescales every score alike (correlations do not change)."""

    name = "identity"
    label = "identity"
    summary = "no curvature (C = I): gradient dot products g_t.g_i / (n (1 + damping)); a baseline"
    baseline = True
    Settings = IdentitySettings
    Diagnostics = FisherDiagnostics

    @classmethod
    def cost(cls, settings: SolverSettings, p: int, n: int, k: int, itemsize: int) -> Cost:
        return Cost(solve_bytes=k * p * itemsize)

    def _fit(self, objective: Objective) -> None:
        self.fit_diagnostics.update(n_params=objective.p, curvature="identity")

    def _solve(self, V: torch.Tensor, damping: float, info: dict[str, Any]) -> torch.Tensor:
        return V / (1.0 + damping)


@dataclass(frozen=True)
class DiagonalSettings(FisherSettings):
    """Settings of the diagonal solver."""


class DiagonalSolver(_FisherSolver):
    """The diagonal of the Fisher, plus weight decay: ``C = diag(F) + weight_decay I`` with
    ``F = (1/n) sum_n g_n g_n^T`` over the chosen ``fisher`` targets (``fisher="ggn"``: exactly
    the diagonal of the Gauss-Newton matrix), so ``X = V / (diag(F) + weight_decay + damping)``.

    Works for any model (every parameter in play): per-sample gradients are streamed in chunks
    and only their squares summed. The usual cheap baseline (Kronfluence's "diagonal"): it keeps
    each parameter's scale and drops every correlation between parameters.
    """

    name = "diagonal"
    label = "diagonal"
    summary = "the Fisher's diagonal + weight decay: per-parameter scaling, no correlations; a baseline"
    baseline = True
    Settings = DiagonalSettings

    def _fit(self, objective: Objective) -> None:
        obj = objective
        st = self.settings
        self._noise = None
        per_row = obj.p * obj.dtype.itemsize * 8  # a row's gradient, with room for autograd
        size = st.chunk_size or obj.chunk_size or max(1, min(obj.n, memory_budget(obj.device) // per_row))
        diag = torch.zeros(obj.p, dtype=obj.dtype, device=obj.device)
        for start in range(0, obj.n, size):
            Xc, yc = obj.X[start : start + size], obj.y[start : start + size]
            with torch.no_grad(), eval_mode(obj.model):
                out = obj.outputs(obj.theta, Xc)
            for targets, w in self._targets(obj, out, yc, start):
                G = obj.per_sample_grads(Xc, targets, chunk_size=size)
                diag += (G.square() * (1.0 if w is None else w.unsqueeze(1))).sum(0)
            self._report(min(obj.n, start + size), obj.n, {"stage": "diagonal"})
        self._noise = None
        self.diag = diag / obj.n + obj.weight_decay
        self.fit_diagnostics.update(
            n_params=obj.p, fisher=st.fisher, chunk_size=size, curvature=f"diagonal ({st.fisher} Fisher)",
            top_eigenvalue=float(self.diag.max()), min_eigenvalue=float(self.diag.min()))

    def _solve(self, V: torch.Tensor, damping: float, info: dict[str, Any]) -> torch.Tensor:
        inv, null = _safe_reciprocal(self.diag + damping)
        info.update(null_directions=null)
        return V * inv


# ----------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class Layer:
    """One ``nn.Linear`` or ``nn.Conv2d`` whose weight and/or bias are in play.

    ``weight``/``bias`` are the slices of the objective's flat parameter vector (``None``: not in
    play; the layer then runs with its own value). A layer's gradient is handled as a matrix
    ``(d_out, d_in)``: the weight's columns (``in_features``, or ``in_channels * kh * kw`` in
    ``F.unfold``'s order, which is the weight's own) followed by the bias column.
    """

    name: str
    module: nn.Module
    weight: slice | None
    bias: slice | None
    d_out: int
    d_in: int

    @property
    def conv(self) -> bool:
        return isinstance(self.module, nn.Conv2d)

    def gather(self, V: torch.Tensor) -> torch.Tensor:
        """The layer's part of ``V (k, p)`` as ``(k, d_out, d_in)``."""
        k = V.shape[0]
        parts = []
        if self.weight is not None:
            parts.append(V[:, self.weight].reshape(k, self.d_out, -1))
        if self.bias is not None:
            parts.append(V[:, self.bias].reshape(k, self.d_out, 1))
        return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]

    def scatter(self, X: torch.Tensor, M: torch.Tensor) -> None:
        """Write ``M (k, d_out, d_in)`` into the layer's slices of ``X (k, p)``."""
        k = M.shape[0]
        if self.weight is not None:
            w = self.weight.stop - self.weight.start
            X[:, self.weight] = M[:, :, : w // self.d_out].reshape(k, w)
        if self.bias is not None:
            X[:, self.bias] = M[:, :, -1]

    def rows(self, inputs: torch.Tensor) -> torch.Tensor:
        """The layer's input activations as ``(N, T, d_in)``: ``T`` positions per example (1 for a
        plain ``nn.Linear``; the output locations of a convolution), with a column of ones last
        when the bias is in play."""
        n = inputs.shape[0]
        if self.weight is None:
            t = _positions(self.module, inputs)
            return inputs.new_ones(n, t, 1)
        m = self.module
        if self.conv:
            a = F.unfold(inputs, m.kernel_size, dilation=m.dilation, padding=_padding(m), stride=m.stride)
            a = a.transpose(1, 2)  # (N, T, c_in kh kw)
        else:
            a = inputs.reshape(n, -1, inputs.shape[-1])
        if self.bias is not None:
            a = torch.cat([a, a.new_ones(*a.shape[:2], 1)], dim=2)
        return a

    def output_rows(self, grad: torch.Tensor) -> torch.Tensor:
        """Gradients at the layer's outputs as ``(N, T, d_out)``."""
        n = grad.shape[0]
        if self.conv:
            return grad.reshape(n, self.d_out, -1).transpose(1, 2)
        return grad.reshape(n, -1, self.d_out)


def _padding(conv: nn.Conv2d) -> tuple[int, int]:
    pad = conv.padding
    if pad == "valid":
        return (0, 0)
    if pad == "same":
        return tuple(d * (k - 1) // 2 for k, d in zip(conv.kernel_size, conv.dilation))
    return tuple(pad)


def _positions(module: nn.Module, inputs: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        out = [(s + 2 * p - d * (k - 1) - 1) // st + 1 for s, p, d, k, st in zip(
            inputs.shape[2:], _padding(module), module.dilation, module.kernel_size, module.stride)]
        return out[0] * out[1]
    return inputs[0].numel() // inputs.shape[-1]


def _conv_problem(conv: nn.Conv2d) -> str | None:
    if conv.groups != 1:
        return f"groups={conv.groups} (grouped convolutions are not supported)"
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r} (only zero padding is supported)"
    if conv.padding == "same" and any(d * (k - 1) % 2 for k, d in zip(conv.kernel_size, conv.dilation)):
        return "padding='same' with an even kernel (asymmetric padding is not supported)"
    return None


def factored_layers(objective: Objective, solver: str = "kfac") -> list[Layer]:
    """The supported layers that own the objective's parameters, in the model's order, or an
    :class:`UnsupportedLayerError` naming every parameter that is not in one."""
    model = objective.model
    offsets, start = {}, 0
    for name, numel in zip(objective.names, objective.numels):
        offsets[name] = slice(start, start + numel)
        start += numel
    owners: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(name)
    layers, covered, problems = [], set(), []
    for prefix, module in model.named_modules():
        if not isinstance(module, SUPPORTED_LAYERS):
            continue
        full = {k: f"{prefix}.{k}" if prefix else k for k in ("weight", "bias")}
        w, b = (offsets.get(full[k]) if getattr(module, k, None) is not None else None
                for k in ("weight", "bias"))
        if w is None and b is None:
            continue
        for k in ("weight", "bias"):
            p = getattr(module, k, None)
            if p is not None and len(owners.get(id(p), ())) > 1:
                others = [o for o in owners[id(p)] if o != full[k]]
                problems.append(f"{full[k]} is shared with {', '.join(others)} (tied parameters "
                                "are not supported)")
        if isinstance(module, nn.Conv2d):
            why = _conv_problem(module)
            if why:
                problems.append(f"{prefix} is an nn.Conv2d with {why}")
            d_out, d_w = module.out_channels, module.in_channels * math.prod(module.kernel_size)
        else:
            d_out, d_w = module.out_features, module.in_features
        d_in = (d_w if w is not None else 0) + (1 if b is not None else 0)
        layers.append(Layer(prefix, module, w, b, d_out, d_in))
        covered.update(full[k] for k, s in (("weight", w), ("bias", b)) if s is not None)
    others = [n for n in objective.names if n not in covered]
    if others or problems:
        supported = [n for n in objective.names if n in covered]
        kinds = sorted({type(_owner(model, n)).__name__ for n in others})
        what = []
        if others:
            what.append(f"the parameters {', '.join(others)} belong to {', '.join(kinds)} layers, "
                        f"which {solver} cannot handle (it supports nn.Linear and nn.Conv2d)")
        what += problems
        raise UnsupportedLayerError(
            f"{'; '.join(what)}. Pass params=[...] with supported parameters "
            f"({', '.join(supported) if supported else 'none here'}) or params='last_layer', or "
            "use solver='diagonal', 'cg' or 'exact', which take any model")
    return layers


def _owner(model: nn.Module, name: str) -> nn.Module:
    prefix = name.rpartition(".")[0]
    return model.get_submodule(prefix) if prefix else model


@dataclass
class LayerFactors:
    """A layer's fitted curvature, ``C_layer = (Q_G kron Q_A) diag(eigenvalues) (Q_G kron Q_A)^T``
    (in the ``(d_out, d_in)`` matrix layout of :class:`Layer`); weight decay not included."""

    layer: str
    A: torch.Tensor  # (d_in, d_in): mean over rows and positions of a a^T
    G: torch.Tensor  # (d_out, d_out): mean over rows and positions of ds ds^T
    A_evecs: torch.Tensor
    G_evecs: torch.Tensor
    eigenvalues: torch.Tensor  # (d_out, d_in)
    positions: int  # T


# ----------------------------------------------------------------------------- K-FAC / EK-FAC


@dataclass(frozen=True)
class KFACSettings(FisherSettings):
    """Settings of K-FAC."""


@dataclass(frozen=True)
class EKFACSettings(FisherSettings):
    """Settings of EK-FAC. Its default Fisher is the GGN and its default eigenbasis the nearest
    Kronecker product's: on the digits MLP (1,438 training x 100 test points, damping 0.01) the
    mean Spearman against the exact scores is 0.605 with K-FAC's basis (GGN Fisher; sampled
    0.587-0.602 over seeds, empirical 0.528) and 0.616 with the nearest Kronecker basis, pyDVL's
    EK-FAC 0.610; on the Iris MLP 0.606 against 0.829 (pyDVL 0.579). Measured in
    benchmarks/RESULTS.md, with the fit times."""

    fisher: str = setting("ggn", "the Fisher fitted, and what it costs: ggn (default: the exact "
                          "expectation over the model's outputs, no sampling noise, the closest "
                          "to the exact scores; one backward pass per class, 2-3x the fit time "
                          "of sampled with 10 classes), sampled (one target drawn from the "
                          "model per row, seeded, as Kronfluence: the cheapest, one backward "
                          "pass, with sampling noise), empirical (the true labels: the same "
                          "cost as sampled, the least accurate away from a well-fitted model)",
                          choices=FISHERS)
    basis: str = setting("nearest", "the eigenbasis the eigenvalues are re-fitted in: nearest "
                         "(default: the eigenvectors of the Kronecker product nearest the "
                         "layer's Fisher block in Frobenius norm, refined from K-FAC's factors "
                         "by basis_steps streamed passes; the closer ranking to the exact "
                         "scores) or kfac (K-FAC's factors, as Kronfluence and George et al. "
                         "2018: two passes in all)", choices=BASES)
    basis_steps: int = setting(3, "passes that refine the nearest Kronecker factors (basis="
                               "'nearest'; each costs about what the first pass does; it stops "
                               "early once the factors change by less than 1e-6)", minimum=1,
                               advanced=True)


class _KroneckerSolver(_FisherSolver):
    """K-FAC and EK-FAC: fit the Kronecker factors by streaming over the data; solve in their
    eigenbases."""

    corrected: ClassVar[bool] = False
    _kept: tuple | None = None  # the one chunk, kept for the passes of a fit (see _chunks)

    def _fit(self, objective: Objective) -> None:
        obj = objective
        st = self.settings
        self._noise = self._kept = None
        self.layers = factored_layers(obj, self.name)
        size = st.chunk_size or obj.chunk_size or self._auto_chunk(obj)
        passes = 2 if self.corrected else 1
        nearest = self.corrected and st.basis == "nearest"
        total = (passes + (st.basis_steps if nearest else 0)) * obj.n  # at most: it may stop early
        # pass 1: the Kronecker factors A = E[a a^T], G = E[ds ds^T] (per row and position)
        A = [torch.zeros(lay.d_in, lay.d_in, dtype=obj.dtype, device=obj.device) for lay in self.layers]
        G = [torch.zeros(lay.d_out, lay.d_out, dtype=obj.dtype, device=obj.device) for lay in self.layers]
        T = [0] * len(self.layers)
        for start, acts, per_target in self._chunks(obj, size):
            for i, a in enumerate(acts):
                T[i] = a.shape[1]
                a2 = a.reshape(-1, a.shape[2])
                A[i] += a2.T @ a2
            for grads in per_target:
                for i, ds in enumerate(grads):
                    d2 = ds.reshape(-1, ds.shape[2])
                    G[i] += d2.T @ d2
            self._report(min(obj.n, start + size), total, {"stage": "covariance"})
        refined = 0
        if nearest:
            A, G, refined = self._nearest_kronecker(obj, size, A, G, total)
            total = (passes + refined) * obj.n
        factors = []
        for lay, a, g, t in zip(self.layers, A, G, T):
            a, g = a / (obj.n * t), g / (obj.n * t)
            la, qa = _eigh(a)
            lg, qg = _eigh(g)
            # K-FAC with the positions summed (Grosse & Martens 2016): C = T (A kron G)
            factors.append(LayerFactors(lay.name, a, g, qa, qg, t * torch.outer(lg, la), t))
        if self.corrected:
            # pass 2: the eigenvalue correction, E_n[(Q_G^T g_n Q_A)^2] from per-example gradients
            lam = [torch.zeros_like(f.eigenvalues) for f in factors]
            for start, acts, per_target in self._chunks(obj, size):
                proj = [a @ f.A_evecs for a, f in zip(acts, factors)]
                for grads in per_target:
                    for i, (ds, ap) in enumerate(zip(grads, proj)):
                        dp = ds @ factors[i].G_evecs
                        if ap.shape[1] == 1:  # one position: (g_n)_oi = dp_o ap_i
                            lam[i] += dp[:, 0].square().T @ ap[:, 0].square()
                        else:
                            lam[i] += torch.einsum("nto,nti->noi", dp, ap).square().sum(0)
                self._report((1 + refined) * obj.n + min(obj.n, start + size), total,
                             {"stage": "eigenvalue correction"})
            for f, lm in zip(factors, lam):
                f.eigenvalues = lm / obj.n
        self._noise = self._kept = None  # the kept chunk served this fit only
        self.factors = factors
        wd = obj.weight_decay
        top = max(float(f.eigenvalues.max()) for f in factors) + wd
        low = min(float(f.eigenvalues.min()) for f in factors) + wd
        self.fit_diagnostics.update(
            n_params=obj.p, fisher=st.fisher, layers=[lay.name for lay in self.layers],
            chunk_size=size, passes=passes + refined, top_eigenvalue=top, min_eigenvalue=low,
            factor_numbers=sum(f.A.numel() + f.G.numel() + f.eigenvalues.numel() for f in factors),
            curvature=f"{self.label} ({st.fisher} Fisher"
                      + (", nearest Kronecker basis)" if nearest else ")"))

    def _nearest_kronecker(self, obj: Objective, size: int, A: list[torch.Tensor],
                           G: list[torch.Tensor], total: int
                           ) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
        """The Kronecker product ``G kron A`` nearest each layer's Fisher block
        ``F = (1/n) sum_n vec(M_n) vec(M_n)^T`` in Frobenius norm (Van Loan & Pitsianis 1993; the
        KPSVD of Koroko et al. 2023), ``M_n = sum over positions of ds a^T`` the example's gradient
        matrix for each target. It is the top singular pair of ``F`` rearranged, found by
        alternating ``G <- sum_n M_n A M_n^T / |A|^2`` and ``A <- sum_n M_n^T G M_n / |G|^2``, one
        streamed pass each, from K-FAC's factors (which are the nearest product only when ``a``
        and ``ds`` are independent). Only the factors' eigenvectors are used (EK-FAC re-fits the
        eigenvalues), so they are returned normalised. Returns ``(A, G, passes)``."""
        st = self.settings
        A = [a / a.norm().clamp_min(torch.finfo(a.dtype).tiny) for a in A]
        G = [g / g.norm().clamp_min(torch.finfo(g.dtype).tiny) for g in G]
        done = 0
        for step in range(st.basis_steps):
            newA = [torch.zeros_like(a) for a in A]
            newG = [torch.zeros_like(g) for g in G]
            for start, acts, per_target in self._chunks(obj, size):
                # one position: M = ds a^T, so M A M^T = (a^T A a) ds ds^T and
                # M^T G M = (ds^T G ds) a a^T, whose weights add up over the targets
                wa = [((a[:, 0] @ A[i]) * a[:, 0]).sum(1, keepdim=True) if a.shape[1] == 1
                      else None for i, a in enumerate(acts)]
                wg = [None] * len(acts)
                for grads in per_target:
                    for i, (ds, a) in enumerate(zip(grads, acts)):
                        if a.shape[1] == 1:
                            d1 = ds[:, 0]
                            newG[i] += (d1 * wa[i]).T @ d1
                            w = ((d1 @ G[i]) * d1).sum(1, keepdim=True)
                            wg[i] = w if wg[i] is None else wg[i] + w
                        else:
                            M = torch.einsum("nto,nti->noi", ds, a)
                            newG[i] += torch.einsum("noi,ij,npj->op", M, A[i], M)
                            newA[i] += torch.einsum("noi,op,npj->ij", M, G[i], M)
                for i, a in enumerate(acts):
                    if wg[i] is not None:
                        newA[i] += (a[:, 0] * wg[i]).T @ a[:, 0]
                self._report((1 + step) * obj.n + min(obj.n, start + size), total,
                             {"stage": "nearest Kronecker basis"})
            # G from the previous A, A from the previous G: both halves of one alternating step
            # (the fixed point is the same), so one pass serves both
            change = 0.0
            for i in range(len(A)):
                for old, new, store in ((A[i], newA[i], A), (G[i], newG[i], G)):
                    new = 0.5 * (new + new.T)
                    norm = new.norm()
                    if not torch.isfinite(norm) or norm == 0:
                        continue  # a layer with no gradient: keep K-FAC's factor
                    new = new / norm
                    change = max(change, float((new - old).norm()))
                    store[i] = new
            done += 1
            if change < NKP_TOL:
                break
        return A, G, done

    def _solve(self, V: torch.Tensor, damping: float, info: dict[str, Any]) -> torch.Tensor:
        X = torch.zeros_like(V)
        shift = self.objective.weight_decay + damping
        null = 0
        for lay, f in zip(self.layers, self.factors):
            M = f.G_evecs.T @ lay.gather(V) @ f.A_evecs
            inv, z = _safe_reciprocal(f.eigenvalues + shift)
            null += z
            lay.scatter(X, f.G_evecs @ (M * inv) @ f.A_evecs.T)
        info.update(null_directions=null)
        return X

    # ------------------------------------------------------------------ streaming
    def _chunks(self, obj: Objective, size: int):
        """:meth:`_stream`, except that when the training set is one chunk, the first pass keeps
        its layers' inputs and output gradients (every target) as it reads them, up to an eighth
        of the memory budget, and every later pass of the fit (EK-FAC makes 2 to
        2 + basis_steps) is served from them: the same numbers, without repeating the forward and
        backward passes. :meth:`_fit` clears them at its start and end."""
        if obj.n > size or not self.corrected:  # several chunks, or one pass (K-FAC)
            yield from self._stream(obj, size)
            return
        if self._kept is not None:
            start, acts, grads = self._kept
            yield start, acts, iter(grads)
            return
        limit = memory_budget(obj.device) // (8 * obj.dtype.itemsize)
        for start, acts, per_target in self._stream(obj, size):
            grads: list[list[torch.Tensor]] | None = []
            numbers = sum(a.numel() for a in acts)

            def keeping(per_target=per_target):
                nonlocal grads, numbers
                for g in per_target:
                    if grads is not None:
                        numbers += sum(t.numel() for t in g)
                        if numbers <= limit:
                            grads.append(g)
                        else:
                            grads = None  # too large: not kept
                    yield g

            yield start, acts, keeping()
            if grads is not None:
                self._kept = (start, acts, grads)

    def _stream(self, obj: Objective, size: int):
        """For each chunk: its first row, the layers' input rows ``(N, T, d_in)``, and an iterator
        giving, one Fisher target at a time (so memory does not grow with the classes of
        ``fisher="ggn"``), the gradients at the layers' outputs ``(N, T, d_out)``, scaled by the
        root of the targets' weights."""
        for start in range(0, obj.n, size):
            Xc, yc = obj.X[start : start + size], obj.y[start : start + size]
            out, captured = self._forward(obj, Xc)
            outs = [captured[lay.name][1] for lay in self.layers]
            acts = [lay.rows(captured[lay.name][0]) for lay in self.layers]
            targets = self._targets(obj, out, yc, start)

            def per_target(out=out, outs=outs, targets=targets):
                for j, (t, w) in enumerate(targets):
                    losses = per_sample_loss(out, t, obj.loss)
                    if w is not None:
                        losses = losses * w.sqrt()
                    gs = torch.autograd.grad(losses.sum(), outs, allow_unused=True,
                                             retain_graph=j + 1 < len(targets))
                    yield [lay.output_rows(torch.zeros_like(o) if g is None else g.detach())
                           for lay, o, g in zip(self.layers, outs, gs)]

            yield start, acts, per_target()

    def _forward(self, obj: Objective, Xc: torch.Tensor) -> tuple[torch.Tensor, dict[str, tuple]]:
        """The model's outputs on ``Xc`` (with a graph back to the layers' outputs) and each layer's
        input and output, captured by forward hooks that are removed before returning."""
        captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

        def hook_for(lay: Layer):
            def hook(module, inputs, output):
                if lay.name in captured:
                    raise UnsupportedLayerError(
                        f"layer {lay.name!r} runs more than once per forward pass (a shared "
                        f"layer): {self.name} needs one call per layer; pass params=[...] without "
                        "its parameters, or use solver='diagonal', 'cg' or 'exact'")
                captured[lay.name] = (inputs[0].detach(), output)
                # the model continues with a copy, so an in-place operation after the layer
                # (ReLU(inplace=True)) cannot change the tensor whose gradient is taken
                return output.clone()
            return hook

        handles = [lay.module.register_forward_hook(hook_for(lay)) for lay in self.layers]
        try:
            with torch.enable_grad(), eval_mode(obj.model):
                theta = obj.theta.detach().requires_grad_(True)
                out = obj.outputs(theta, Xc)
        finally:
            for h in handles:
                h.remove()
        missing = [lay.name for lay in self.layers if lay.name not in captured]
        if missing:
            raise UnsupportedLayerError(
                f"the layers {', '.join(missing)} own parameters in play but are not called by "
                f"the model's forward pass as modules (their weights are used some other way); "
                f"{self.name} needs module calls: pass params=[...] without them, or use "
                "solver='diagonal', 'cg' or 'exact'")
        return out, captured

    def _auto_chunk(self, obj: Objective) -> int:
        """Rows per chunk from the memory budget and one probe row: each row holds every
        layer's inputs and output gradients (a few copies), and for convolutions a per-example
        gradient in the correction pass."""
        _, captured = self._forward(obj, obj.X[:1])
        numbers = 0
        for lay in self.layers:
            inp, out = captured[lay.name]
            t = _positions(lay.module, inp)
            numbers += 4 * (t * lay.d_in + out.numel()) + inp.numel() + (lay.d_in * lay.d_out if t > 1 else 0)
        per_row = numbers * obj.dtype.itemsize
        return max(1, min(obj.n, memory_budget(obj.device) // max(1, per_row)))


def _eigh(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of a symmetric positive semi-definite factor (in float64; eigenvalues clipped at
    0, as rounding can leave them at -1e-17)."""
    evals, evecs = torch.linalg.eigh(0.5 * (M + M.T).double())
    return evals.clamp_min(0).to(M.dtype), evecs.to(M.dtype)


class KFACSolver(_KroneckerSolver):
    """K-FAC (Martens & Grosse 2015; convolutions: Grosse & Martens 2016), as Kronfluence 1.0.1
    defines it: the Fisher (``fisher``: sampled by default) made block-diagonal over layers, each
    block ``A kron G``, plus weight decay.

    For each ``nn.Linear``/``nn.Conv2d`` whose parameters are in play: ``a`` its input activation
    with a 1 appended when the bias is in play (a convolution's ``a`` are its input patches,
    ``F.unfold`` with the layer's kernel, stride, padding and dilation: ``in_channels * kh * kw``
    numbers per output location, the layout of the weight itself; a Linear applied to ``(N, ..., d)``
    has a position per leading index); ``ds`` the gradient of the loss at the layer's output (its
    pre-activation), per position. ``A = mean over rows and positions of a a^T`` and ``G = the
    same of ds ds^T`` are Kronfluence's factors exactly; with ``T`` positions per example the
    block is ``T (A kron G)`` (Kronfluence's K-FAC omits the factor ``T``, which matters for
    convolutions only; its EK-FAC is unaffected). With eigenpairs ``A = Q_A L_A Q_A^T`` and
    ``G = Q_G L_G Q_G^T``, the solve is, per layer,
    ``X = Q_G [(Q_G^T V Q_A) / (T L_G L_A^T + weight_decay + damping)] Q_A^T``: the factors are
    fitted once (one streamed pass) and every damping costs two small matrix products per layer.
    Exact for one layer with mse loss and ``fisher="ggn"``, where the GGN is ``E[a a^T] kron I``.
    """

    name = "kfac"
    label = "K-FAC"
    summary = "Kronecker-factored Fisher per Linear/Conv2d layer + weight decay (Martens & Grosse 2015)"
    Settings = KFACSettings
    corrected = False


class EKFACSolver(_KroneckerSolver):
    """EK-FAC (George et al. 2018; as Grosse et al. 2023 and Kronfluence 1.0.1 use it): a
    Kronecker eigenbasis ``Q_G kron Q_A``, with the diagonal in that basis re-fitted to the
    per-example gradients: ``Lambda = (1/n) sum_n (Q_G^T g_n Q_A)^2``, with
    ``g_n = sum over positions of ds a^T`` the example's gradient matrix of the layer (for the
    chosen ``fisher`` targets). That is the diagonal, in that basis, of the layer's Fisher block
    itself, the best approximation of the block in that basis (Frobenius norm). The solve is
    ``X = Q_G [(Q_G^T V Q_A) / (Lambda + weight_decay + damping)] Q_A^T``.

    The basis (``basis``): ``"kfac"`` takes K-FAC's factors ``E[a a^T]`` and ``E[ds ds^T]`` (see
    :class:`KFACSolver`), as Kronfluence and the paper do: two streamed passes (factors, then the
    correction). ``"nearest"`` (the default) first refines them into the Kronecker product
    nearest the layer's Fisher block (:meth:`_nearest_kronecker`, ``basis_steps`` more passes):
    K-FAC's factors are that product only when a layer's inputs and output gradients are
    independent, which they are not, and the eigenvalue correction can only fix the diagonal of
    the basis it is given. Against the exact scores it ranks closer (mean Spearman over test
    points: Iris MLP 0.606 -> 0.829, digits MLP 0.605 -> 0.616) for 1.6-1.9x the fit time (2.5
    against 1.6 ms on Iris, 36 against 19 ms on 1,438 digits; the scores cost the same). When the
    training set is one chunk its layers' inputs and output gradients are kept for every pass.
    """

    name = "ekfac"
    label = "EK-FAC"
    summary = ("a Kronecker eigenbasis with eigenvalues re-fitted per example (George et al. "
               "2018) + weight decay; by default the nearest Kronecker product's basis")
    Settings = EKFACSettings
    corrected = True

    @classmethod
    def fit_passes(cls, settings: SolverSettings) -> float:
        # factors, the nearest Kronecker basis (at most basis_steps), the correction
        return 2.0 + (settings.basis_steps if settings.basis == "nearest" else 0)


for _cls in (KFACSolver, EKFACSolver, IdentitySolver, DiagonalSolver):
    register_solver(_cls)
