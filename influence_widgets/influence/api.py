"""``iw.influence`` and ``iw.hessian_spectrum``, and the engine that reuses fitted solvers."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .._devices import resolve_device
from .._findings import (
    Finding,
    TrustReport,
    degenerate_findings,
    logit_stats,
    solver_findings,
    stationarity_findings,
)
from .._settings import number
from ..datasets.base import as_tensors
from ..models.architectures import check_input_shape
from ..models.losses import check_targets, output_width, per_sample_loss
from ..models.params import ParamSelection
from ..models.training import TrainedModel, check_forward
from ..models.wrap import warn_probabilities
from .diagnostics import Diagnostics
from .objective import Objective, memory_budget
from .settings import SolverSettings, check_damping
from .solvers import (
    ExactSolver,
    HessianTooLargeError,
    Progress,
    Solver,
    check_memory,
    make_settings,
    solver_class,
)


@dataclass
class InfluenceResult:
    """Scores with the settings and solver diagnostics that produced them."""

    values: torch.Tensor
    solver: str
    damping: float
    params: str
    curvature: str
    weight_decay: float
    diagnostics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    findings: tuple[Finding, ...] = ()  # solver, stationarity and separability checks

    @property
    def report(self) -> TrustReport:
        """The findings as a :class:`TrustReport` (``print(res.report.to_text())``)."""
        return TrustReport(self.findings)


def _unpack_model(model: nn.Module | TrainedModel, weight_decay, loss):
    if weight_decay is not None:
        weight_decay = number(weight_decay, "weight_decay", minimum=0.0,
                              hint="the L2 coefficient the model was trained with")
    if isinstance(model, TrainedModel):
        own = model.config.weight_decay
        if weight_decay is not None and own is not None and not math.isclose(
                weight_decay, own, rel_tol=1e-6, abs_tol=1e-12):
            warnings.warn(
                f"weight_decay={weight_decay:g} is not the weight decay this model was trained "
                f"with ({own:g}): the weight decay given does not match how this model was "
                "trained, so the Hessian is that of another objective, the trained parameters "
                "are not at its minimum, and the estimates are off; leave weight_decay out to "
                "use the model's own", RuntimeWarning, stacklevel=4)
        wd = own if weight_decay is None else weight_decay
        return model.model, wd, loss or model.config.loss, model.spec
    return model, (0.0 if weight_decay is None else weight_decay), loss or "cross_entropy", None


def _check_train_set(model: nn.Module | TrainedModel, X: torch.Tensor, y: torch.Tensor) -> None:
    """A warning when a TrainedModel is given a training set that is not its own (content hash
    of its rows, in any order): another split, a part, duplicated rows, a foreign set."""
    if not isinstance(model, TrainedModel):
        return
    problem = model.training_set_problem(X, y)
    if problem is not None:
        warnings.warn(
            f"{problem}: this is not the model's own training set, so the Hessian, the 1/n "
            "and the training gradients describe another objective than the one the model "
            "minimised, and every estimate is off; pass the model's own rows (tm.train, or "
            "tm.data.train)", RuntimeWarning, stacklevel=4)


def _has_bool(x: Any) -> bool:
    if isinstance(x, bool | np.bool_):
        return True
    if isinstance(x, torch.Tensor | np.ndarray):
        return x.dtype in (torch.bool, np.bool_)
    if isinstance(x, list | tuple):
        return any(_has_bool(v) for v in x)
    return False


def _check_indices(test_indices, n_test: int) -> torch.Tensor:
    """Row numbers of the test set as int64: integers (python, numpy or tensors, or floats without
    a fractional part); bools, NaN and fractional values are refused, never truncated."""
    if _has_bool(test_indices):
        raise TypeError("test_indices holds booleans, which are not row numbers; pass integer "
                        "indices (for a boolean mask over the test set: mask.nonzero().flatten())")
    try:
        raw = torch.as_tensor(test_indices).reshape(-1)
        if raw.is_floating_point() and not isinstance(test_indices, torch.Tensor):
            raw = torch.as_tensor(test_indices, dtype=torch.float64).reshape(-1)  # not float32
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"test_indices must be integer row numbers of the test set (a list, range, "
                        f"array or tensor of ints), got {test_indices!r}") from e
    if raw.is_complex():
        raise TypeError(f"test_indices must be integer row numbers, got {raw.dtype} values")
    if raw.is_floating_point():
        bad = raw[~torch.isfinite(raw) | (raw != raw.round())]
        if bad.numel():
            raise ValueError(f"test index {bad[0].item()!r} is not an integer; test_indices must "
                             "be integer row numbers (e.g. test_indices=[0, 3]): none is rounded")
    idx = raw.to(torch.long)
    if idx.numel() == 0:
        raise ValueError("test_indices is empty; pass at least one test index")
    bad = idx[(idx < 0) | (idx >= n_test)]
    if bad.numel():
        raise IndexError(f"test index {int(bad[0])} is out of range: the test set has {n_test} points "
                         f"(valid indices 0..{n_test - 1})")
    return idx


def _check_module(module: nn.Module) -> None:
    """A clear error for a model influence cannot work with: no parameters, parameters not
    materialised (meta device), or a floating dtype other than float32/float64."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"model must be a TrainedModel or an nn.Module, got {type(module).__name__}")
    tensors = list(module.parameters()) + list(module.buffers())
    if next(module.parameters(), None) is None:
        raise ValueError("the model has no parameters: there is nothing to estimate influence on")
    if any(t.is_meta for t in tensors):
        raise ValueError("the model's parameters are on the meta device (not materialised); load "
                         "its weights first (e.g. model.to_empty(device='cpu') then "
                         "model.load_state_dict(...))")
    low = sorted({str(t.dtype).replace("torch.", "") for t in tensors
                  if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64)})
    if low:
        raise TypeError(f"influence needs float32 or float64; the model has {', '.join(low)} "
                        "tensors: call model.float() or model.double() (a copy, if you want to keep "
                        "the original)")
    kinds = {}
    for name, p in module.named_parameters():
        if p.is_floating_point():
            kinds.setdefault(str(p.dtype).replace("torch.", ""), name)
    if len(kinds) > 1:
        which = ", ".join(f"{d} (e.g. {n!r})" for d, n in sorted(kinds.items()))
        raise TypeError(f"the model mixes parameter dtypes: {which}; influence needs one: call "
                        "model.double() (or model.float()) on it, or on a copy")
    for name, p in module.named_parameters():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            raise ValueError(f"the model's parameter {name!r} holds NaN or inf: the weights are "
                             "broken (training diverged?), not the inputs; retrain with a lower "
                             "learning rate or load a good checkpoint")


