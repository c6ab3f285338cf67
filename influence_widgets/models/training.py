"""Training as one functional engine, shared by :func:`train`, leave-one-out retraining, the
noise floor and PBRF.

By default a run optimises the training objective of DESIGN.md,
``sum_i w_i * loss_i / sum_i w_i + (weight_decay / 2) * ||theta||^2``, with ``w_i = 1`` for a
normal run and ``w_i = 0`` for removed points; another objective (PBRF's) plugs into the same
loops as a :class:`CopyObjective`. ``C`` copies of the parameters can be trained at
once ("stacked" along a leading dimension, forward through ``torch.func.vmap``): first-order
optimisers (SGD, Adam) act element-wise, so stacked copies follow exactly the trajectories they
would follow one at a time; L-BFGS keeps a history, a line search and a stop per copy, so it
trains them together as well (only batch norm in training mode, whose statistics are shared,
trains copy by copy).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Protocol

import torch
from torch import nn
from torch.func import functional_call, vmap

from .._devices import dtype_name, resolve_device, resolve_dtype
from .._settings import number
from .architectures import ModelSpec
from .losses import LOSSES, cast_targets, per_sample_loss
from .modes import eval_mode, module_mode
from .params import ParamSelection, select_params

OPTIMIZERS = ("sgd", "adam", "lbfgs")
Progress = Callable[[int, int, dict[str, Any]], None]


@dataclass(frozen=True)
class TrainConfig:
    """How a model is (re)trained; the same config retrains it the same way.

    A config holds the *schedule* (optimiser, lr, steps, batch size, dtype, seed) and, for
    training, the *objective* (``loss``, ``weight_decay``). The objective belongs to the model:
    when a config is used to *retrain* a trained model (``leave_one_out`` and the other ground
    truths), ``loss=None`` and ``weight_decay=None`` (the defaults) mean "the model's own", and
    an explicit value that differs from the model's is an error unless the caller asks for it
    (``allow_different_objective=True``), in which case the result records it. For training,
    ``None`` means cross-entropy and no weight decay (:meth:`resolved`).

    Attributes:
        optimizer: "sgd", "adam" or "lbfgs" (full batch only).
        lr: learning rate.
        steps: optimiser updates; if ``None`` it comes from ``epochs`` (default 1000 steps).
        epochs: passes over the data (``steps = epochs * ceil(n / batch_size)``).
        batch_size: mini-batch size; ``None`` is full batch.
        weight_decay: the L2 term ``(weight_decay / 2) * ||theta||^2`` of the objective, the same
            for every optimiser (it is part of the loss, not an optimiser option); ``None``: the
            model's own when retraining, 0 when training.
        momentum: SGD momentum.
        seed: seeds the initialisation (models built from a spec) and the batch order.
        device: "cpu", "cuda" or ``None`` (CUDA when available).
        dtype: "float32" or "float64" (use float64 for models whose influence is checked exactly).
        loss: "cross_entropy" or "mse"; ``None``: the model's own when retraining,
            cross-entropy when training.
        polish_steps: after the main optimiser, up to this many full-batch L-BFGS iterations to
            reach a stationary point (influence functions assume one); 0 turns it off.
        grad_tol: gradient norm under which a run counts as converged (and L-BFGS stops).
    """

    optimizer: str = "adam"
    lr: float = 0.01
    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    weight_decay: float | None = None
    momentum: float = 0.0
    seed: int = 0
    device: str | None = None
    dtype: str = "float32"
    loss: str | None = None
    polish_steps: int = 0
    grad_tol: float = 1e-5

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid names: {', '.join(OPTIMIZERS)}")
        if self.loss is not None and self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; valid names: {', '.join(LOSSES)}")
        # numbers of any kind (numpy, 0-d tensors) become Python numbers; text or a fraction
        # where an integer belongs is an error naming the field
        for name, integer in (("lr", False), ("momentum", False), ("grad_tol", False),
                              ("weight_decay", False), ("seed", True), ("steps", True),
                              ("epochs", True), ("batch_size", True), ("polish_steps", True)):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, number(v, name, integer=integer, owner="TrainConfig"))
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give steps or epochs, not both")
        for name in ("steps", "epochs", "batch_size"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {v!r}")
        for name in ("weight_decay", "momentum", "grad_tol"):
            v = getattr(self, name)
            if v is None and name == "weight_decay":
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if isinstance(self.polish_steps, bool) or not isinstance(self.polish_steps, int):
            raise ValueError(f"polish_steps must be an integer >= 0, got {self.polish_steps!r}")
        if (self.weight_decay or 0.0) < 0 or self.momentum < 0 or self.polish_steps < 0 or self.grad_tol <= 0:
            raise ValueError("weight_decay, momentum and polish_steps must be >= 0 and grad_tol > 0")
        if str(self.dtype).replace("torch.", "") in ("float16", "bfloat16"):
            raise ValueError(f"TrainConfig dtype={self.dtype!r}: half precision is too coarse "
                             "for training to a minimum and for Hessians (its rounding, about "
                             "1e-3, swamps the gradients near a minimum, and the loss turns "
                             "NaN); use dtype='float32' or 'float64'")
        if self.optimizer == "lbfgs" and self.batch_size is not None:
            raise ValueError("lbfgs is full batch: set batch_size=None or use sgd/adam")
        resolve_dtype(self.dtype)

    def n_steps(self, n_train: int) -> int:
        """The number of optimiser updates for ``n_train`` points."""
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            b = self.batch_size or n_train
            return self.epochs * math.ceil(n_train / b)
        return 1000

    @property
    def torch_dtype(self) -> torch.dtype:
        return resolve_dtype(self.dtype)

    @property
    def objective(self) -> dict[str, Any]:
        """The objective fields as given (``None``: not set here)."""
        return {"loss": self.loss, "weight_decay": self.weight_decay}

    def resolved(self) -> TrainConfig:
        """This config with the training defaults for an unset objective (cross-entropy, no
        weight decay): what :func:`train` uses and a :class:`TrainedModel` keeps."""
        if self.loss is not None and self.weight_decay is not None:
            return self
        return replace(self, loss=self.loss or "cross_entropy",
                       weight_decay=0.0 if self.weight_decay is None else self.weight_decay)

    def replace(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def preset(cls, name: str, **changes: Any) -> TrainConfig:
        """Named presets: "exact" (float64 L-BFGS to a stationary point), "adam", "quick"."""
        presets = {
            "exact": cls(optimizer="lbfgs", lr=1.0, steps=2000, dtype="float64", grad_tol=1e-6),
            "adam": cls(optimizer="adam", lr=0.01, steps=3000, dtype="float64", polish_steps=500),
            "quick": cls(optimizer="adam", lr=0.01, steps=300),
        }
        try:
            return replace(presets[name], **changes)
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; valid names: {', '.join(presets)}") from None


@dataclass
class TrainedModel:
    """A trained model with everything needed to retrain it the same way.

    ``model`` holds the trained parameters; ``init_params`` the parameters it started from;
    ``X_train``/``y_train`` the data it saw; ``diagnostics`` the final objective, the norm of its
    gradient (weight decay included) and whether that is under ``config.grad_tol``.
    """

    model: nn.Module
    config: TrainConfig
    init_params: dict[str, torch.Tensor]
    X_train: torch.Tensor
    y_train: torch.Tensor
    diagnostics: dict[str, Any]
    spec: ModelSpec | None = None
    name: str | None = None
    data: Any = None  # the Data it came from, when known (widgets use its test split)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.X_train, self.y_train

    @property
    def grad_norm(self) -> float:
        return float(self.diagnostics["grad_norm"])

    @property
    def converged(self) -> bool:
        """Whether training reached ``config.grad_tol`` (the trainer's own tolerance; see
        :attr:`health` for whether the model is fit to be explained)."""
        return bool(self.diagnostics["converged"])

    @property
    def health(self) -> Any:
        """The model's :class:`~influence_widgets.models.health.Health` (collapsed, degenerate,
        not stationary, indefinite), assessed once and kept in ``diagnostics["health"]``."""
        from .health import of

        return of(self)

    def training_set_problem(self, X: torch.Tensor, y: torch.Tensor) -> str | None:
        """None when ``(X, y)`` holds the rows this model was trained on (in any order), else
        one line on how it differs. Rows are compared through a content hash of the sorted
        rows (inputs in the model's dtype, then targets), kept once in ``extra``."""
        if X is self.X_train and y is self.y_train:
            return None
        same_shape = (tuple(X.shape) == tuple(self.X_train.shape)
                      and tuple(y.shape) == tuple(self.y_train.shape))
        if same_shape and torch.equal(X.to(self.X_train.device, self.X_train.dtype), self.X_train) \
                and torch.equal(y.to(self.y_train.device, self.y_train.dtype), self.y_train):
            return None  # the very rows, in order: no hash needed
        own = self.extra.get("train_digest")
        if own is None:
            own = self.extra["train_digest"] = rows_digest(self.X_train, self.y_train)
        n, m = int(X.shape[0]), int(self.X_train.shape[0])
        if tuple(X.shape[1:]) == tuple(self.X_train.shape[1:]) and n == m:
            given = rows_digest(X.to(self.X_train.dtype), y.to(self.y_train.dtype))
            if given == own:
                return None
            return (f"the training set given has as many rows as the model's ({n}) but "
                    "other content (another split, edited or resampled rows, or duplicates in "
                    "place of some rows)")
        if n != m:
            return (f"the training set given has {n} rows but the model was trained on {m} "
                    + ("(duplicated rows weigh twice: every estimate changes)" if n > m else
                       "(a part of its training set, or another set)"))
        return (f"the training inputs given have shape {tuple(X.shape[1:])} per row, the model's "
                f"{tuple(self.X_train.shape[1:])}")

    def _status(self) -> str:
        h = self.diagnostics.get("health")
        return (h.get("problems") or ["healthy"])[0] if isinstance(h, dict) else "unknown"

    def __repr__(self) -> str:
        d = self.diagnostics
        return (
            f"TrainedModel({self.name or (self.spec.describe() if self.spec else type(self.model).__name__)}, "
            f"objective={d['objective']:.6g}, grad_norm={d['grad_norm']:.2e}, "
            f"converged={d['converged']}, steps={d['steps']}, health={self._status()})"
        )


def check_forward(module: nn.Module, X: torch.Tensor) -> None:
    """A clear ``TypeError`` when the model's forward does not return one tensor of outputs
    (a tuple or a dict of them, as some libraries' models do), tried on the first two rows."""
    with torch.no_grad(), eval_mode(module):
        try:
            out = module(X[:2])
        except Exception:  # a shape or dtype problem: named by the input-shape check after this
            return
    if not isinstance(out, torch.Tensor):
        kind = type(out).__name__
        keys = f" (keys {sorted(map(str, out))})" if isinstance(out, dict) else ""
        raise TypeError(
            f"the model's forward returns a {kind}{keys}, not one tensor of outputs (N, K); "
            "influence needs the outputs the loss is taken on: wrap the model in a small module "
            "whose forward returns them, e.g. forward(x) = model(x)[0] or model(x)['logits']")


def rows_digest(X: torch.Tensor, y: torch.Tensor) -> str:
    """sha256 of the rows of ``(X, y)`` in sorted order (each row: its input bytes, then its
    target's): equal for the same rows in any order, different as soon as one row differs,
    is missing or is repeated."""
    import hashlib

    import numpy as np

    n = int(X.shape[0])
    xb = X.detach().to("cpu").contiguous().reshape(n, -1).view(torch.uint8).numpy()
    yb = y.detach().to("cpu").contiguous().reshape(n, -1).view(torch.uint8).numpy()
    rows = np.ascontiguousarray(np.concatenate([xb, yb], axis=1))
    keyed = rows.view(np.dtype((np.void, rows.shape[1]))).reshape(-1)
    h = hashlib.sha256(f"{tuple(X.shape)}|{X.dtype}|{tuple(y.shape)}|{y.dtype}|".encode())
    h.update(np.sort(keyed).tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- engine


_DROPOUT = (nn.modules.dropout._DropoutNd, nn.AlphaDropout, nn.FeatureAlphaDropout)


@contextlib.contextmanager
def objective_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """The module's mode while an objective is optimised: training mode when ``training`` (batch
    norm on the batch's statistics) but with every dropout module off, as in the estimate. The
    objective of DESIGN.md, which the estimate differentiates and which training, LOO and every
    other retrain minimise, is one deterministic function of the parameters: dropout noise in
    it would make two identical retrains differ and leave the estimate explaining another
    objective. Every flag is restored afterwards."""
    with module_mode(model, training):
        if not training:
            yield model
            return
        drops = [m for m in model.modules() if isinstance(m, _DROPOUT) and m.training]
        for m in drops:
            m.training = False
        try:
            yield model
        finally:
            for m in drops:
                m.training = True


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class Copies:
    """``C`` stacked copies of a model's trainable parameters, the rest shared and frozen."""

    def __init__(self, model: nn.Module, trainable: dict[str, torch.Tensor], frozen: dict[str, torch.Tensor]):
        self.model = model
        self.trainable = trainable  # name -> (C, *shape) leaf tensors
        self.frozen = frozen  # name -> tensor (parameters not trained, and buffers)
        self.n = next(iter(trainable.values())).shape[0]

    @classmethod
    def stack(cls, model: nn.Module, start: dict[str, torch.Tensor], names: Sequence[str], C: int,
              device: torch.device, dtype: torch.dtype) -> Copies:
        """``C`` copies of ``start[k]`` for every name in ``names`` (fresh leaves on ``device`` in
        ``dtype``); every other tensor of ``start`` is shared, floating ones cast to ``dtype``."""
        leaves = {}
        for k in names:
            v = start[k].detach().to(device=device, dtype=dtype)
            leaves[k] = v.unsqueeze(0).repeat(C, *([1] * v.dim())).requires_grad_(True)
        frozen = {k: v.detach().to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
                  .clone() for k, v in start.items() if k not in leaves}
        return cls(model, leaves, frozen)

    def select(self, c: int) -> Copies:
        """Copy ``c`` alone, as fresh leaves (the frozen tensors stay shared)."""
        return Copies(self.model, {k: v[c : c + 1].detach().clone().requires_grad_(True)
                                   for k, v in self.trainable.items()}, self.frozen)

    def outputs(self, X: torch.Tensor) -> torch.Tensor:
        """Model outputs of every copy: ``(C, N, K)``."""
        if self.n == 1:
            p = {k: v[0] for k, v in self.trainable.items()}
            return functional_call(self.model, {**self.frozen, **p}, (X,)).unsqueeze(0)

        def one(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.model, {**self.frozen, **p}, (x,))

        return vmap(one, in_dims=(0, None))(self.trainable, X)

    def outputs_rows(self, X: torch.Tensor) -> torch.Tensor:
        """Model outputs of every copy on its own rows ``X (C, M, ...)``: ``(C, M, K)``."""
        if self.n == 1:
            return self.outputs(X[0])

        def one(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.model, {**self.frozen, **p}, (x,))

        return vmap(one, in_dims=(0, 0))(self.trainable, X)

    def sq_norms(self, anchor: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``||theta_c - anchor||^2`` per copy ``(C,)``; ``anchor`` is one unstacked copy (None: 0)."""
        return sum(((v if anchor is None else v - anchor[k]).reshape(self.n, -1) ** 2).sum(dim=1)
                   for k, v in self.trainable.items())


def per_copy_grad_norms(obj: torch.Tensor, trainable: dict[str, torch.Tensor]):
    """``obj (C,)`` detached, and the norm of each copy's gradient w.r.t. its stacked leaves."""
    grads = torch.autograd.grad(obj.sum(), list(trainable.values()))
    sq = sum((g.reshape(obj.shape[0], -1) ** 2).sum(dim=1) for g in grads)
    return obj.detach(), sq.sqrt().detach()


class CopyObjective(Protocol):
    """What :func:`fit_copies` minimises: one objective per stacked copy of the parameters."""

    copies: Copies
    training: bool  # the module's mode while optimising (dropout, batch-norm statistics)

    def __call__(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The objective of each copy ``(C,)`` on the training rows ``rows`` (None: all)."""
        ...

    def grad_norms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-batch objective and the norm of its gradient, per copy (both detached)."""
        ...


# (copies, X, y, weights (C, N), config) -> the objective to minimise
ObjectiveFactory = Callable[[Copies, torch.Tensor, torch.Tensor, torch.Tensor, TrainConfig],
                            CopyObjective]


class TrainingObjective:
    """The training objective per copy: ``sum_i w_i loss_i / sum_i w_i + (wd/2)||theta||^2``."""

    training = True

    def __init__(self, copies: Copies, X: torch.Tensor, y: torch.Tensor, weights: torch.Tensor,
                 config: TrainConfig) -> None:
        self.copies, self.X, self.y, self.w = copies, X, y, weights
        config = config.resolved()  # an unset objective trains with the defaults
        self.loss, self.weight_decay = config.loss, config.weight_decay
        self.kept = None  # full batch: each copy's own rows, when they are few (see gather_rows)
        if gather_rows(weights):
            idx = torch.argsort((weights == 0).to(torch.int8), dim=1, stable=True)
            idx = idx[:, : int((weights[0] != 0).sum())]  # (C, M): each copy's kept rows, in order
            self.kept = (X[idx], y[idx], torch.gather(weights, 1, idx))

    def __call__(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        if rows is None and self.kept is not None:
            X, y, w = self.kept
            losses = per_sample_loss(self.copies.outputs_rows(X), y, self.loss)  # (C, M)
        else:
            X, y, w = (self.X, self.y, self.w) if rows is None else (
                self.X[rows], self.y[rows], self.w[:, rows])
            losses = per_sample_loss(self.copies.outputs(X), y, self.loss)  # (C, N)
        wsum = w.sum(dim=1).clamp_min(torch.finfo(w.dtype).tiny)
        obj = (losses * w).sum(dim=1) / wsum
        if self.weight_decay:
            obj = obj + 0.5 * self.weight_decay * self.copies.sq_norms()
        return obj

    def grad_norms(self) -> tuple[torch.Tensor, torch.Tensor]:
        return per_copy_grad_norms(self(), self.copies.trainable)


GATHER_SHARE = 0.75  # a full-batch copy that keeps at most this share of the rows sees only them


def gather_rows(weights: torch.Tensor) -> bool:
    """Whether full-batch copies with these ``weights (C, N)`` train on their own kept rows
    (gathered, ``C x M`` rows) rather than on all ``N`` rows with zeros: every copy keeps the
    same number ``M`` of rows, at most ``GATHER_SHARE * N`` (group removals, LDS subsets). The
    zeros then cost nothing; the objective is the same up to rounding."""
    counts = (weights != 0).sum(dim=1)
    return bool((counts == counts[0]).all()) and int(counts[0]) <= GATHER_SHARE * weights.shape[1]


def fit_copies(
    model: nn.Module,
    start: dict[str, torch.Tensor],
    X: torch.Tensor,
    y: torch.Tensor,
    weights: torch.Tensor,
    config: TrainConfig,
    *,
    trainable: Sequence[str] | None = None,
    steps: int | None = None,
    progress: Progress | None = None,
    polish: bool = True,
    should_stop: Callable[[], bool] | None = None,
    objective: ObjectiveFactory | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train ``C = weights.shape[0]`` copies of ``model`` from ``start`` (a full state dict).

    ``weights`` (C, N) weights each training point per copy (0 removes it). ``objective`` makes
    what is minimised from ``(copies, X, y, weights, config)``; the default is the training
    objective (:class:`TrainingObjective`), which alone is polished by ``config.polish_steps`` of
    L-BFGS when ``polish``. Only the parameters named in ``trainable`` (default: all) change;
    every other tensor stays bit-identical. ``should_stop()`` returning True raises
    ``InterruptedError``. Returns the stacked trained parameters ``name -> (C, *shape)``
    (trainable ones only) and diagnostics (objective and gradient norm per copy, steps, seconds).
    """
    make = objective or TrainingObjective
    config = config.resolved()  # callers that retrain a model resolve its objective before
    names = list(trainable) if trainable is not None else select_params(model, "all")
    C = weights.shape[0]
    n_steps = config.n_steps(X.shape[0]) if steps is None else steps
    t0 = time.perf_counter()
    copies = Copies.stack(model, start, names, C, X.device, X.dtype)
    w = weights.to(device=X.device, dtype=X.dtype)
    obj = make(copies, X, y, w, config)
    if C > 1 and obj.training and _has_batchnorm(model):
        # batch-norm statistics are updated in place in training mode: one copy at a time
        return _in_groups(model, start, X, y, w, config, [[c] for c in range(C)], names=names,
                          steps=n_steps, progress=progress, polish=polish,
                          should_stop=should_stop, objective=objective)
    groups = _row_groups(w) if make is TrainingObjective and _full_batch(config, X) else None
    if groups is not None:
        # copies that keep few rows (LDS subsets) beside some that keep many (the control):
        # each kind trains on its own gathered rows
        return _in_groups(model, start, X, y, w, config, groups, names=names, steps=n_steps,
                          progress=progress, polish=polish, should_stop=should_stop,
                          objective=objective)
    with objective_mode(model, obj.training):
        if config.optimizer == "lbfgs":
            n_steps = _lbfgs(obj, config, n_steps, progress, should_stop)
        else:
            _first_order(obj, X.shape[0], config, n_steps, progress, should_stop)
        if polish and make is TrainingObjective and config.optimizer != "lbfgs":
            _polish(copies, X, y, w, config, should_stop)
    with eval_mode(model):
        final, gn = obj.grad_norms()
    out = {k: v.detach() for k, v in copies.trainable.items()}
    return out, {"objective": final, "grad_norm": gn, "steps": n_steps,
                 "seconds": time.perf_counter() - t0, "nan_step": None}


def _full_batch(config: TrainConfig, X: torch.Tensor) -> bool:
    return config.optimizer == "lbfgs" or (config.batch_size or X.shape[0]) >= X.shape[0]


def _row_groups(w: torch.Tensor) -> list[list[int]] | None:
    """Copies grouped by how many rows they keep, when some group would gather its rows
    (:func:`gather_rows`) and the copies do not all keep the same number; else None."""
    counts = (w != 0).sum(dim=1).tolist()
    if len(set(counts)) == 1:
        return None
    groups: dict[int, list[int]] = {}
    for c, k in enumerate(counts):
        groups.setdefault(k, []).append(c)
    if not any(gather_rows(w[g]) for g in groups.values()):
        return None
    return list(groups.values())


def _in_groups(model: nn.Module, start: dict[str, torch.Tensor], X, y, w, config: TrainConfig,
               groups: list[list[int]], *, names: list[str], steps: int, **kwargs: Any
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """:func:`fit_copies` for each group of copies in turn, the results stacked in the copies'
    order as if trained together (copies never interact: the same numbers up to rounding)."""
    order = [c for g in groups for c in g]
    parts = [fit_copies(model, start, X, y, w[g], config, trainable=names, steps=steps,
                        **kwargs) for g in groups]
    back = torch.argsort(torch.tensor(order))
    stacked = {k: torch.cat([p[k] for p, _ in parts])[back] for k in names}
    diag = {k: torch.cat([d[k] for _, d in parts])[back] for k in ("objective", "grad_norm")}
    diag.update(steps=max(int(d["steps"]) for _, d in parts),
                seconds=sum(d["seconds"] for _, d in parts), nan_step=None)
    return stacked, diag


def _polish(copies: Copies, X, y, w, config: TrainConfig,
            should_stop: Callable[[], bool] | None) -> None:
    """Up to ``config.polish_steps`` full-batch L-BFGS iterations on every copy's training
    objective at once, towards the stationary point influence functions assume."""
    if config.polish_steps:
        _lbfgs(TrainingObjective(copies, X, y, w, config), config, config.polish_steps, None,
               should_stop)


def check_finite_objective(obj: torch.Tensor, step: int) -> None:
    """Raise ``FloatingPointError`` naming the step and copies whose objective is NaN/inf."""
    if not torch.isfinite(obj).all():
        bad = torch.nonzero(~torch.isfinite(obj)).flatten().tolist()
        raise FloatingPointError(
            f"the training loss became NaN/inf at step {step} (copies {bad[:5]}); "
            "lower the learning rate, add weight decay, or check the inputs for NaN"
        )


def _first_order(objective: CopyObjective, n: int, config: TrainConfig, n_steps: int,
                 progress: Progress | None, should_stop: Callable[[], bool] | None) -> None:
    """SGD or Adam on all copies at once; mini-batches in a seeded order (a new one per epoch)."""
    params = list(objective.copies.trainable.values())
    if config.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=config.lr)
    else:
        opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)
    device = params[0].device
    B = config.batch_size or n
    g = torch.Generator().manual_seed(config.seed)
    check_every = 1 if device.type == "cpu" else 25
    order = None
    per_epoch = math.ceil(n / B)
    report_every = max(1, n_steps // 100)
    for step in range(n_steps):
        rows = None
        if B < n:
            j = step % per_epoch
            if j == 0:
                order = torch.randperm(n, generator=g).to(device)
            rows = order[j * B : (j + 1) * B]
        opt.zero_grad(set_to_none=True)
        obj = objective(rows)
        if step % check_every == 0 or step == n_steps - 1:
            check_finite_objective(obj.detach(), step)
        obj.sum().backward()
        opt.step()
        if progress is not None and (step % report_every == 0 or step == n_steps - 1):
            progress(step + 1, n_steps, {"objective": float(obj.detach().mean())})
        if should_stop is not None and should_stop():
            raise InterruptedError(f"training cancelled at step {step + 1} of {n_steps}")


LBFGS_HISTORY = 50  # curvature pairs each copy keeps
LBFGS_REPORT = 10  # iterations between progress reports and should_stop checks
LBFGS_TRIALS = 30  # step sizes a line search tries before it gives up
ARMIJO = 1e-4  # sufficient decrease: f(x + t d) <= f(x) + ARMIJO * t * g.d
APPROX_WOLFE = 0.8  # near round-off, accept a step whose slope is at most this * |g.d| uphill


class _Flat:
    """The stacked trainable leaves ``(C, *shape)`` of a copy objective seen as one ``(C, P)``
    matrix: read, write, and the per-copy gradient of the objective at what was written."""

    def __init__(self, leaves: list[torch.Tensor]) -> None:
        self.leaves = leaves
        self.C = leaves[0].shape[0]
        self.sizes = [v[0].numel() for v in leaves]

    def get(self) -> torch.Tensor:
        return torch.cat([v.detach().reshape(self.C, -1) for v in self.leaves], dim=1)

    def set(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            for v, part in zip(self.leaves, x.split(self.sizes, dim=1)):
                v.copy_(part.view_as(v))

    def evaluate(self, objective: CopyObjective, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective ``(C,)`` and gradient ``(C, P)`` of every copy at ``x``."""
        self.set(x)
        obj = objective()
        grads = torch.autograd.grad(obj.sum(), self.leaves)
        return obj.detach(), torch.cat([g.reshape(self.C, -1) for g in grads], dim=1)


class _History:
    """Each copy's last ``m`` curvature pairs ``(s, y)``, newest last, and the product of its
    L-BFGS inverse-Hessian approximation with a vector in the compact form of Byrd, Nocedal and
    Schnabel (1994): ``H = gamma I + [S, gamma Y] M [S, gamma Y]^T``, two batched triangular
    solves instead of the two-loop recursion's ``2m`` sequential steps. Slots a copy has not
    filled hold zeros and drop out of the product."""

    def __init__(self, C: int, m: int, P: int, like: torch.Tensor) -> None:
        self.m = m
        self.S = like.new_zeros(C, m, P)
        self.Y = like.new_zeros(C, m, P)
        self.SY = like.new_zeros(C, m, m)  # SY[i, j] = s_i . y_j
        self.YY = like.new_zeros(C, m, m)
        self.count = torch.zeros(C, dtype=torch.long, device=like.device)
        self.gamma = like.new_ones(C)

    def push(self, s: torch.Tensor, y: torch.Tensor, keep: torch.Tensor) -> None:
        """Append ``(s[c], y[c])`` to the copies where ``keep[c]`` (dropping their oldest)."""
        if not bool(keep.any()):
            return
        S = torch.cat([self.S[:, 1:], s[:, None]], dim=1)
        Y = torch.cat([self.Y[:, 1:], y[:, None]], dim=1)
        SY = torch.zeros_like(self.SY)
        YY = torch.zeros_like(self.YY)
        SY[:, :-1, :-1] = self.SY[:, 1:, 1:]
        YY[:, :-1, :-1] = self.YY[:, 1:, 1:]
        SY[:, -1, :] = torch.bmm(Y, s[:, :, None])[..., 0]
        SY[:, :, -1] = torch.bmm(S, y[:, :, None])[..., 0]
        yy = torch.bmm(Y, y[:, :, None])[..., 0]
        YY[:, -1, :] = yy
        YY[:, :, -1] = yy
        k = keep[:, None, None]
        self.S, self.Y = torch.where(k, S, self.S), torch.where(k, Y, self.Y)
        self.SY, self.YY = torch.where(k, SY, self.SY), torch.where(k, YY, self.YY)
        self.count = torch.where(keep, (self.count + 1).clamp_max(self.m), self.count)
        self.gamma = torch.where(keep, SY[:, -1, -1] / yy[:, -1], self.gamma)

    def reset(self, which: torch.Tensor) -> None:
        """Forget the pairs of the copies where ``which``."""
        k = which[:, None, None]
        self.S, self.Y = self.S.masked_fill(k, 0), self.Y.masked_fill(k, 0)
        self.SY, self.YY = self.SY.masked_fill(k, 0), self.YY.masked_fill(k, 0)
        self.count = self.count.masked_fill(which, 0)
        self.gamma = self.gamma.masked_fill(which, 1.0)

    def apply(self, g: torch.Tensor) -> torch.Tensor:
        """``H g`` per copy ``(C, P)``; ``g`` itself for a copy without pairs."""
        if not bool(self.count.any()):
            return g
        valid = torch.arange(self.m, device=g.device)[None] >= self.m - self.count[:, None]
        diag = torch.diagonal(self.SY, dim1=1, dim2=2)
        R = torch.triu(self.SY, diagonal=1) + torch.diag_embed(torch.where(valid, diag, 1.0))
        gamma = self.gamma[:, None]
        a = torch.bmm(self.S, g[:, :, None])  # (C, m, 1)
        b = gamma[..., None] * torch.bmm(self.Y, g[:, :, None])
        u = torch.linalg.solve_triangular(R, a, upper=True)
        rhs = (diag * valid)[..., None] * u + gamma[..., None] * torch.bmm(self.YY, u) - b
        p = torch.linalg.solve_triangular(R.transpose(1, 2), rhs, upper=False)
        return (gamma * g + torch.bmm(self.S.transpose(1, 2), p)[..., 0]
                - gamma * torch.bmm(self.Y.transpose(1, 2), u)[..., 0])


def _line_search(flat: _Flat, objective: CopyObjective, x, f, g, d, t, todo):
    """Backtracking on every copy in ``todo`` at once, each from its own step ``t``: a copy
    takes the first step with sufficient decrease (Armijo), or, once the decrease is lost in
    round-off, one whose slope along ``d`` is not steeply uphill (Hager and Zhang's approximate
    Wolfe condition); a rejected step shrinks by quadratic interpolation, kept within [0.1, 0.5]
    of itself. Returns the new point, objective, gradient and which copies found a step."""
    gtd = (g * d).sum(dim=1)
    eps_f = 1e3 * torch.finfo(f.dtype).eps * f.abs()
    x_new, f_new, g_new = x.clone(), f.clone(), g.clone()
    found = torch.zeros_like(todo)
    todo = todo.clone()
    for _ in range(LBFGS_TRIALS):
        ft, gt = flat.evaluate(objective, x + t[:, None] * d)
        slope = (gt * d).sum(dim=1)
        ok = torch.isfinite(ft) & ((ft <= f + ARMIJO * t * gtd)
                                   | ((ft <= f + eps_f) & (slope <= -APPROX_WOLFE * gtd)))
        ok &= todo
        x_new = torch.where(ok[:, None], x + t[:, None] * d, x_new)
        f_new, g_new = torch.where(ok, ft, f_new), torch.where(ok[:, None], gt, g_new)
        found |= ok
        todo &= ~ok
        if not bool(todo.any()):
            break
        # minimiser of the quadratic through f, gtd at 0 and ft at t (half the step if not finite)
        curv = torch.where(torch.isfinite(ft), ft - f - gtd * t, torch.inf)
        quad = -gtd * t * t / (2 * curv.clamp_min(torch.finfo(f.dtype).tiny))
        t = torch.where(todo, torch.minimum(torch.maximum(quad, 0.1 * t), 0.5 * t), t)
    return x_new, f_new, g_new, found


def _lbfgs(objective: CopyObjective, config: TrainConfig, max_iter: int,
           progress: Progress | None, should_stop: Callable[[], bool] | None) -> int:
    """Full-batch L-BFGS on every stacked copy at once, each with its own history, step sizes
    and stop: a copy stops once the norm of its gradient is under ``config.grad_tol``, or when
    no step along steepest descent lowers its objective (stalled in round-off); pairs with
    ``s.y <= eps * y.y`` (no positive curvature) are skipped. A copy's iterates do not depend
    on the other copies, so copies trained together follow the paths they follow alone.
    Returns the iterations done (at most ``max_iter``, the most any copy ran)."""
    flat = _Flat(list(objective.copies.trainable.values()))
    x = flat.get()
    C, P = x.shape
    lr = config.lr if config.optimizer == "lbfgs" else 1.0
    eps = torch.finfo(x.dtype).eps
    f, g = flat.evaluate(objective, x)
    check_finite_objective(f, 0)
    hist = _History(C, LBFGS_HISTORY, P, x)
    active = g.norm(dim=1) >= config.grad_tol
    done = 0
    while done < max_iter and bool(active.any()):
        d = -hist.apply(g)
        gtd = (g * d).sum(dim=1)
        uphill = active & ~(gtd < 0)  # round-off in H: start that copy's history again
        if bool(uphill.any()):
            hist.reset(uphill)
            d = torch.where(uphill[:, None], -g, d)
        d = d * active[:, None]
        # a copy without pairs takes a first step of length lr / max(1, |g|_1) (as torch's L-BFGS)
        t = torch.where(hist.count > 0, lr, lr * (1.0 / g.abs().sum(dim=1)).clamp_max(1.0))
        x_new, f_new, g_new, found = _line_search(flat, objective, x, f, g, d, t, active)
        s, yv = x_new - x, g_new - g
        sy, yy = (s * yv).sum(dim=1), (yv * yv).sum(dim=1)
        hist.push(s, yv, found & (sy > eps * yy) & (yy > 0))
        lost = active & ~found  # no step: forget the pairs, or stop if already steepest descent
        stalled = lost & (hist.count == 0)
        hist.reset(lost)
        x, f, g = x_new, f_new, g_new
        done += 1
        check_finite_objective(f, done)
        active &= ~stalled & (g.norm(dim=1) >= config.grad_tol)
        if done % LBFGS_REPORT == 0 or done == max_iter or not bool(active.any()):
            if progress is not None:
                progress(done, max_iter, {"objective": float(f.mean()),
                                          "grad_norm": float(g.norm(dim=1).max())})
            if should_stop is not None and should_stop() and bool(active.any()):
                raise InterruptedError(f"training cancelled after {done} L-BFGS iterations")
    flat.set(x)
    return done


# ----------------------------------------------------------------------------- front end


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of all parameters and buffers (for checkpoints and restarts)."""
    return {k: v.detach().clone() for k, v in {**dict(model.named_parameters()),
                                               **dict(model.named_buffers())}.items()}


def summarize(diag: dict[str, Any], config: TrainConfig, *, params: ParamSelection,
              dtype: torch.dtype, device: torch.device, model: nn.Module | None = None,
              X: torch.Tensor | None = None, y: torch.Tensor | None = None,
              chunk_size: int = 1024) -> dict[str, Any]:
    """The diagnostics a :class:`TrainedModel` keeps, from one copy's ``fit_copies`` output.

    Given the trained ``model`` and its training data ``X``, ``y``, the model's health is
    assessed once (:func:`~influence_widgets.models.health.assess`: collapsed, degenerate, not
    stationary, indefinite) and kept as ``health`` (a dict, JSON-ready for the zoo's cache);
    ``findings`` (:class:`~influence_widgets._findings.Finding` dicts) are its findings. A
    classifier also gets ``train_accuracy`` and ``logit_margin`` (mean true-class logit minus the
    largest other). Without the model and data only the stationarity rule applies.
    """
    from .._findings import logit_stats, stationarity_findings
    from .health import assess

    gn = float(diag["grad_norm"][0])
    objective = float(diag["objective"][0])
    acc = margin = health = None
    label = params if isinstance(params, str) else "subset"
    if model is not None and X is not None and y is not None:
        if config.loss == "cross_entropy":
            with torch.no_grad(), eval_mode(model):
                out = torch.cat([model(X[s : s + chunk_size])
                                 for s in range(0, X.shape[0], chunk_size)])
            acc, margin = logit_stats(out, y)
        health = assess(model, X, y, loss=config.loss, weight_decay=float(config.weight_decay),
                        objective=objective, grad_norm=gn, grad_tol=config.grad_tol,
                        params=label)
        findings = health.findings
    else:
        findings = stationarity_findings(objective, gn, config.grad_tol)
    return {
        "objective": objective,
        "grad_norm": gn,
        "converged": gn < config.grad_tol,
        "grad_tol": config.grad_tol,
        "steps": diag["steps"],
        "seconds": diag["seconds"],
        "params": params if isinstance(params, str) else list(params),
        "dtype": dtype_name(dtype),
        "device": str(device),
        "train_accuracy": acc,
        "logit_margin": margin,
        "findings": [f.to_dict() for f in findings],
        "health": None if health is None else health.to_dict(),
    }


def _objective_at(module: nn.Module, X: torch.Tensor, y: torch.Tensor, config: TrainConfig,
                  chunk: int = 4096) -> float:
    """The training objective (mean loss + (wd/2)||theta||^2) of ``module`` as it is."""
    with torch.no_grad(), eval_mode(module):
        total = sum(float(per_sample_loss(module(X[s : s + chunk]), y[s : s + chunk],
                                          config.loss).sum()) for s in range(0, X.shape[0], chunk))
        sq = sum(float((p.double() ** 2).sum()) for p in module.parameters())
    return total / X.shape[0] + 0.5 * float(config.weight_decay or 0.0) * sq


def _warn_if_diverged(start: float, end: float, config: TrainConfig) -> None:
    """A ``RuntimeWarning`` when training ended with a higher objective than it started from
    (finite but diverged: too large a learning rate or momentum)."""
    if math.isfinite(start) and end > start + 1e-9 * max(1.0, abs(start)):
        what = "diverged" if end > 10 * max(abs(start), 1e-12) else "made it worse"
        warnings.warn(
            f"iw.train: the training objective rose from {start:.4g} at the start to {end:.4g} at "
            f"the end: training {what} ({config.optimizer}, lr={config.lr:g}"
            + (f", momentum={config.momentum:g}" if config.optimizer == "sgd" else "")
            + "); this model is not a minimum and nothing computed from it means much: lower "
            "the learning rate (or momentum, which must stay below 1)", RuntimeWarning,
            stacklevel=3)


def _finish_bar(bar: Any, steps: int, converged: bool) -> None:
    """Close a training bar that ended normally as complete at the ``steps`` actually taken.

    L-BFGS stops early once converged (e.g. 50 of at most 2000 iterations); left at 50/2000, a
    closed ``tqdm.notebook`` bar is drawn red and frozen, as if training had failed.
    """
    if steps < (bar.total or 0):
        how = "converged" if converged else "stopped"
        bar.set_description(f"training {how} at step {steps}", refresh=False)
    start = bar.start_t
    bar.reset(total=steps)  # also the notebook widget's maximum
    bar.start_t = start  # keep the elapsed time
    bar.update(steps)
    bar.close()  # complete: a green bar in a notebook, a full line in a terminal


def train(
    model: nn.Module | ModelSpec,
    train: Any,
    config: TrainConfig | None = None,
    *,
    params: ParamSelection = "all",
    name: str | None = None,
    data: Any = None,
    progress: Progress | bool | None = None,
    spec: ModelSpec | None = None,
) -> TrainedModel:
    """Train ``model`` on ``train`` (an ``(X, y)`` pair or a torch Dataset) with ``config``.

    A :class:`ModelSpec` is built with ``config.seed``; a module passed in is copied and never
    edited (``spec`` says which spec it was built from, when known: the result keeps it as
    ``TrainedModel.spec``). Returns a :class:`TrainedModel` with the trained copy, its initial parameters, the
    config and convergence diagnostics (objective and gradient norm with weight decay).
    ``progress=True`` shows a tqdm bar; a callable receives ``(step, total, info)``.
    """
    from ..datasets.base import as_tensors
    from .architectures import check_input_shape
    from .losses import check_targets, output_width

    config = (config or TrainConfig()).resolved()
    device = resolve_device(config.device)
    dtype = config.torch_dtype
    if isinstance(model, ModelSpec):
        if spec is not None and spec != model:
            raise ValueError("pass the ModelSpec as the model or as spec=, not two different ones")
        spec = model
    module = model.build(seed=config.seed) if isinstance(model, ModelSpec) else copy.deepcopy(model)
    module = module.to(device=device, dtype=dtype)
    X, y = as_tensors(train)
    if X.shape[0] == 0:
        raise ValueError("the training set is empty")
    X = X.to(device=device, dtype=dtype)
    check_forward(module, X)
    y = cast_targets(y, config.loss, device, dtype)
    check_input_shape(module, X, spec)
    check_targets(y, output_width(module, X), config.loss, "training")
    init = state_of(module)
    names = select_params(module, params)
    start_objective = _objective_at(module, X, y, config)
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.n_steps(X.shape[0]), desc="training")

        def progress(step, total, info, _bar=bar):  # noqa: F811
            _bar.total = total
            _bar.n = step
            _bar.set_postfix(objective=f"{info.get('objective', float('nan')):.4g}")
            _bar.refresh()
    elif progress is False:
        progress = None
    try:
        trained, diag = fit_copies(module, init, X, y, torch.ones(1, X.shape[0]), config,
                                   trainable=names, progress=progress)
    except BaseException:
        if bar is not None:
            bar.close()  # where it stopped: tqdm.notebook marks an unfinished bar as failed
        raise
    if bar is not None:
        _finish_bar(bar, int(diag["steps"]), bool((diag["grad_norm"] < config.grad_tol).all()))
    with torch.no_grad():
        named = dict(module.named_parameters())
        for k, v in trained.items():
            named[k].copy_(v[0])
    module.eval()
    diagnostics = summarize(diag, config, params=params, dtype=dtype, device=device,
                            model=module, X=X, y=y)
    _warn_if_diverged(start_objective, diagnostics["objective"], config)
    return TrainedModel(module, config, {k: v.cpu() for k, v in init.items()}, X, y, diagnostics,
                        spec=spec, name=name, data=data)