class InfluenceEngine:
    """Holds one objective and its fitted solvers, so a new test point or a new damping of the exact
    solver costs no new Hessian. :func:`influence` is a one-shot front end over it.

    ``hvp_mode`` and ``cache_graph`` go to :class:`Objective` (``cache_graph=False`` frees the
    autograd graph kept at the trained parameters between products, for models whose activations
    are large).

    Memory never grows as ``n_train x p``: :meth:`scores` solves for the test side once (``n_test
    x p`` inverse-HVPs), then streams the training set, computing each chunk's per-sample
    gradients (:meth:`Objective.psg_chunk_size` rows, from the device's fixed memory budget) and
    its dot products, and letting the chunk go. When the whole training set is one chunk (its
    gradients within an eighth of the budget, or ``chunk_size >= n_train``) that one chunk is kept
    for the next call. The test gradients of the last call are kept too (``n_test x p``).
    """

    def __init__(self, model: nn.Module | TrainedModel, train: Any, *, weight_decay: float | None = None,
                 params: ParamSelection = "all", loss: str | None = None, curvature: str = "hessian",
                 device: str | torch.device | None = None, chunk_size: int | None = None,
                 hvp_mode: str = "auto", cache_graph: bool | None = None) -> None:
        module, wd, loss, spec = _unpack_model(model, weight_decay, loss)
        _check_module(module)
        if chunk_size is not None:
            chunk_size = number(chunk_size, "chunk_size", integer=True, minimum=1,
                                hint="rows per chunk of per-sample gradients, or None")
        X, y = as_tensors(train)
        if X.shape[0] == 0:
            raise ValueError("the training set is empty (0 rows); influence needs the training "
                             "points the model was trained on: pass them as (X, y)")
        _check_train_set(model, X, y)
        if device is not None:
            dev = resolve_device(device)
            if next(module.parameters()).device != dev:
                module = _copy_to(module, dev)
        first = next(module.parameters())
        check_forward(module, X.to(first.device, first.dtype))
        check_input_shape(module, X.to(first.device, first.dtype), spec)
        self.n_outputs = output_width(module, X.to(first.device, first.dtype))
        check_targets(y, self.n_outputs, loss, "training")
        if loss == "cross_entropy":
            warn_probabilities(module, X.to(first.device, first.dtype), "iw.influence",
                               stacklevel=4)
        self.module = module
        self.objective = Objective(module, X.to(first.device, first.dtype), y, loss=loss,
                                   weight_decay=wd, params=params, curvature=curvature,
                                   chunk_size=chunk_size, hvp_mode=hvp_mode, cache_graph=cache_graph)
        self._solvers: dict[tuple, Solver] = {}
        self._one_chunk: torch.Tensor | None = None  # the training gradients, when they are one chunk
        self._last_test: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._grad_norm: float | None = None
        self.fits = 0

    @property
    def grad_norm(self) -> float:
        """Norm of the training objective's gradient at the trained parameters (0 at a minimum):
        :meth:`Objective.gradient`, computed once."""
        self._check_training()
        return self._grad_norm

    @property
    def train_grads(self) -> torch.Tensor:
        """Every training row's loss gradient, ``(n_train, p)``, computed on demand and not kept
        (unless the training set is one chunk). Beware its size, ``n_train x p`` numbers (440 GB
        for a ResNet-18 on 10,000 images): :meth:`scores` never needs it, it streams the rows."""
        obj = self.objective
        G = torch.empty(obj.n, obj.p, device=obj.device, dtype=obj.dtype)
        for start, Gc in self._train_grad_chunks():
            G[start : start + Gc.shape[0]] = Gc
        return G

    def _train_grad_chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start, gradients of training rows start .. start + len)``, chunk by chunk, each
        checked for NaN/inf (the rows named); the one chunk is kept when it is the whole set."""
        if self._one_chunk is not None:
            yield 0, self._one_chunk
            return
        obj = self.objective
        size = obj.psg_chunk_size(obj.n)
        for start, G in obj.iter_per_sample_grads(what="training"):
            if size >= obj.n:
                self._one_chunk = G
            yield start, G

    def _train_dots(self, ihvp: torch.Tensor, progress: Progress | None = None) -> torch.Tensor:
        """``ihvp @ G_train.T / n`` without ``G_train``: column block by column block, one
        training chunk alive at a time (``progress`` hears of each chunk, when there are several:
        ``{"stage": "training gradients"}``)."""
        obj = self.objective
        values = torch.empty(ihvp.shape[0], obj.n, device=ihvp.device, dtype=ihvp.dtype)
        several = self._one_chunk is None and obj.psg_chunk_size(obj.n) < obj.n
        for start, G in self._train_grad_chunks():
            end = start + G.shape[0]
            values[:, start:end] = ihvp @ G.T / obj.n
            if progress is not None and several:
                progress(end, obj.n, {"stage": "training gradients"})
        return values

    def _check_training(self) -> None:
        """Once per engine, before any solve: the objective's gradient at theta (its norm is
        :attr:`grad_norm`) is finite, or a ``FloatingPointError`` names the training rows whose
        gradients are NaN/inf (one pass of per-sample gradients, only then)."""
        if self._grad_norm is not None:
            return
        obj = self.objective
        g = obj.gradient()
        if not torch.isfinite(g).all():
            for _ in self._train_grad_chunks():  # raises, naming the rows
                pass
            raise FloatingPointError(
                "the training objective's gradient is NaN/inf at the trained parameters although "
                "every per-sample gradient is finite; check the weights (and weight_decay) for "
                "NaN/inf")
        self._grad_norm = float(g.norm())

    def _test_grads(self, Xt: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
        """Per-sample gradients of the test rows, ``(n_test, p)``; those of the last call are
        kept, and reused when the same rows come again (another solver, damping or setting)."""
        obj = self.objective
        Xt = Xt.to(obj.device, obj.dtype)
        yt = yt.to(obj.device)
        hit = self._last_test
        if (hit is not None and hit[0].shape == Xt.shape and hit[1].shape == yt.shape
                and hit[1].dtype == yt.dtype and torch.equal(hit[0], Xt) and torch.equal(hit[1], yt)):
            return hit[2]
        self._last_test = None  # let the old ones go before computing the new
        if (self._one_chunk is None and obj.psg_chunk_size(obj.n) >= obj.n
                and obj.psg_chunk_size(obj.n + Xt.shape[0]) >= obj.n + Xt.shape[0]):
            # the training set is one chunk, to be kept: its rows and the test rows in one pass
            both = obj.per_sample_grads(torch.cat([obj.X, Xt]), torch.cat([obj.y, yt]),
                                        check=False)
            self._one_chunk = obj.check_finite(both[: obj.n], "training")
            G = both[obj.n :]
        else:
            G = obj.per_sample_grads(Xt, yt, check=False)
        G = obj.check_finite(G, "test")
        self._last_test = (Xt.clone(), yt.clone(), G)  # copies: the caller may edit its tensors
        return G

    def solver(self, name: str = "exact", settings: SolverSettings | None = None,
               progress: Progress | None = None, **options: Any) -> Solver:
        """The fitted solver ``name`` with these settings (fitted once, then shared by every
        damping and test point). ``settings`` is the solver's own settings class; ``options``
        set (or replace) its fields by name."""
        st = make_settings(name, settings, **options)
        key = (name, st)
        s = self._solvers.get(key)
        if s is None:
            s = solver_class(name)(st).fit(self.objective, progress=progress)
            self.fits += 1
            self._solvers[key] = s
        return s

    def scores(self, test: Any, *, solver: str = "exact", damping: float = 0.0,
               settings: SolverSettings | None = None, test_indices: Any = None,
               progress: Progress | None = None, wd_correction: bool = False,
               **options: Any) -> InfluenceResult:
        """Estimated change in each test loss when each training point is removed (see :func:`influence`)."""
        t0 = time.perf_counter()
        damping = check_damping(damping)
        st = make_settings(solver, settings, **options)
        Xt, yt = as_tensors(test)
        if test_indices is not None:
            idx = _check_indices(test_indices, Xt.shape[0])
            Xt, yt = Xt[idx], yt[idx]
        obj = self.objective
        if tuple(Xt.shape[1:]) != tuple(obj.X.shape[1:]):
            raise ValueError(f"test inputs have shape {tuple(Xt.shape[1:])} per row but the training "
                             f"inputs have {tuple(obj.X.shape[1:])}; use the test split of the same dataset")
        check_targets(yt, self.n_outputs, obj.loss, "test")
        self._check_training()
        check_memory(solver_class(solver), st, obj, Xt.shape[0])  # before allocating anything
        s = self.solver(solver, st, progress)  # fitted before the test gradients: its own
        g_test = self._test_grads(Xt, yt)  # size check comes first
        solved = s.solve(g_test, damping, progress)  # (n_test, p)
        ihvp = solved.X
        values = self._train_dots(ihvp, progress)  # ihvp @ G_train.T / n, training rows streamed
        if wd_correction and obj.weight_decay:
            values = values + (ihvp @ (obj.weight_decay * obj.theta)).unsqueeze(1) / (obj.n - 1)
        diag = dict(solved.diagnostics)
        diag["settings"] = st.options()
        self._warn_indefinite(solved.diagnostics, diag, damping)
        diag["grad_norm"] = self.grad_norm
        report = TrustReport(solver_findings(solved.diagnostics, damping, solver)
                             + self._model_findings(solved.diagnostics, damping))
        # Warned here: what this solve found (the indefinite-Hessian warning went out above, in
        # its established wording). The model's own findings (stationarity, separability) ride
        # on the result unwarned, as every estimate of the model would repeat them:
        # ``res.report.warn()`` emits them too.
        TrustReport(tuple(f for f in report if f.source == "estimate"
                          and f.code != "indefinite-hessian")).warn(stacklevel=3)
        return InfluenceResult(values.detach(), solver, damping, obj.params_label, obj.curvature,
                               obj.weight_decay, diag, time.perf_counter() - t0, report.findings)

    @staticmethod
    def _warn_indefinite(typed: Diagnostics, diag: dict[str, Any], damping: float) -> None:
        lo = typed.min_eigenvalue
        if lo is not None and lo + damping <= 0:
            diag["warning"] = (f"H is indefinite: its most negative eigenvalue is {lo:.4g} and damping "
                               f"{damping:.3g} does not make H + damping I positive definite; estimates "
                               f"may be unreliable (try damping > {-lo:.3g} or curvature='ggn')")
            warnings.warn(diag["warning"], RuntimeWarning, stacklevel=4)

    def _model_findings(self, diag: Diagnostics, damping: float) -> tuple[Finding, ...]:
        """Stationarity and the separable regime at the trained parameters (see
        :mod:`influence_widgets._findings`). The objective, training accuracy and logit margin
        take the training outputs (kept from the gradient graphs, else one forward pass), once
        per engine."""
        obj = self.objective
        stats = getattr(self, "_fit_stats", None)
        if stats is None:
            acc = margin = None
            out = obj.train_outputs()  # value and logits from one set of outputs
            with torch.no_grad():
                value = (per_sample_loss(out, obj.y, obj.loss).sum() / obj.n
                         + 0.5 * obj.weight_decay * (obj.theta**2).sum())
            if obj.loss == "cross_entropy":
                acc, margin = logit_stats(out, obj.y)
            stats = self._fit_stats = (float(value), acc, margin)
        value, acc, margin = stats
        return (stationarity_findings(value, self.grad_norm, params=obj.params_label)
                + degenerate_findings(value, acc, diag.top_eigenvalue, damping, margin,
                                      weight_decay=obj.weight_decay, loss=obj.loss))


def _copy_to(module: nn.Module, device: torch.device) -> nn.Module:
    import copy

    return copy.deepcopy(module).to(device)


def influence(model: nn.Module | TrainedModel, train: Any, test: Any, *, weight_decay: float | None = None,
              solver: str = "exact", damping: float = 0.0, params: ParamSelection = "all",
              loss: str | None = None, device: str | torch.device | None = None,
              curvature: str = "hessian", test_indices: Any = None, chunk_size: int | None = None,
              wd_correction: bool = False, return_result: bool = False,
              progress: Progress | None = None, settings: SolverSettings | None = None,
              **solver_options: Any) -> torch.Tensor | InfluenceResult:
    """Estimated influence of every training point on every test point.

    Returns a ``(n_test, n_train)`` tensor whose entry ``[t, i]`` estimates the *change in the loss
    of test point t when training point i is removed and the model retrained*; positive means i
    was helping t. The first-order estimate is::

        (1 / n) * g_t^T (H + damping * I)^{-1} g_i

    with ``g`` per-sample loss gradients at the trained parameters, ``n`` the number of training
    points and ``H`` the curvature (``curvature="hessian"``, or ``"ggn"``) of the training objective
    ``mean_i loss_i + (weight_decay / 2) ||theta||^2`` over the parameters in ``params``.

    Args:
        model: a ``TrainedModel`` (its weight decay and loss are used unless given) or an ``nn.Module``.
        train, test: ``(X, y)`` tensor pairs or torch Datasets.
        weight_decay: the L2 coefficient the model was trained with (``None``: from the
            ``TrainedModel``, else 0.0).
        solver: a registered name ("exact", "cg", "lissa", "arnoldi", "kfac", "ekfac",
            "identity", "diagonal", or one added with ``register_solver``; the list and every
            solver's settings: ``python -m influence_widgets list``).
            Its settings are its own dataclass (``ExactSettings``, ``CGSettings``,
            ``LiSSASettings``, ``ArnoldiSettings``: every field documented there), passed as
            ``settings=`` or field by field as ``solver_options`` (e.g. cg: ``tol``,
            ``max_iter``; lissa: ``scale``, ``steps``, ``repeats``, ``batch_size``; arnoldi:
            ``rank``). An option the solver does not have is a ``TypeError``.
        damping: added to the curvature, ``(H + damping I)``; a finite number >= 0.
        params: "all", "last_layer" or a list of parameter names.
        test_indices: score only these rows of ``test``.
        wd_correction: add the term ``g_t^T H^{-1} (weight_decay theta) / (n - 1)`` that retraining
            on ``n - 1`` points with the same weight decay adds to every LOO effect (off by default).
        return_result: return an :class:`InfluenceResult` with the solver's diagnostics.
    """
    engine = InfluenceEngine(model, train, weight_decay=weight_decay, params=params, loss=loss,
                             curvature=curvature, device=device, chunk_size=chunk_size)
    res = engine.scores(test, solver=solver, damping=damping, settings=settings,
                        test_indices=test_indices, progress=progress,
                        wd_correction=wd_correction, **solver_options)
    _warn_not_stationary(res)
    return res if return_result else res.values


def _warn_not_stationary(res: InfluenceResult) -> None:
    """The one-shot front end says out loud what the engine only records: a model that is not
    at a stationary point of the objective the estimate uses. Its most common cause is a weight
    decay that is not the one the model was trained with (AdamW's decoupled decay, a value left
    out), which LOO retraining would then share, so the two would agree and nothing else says."""
    f = TrustReport(res.findings).get("not-stationary")
    if f is None:
        return
    warnings.warn(
        f"{f.what}. The model is not at a minimum of the objective the estimate uses (mean loss "
        f"+ (weight_decay / 2) ||theta||^2 with weight_decay={res.weight_decay:g}): the weight "
        "decay given may not match how this model was trained (AdamW's decoupled decay, or "
        "weight_decay left out), or it was not trained to convergence. The estimates, and "
        "leave-one-out retrains under the same objective, are then off. Pass the weight decay "
        f"the optimiser used, or {f.fix}", RuntimeWarning, stacklevel=3)


def hessian_spectrum(model: nn.Module | TrainedModel, train: Any, *, weight_decay: float | None = None,
                     params: ParamSelection = "all", loss: str | None = None, curvature: str = "hessian",
                     method: str = "auto", k: int = 10, max_exact: int = 4000,
                     device: str | torch.device | None = None,
                     max_bytes: int | None = None) -> dict[str, Any]:
    """Eigenvalues of the training objective's curvature at the trained parameters.

    ``method="exact"`` returns all eigenvalues (ascending); ``"lanczos"`` the top and bottom ``k``
    through scipy's ``eigsh`` on a ``LinearOperator`` of HVPs; ``"auto"`` is exact up to
    ``max_exact`` parameters. Returns ``{"eigenvalues", "top", "bottom", "method", "n_params"}``.
    ``"exact"`` first checks that the ``p x p`` matrices fit in ``max_bytes`` (default: the exact
    solver's limit) and raises :class:`HessianTooLargeError` naming the bytes if not.
    """
    k = number(k, "k", integer=True, minimum=1,
               hint="how many of the top and of the bottom eigenvalues lanczos finds")
    if method not in ("auto", "exact", "lanczos"):
        raise ValueError(f"unknown method {method!r}; use 'auto', 'exact' or 'lanczos'")
    engine = InfluenceEngine(model, train, weight_decay=weight_decay, params=params, loss=loss,
                             curvature=curvature, device=device)
    obj = engine.objective
    if method == "auto":
        method = "exact" if obj.p <= max_exact else "lanczos"
    if method == "exact":
        need = ExactSolver.required_bytes(obj.p, obj.dtype.itemsize)
        limit = max_bytes if max_bytes is not None else memory_budget(obj.device) * 2
        if need > limit:
            raise HessianTooLargeError(
                f"hessian_spectrum(method='exact') needs about {need:,} bytes ({need / 1e9:.2f} GB) "
                f"for the {obj.p} x {obj.p} Hessian ({obj.dtype}), over the {limit:,} bytes "
                f"({limit / 1e9:.2f} GB) allowed; use method='lanczos' (the top and bottom k "
                "eigenvalues from Hessian-vector products), params='last_layer', or a larger "
                "max_bytes if the memory is there")
        ev = torch.linalg.eigvalsh(obj.hessian()).cpu()
        return {"eigenvalues": ev, "top": float(ev[-1]), "bottom": float(ev[0]), "method": "exact",
                "n_params": obj.p}
    if method != "lanczos":
        raise ValueError(f"unknown method {method!r}; use 'auto', 'exact' or 'lanczos'")
    import numpy as np
    from scipy.sparse.linalg import LinearOperator, eigsh

    def mv(v: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(np.asarray(v).reshape(-1), dtype=obj.dtype, device=obj.device)
        return obj.hvp(t).detach().cpu().double().numpy()

    op = LinearOperator((obj.p, obj.p), matvec=mv, dtype=np.float64)
    if obj.p < 3:  # eigsh needs k < p - 1 vectors: so small a Hessian is simply built
        ev = torch.linalg.eigvalsh(obj.hessian()).cpu()
        return {"eigenvalues": ev, "top": float(ev[-1]), "bottom": float(ev[0]),
                "method": "exact", "n_params": obj.p}
    k = min(k, obj.p - 2)
    top = eigsh(op, k=k, which="LA", return_eigenvectors=False, tol=1e-6)
    bottom = eigsh(op, k=k, which="SA", return_eigenvectors=False, tol=1e-6)
    ev = torch.as_tensor(np.unique(np.concatenate([bottom, top])))
    return {"eigenvalues": ev, "top": float(ev[-1]), "bottom": float(ev[0]), "method": "lanczos",
            "n_params": obj.p}
