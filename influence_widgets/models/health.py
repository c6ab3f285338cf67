"""Model health: can this trained model's influence estimates mean anything? One assessment,
computed once per trained or wrapped model, shown wherever the model is.

First-order influence explains a model at a minimum of its training objective. Four states
break that, worst first:

* **collapsed** - the model predicts the same thing for every input: outputs constant across the
  training points (the zero network, or a constant predictor at ``ln C``) with training accuracy
  no better than always predicting the largest class. Every estimate and every retrain then
  moves one shared output: all dots sit on one point and no comparison means anything.
* **degenerate** - separable data without weight decay: the objective has no finite minimiser,
  the curvature vanishes and the estimate reduces to a gradient dot product
  (:func:`~influence_widgets._findings.degenerate_findings`).
* **not stationary** - the gradient norm is large against the objective's own scale
  (``grad_norm > max(grad_tol, 1e-3 x |objective|)``,
  :func:`~influence_widgets._findings.stationarity_findings`): the estimate then also carries the
  drift training would continue, and warm-started retrains move with nothing removed.
* **indefinite** - the Hessian of the objective has a clearly negative eigenvalue (a saddle, not
  a minimum; found by a short Lanczos run, relative to the largest eigenvalue): ``H^-1`` flips the
  sign of the estimate along those directions.

:func:`assess` takes a module, its training data and its objective; a
:class:`~influence_widgets.models.TrainedModel` computes it once, on first use of its ``health``
(and :func:`~influence_widgets.train` at the end of training), and keeps it as a plain dict in
its ``diagnostics`` (so the zoo's cache carries it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from .._findings import (
    DEFAULT_GRAD_TOL,
    STATIONARY_REL,
    Finding,
    degenerate_findings,
    stationarity_findings,
)
from .losses import per_sample_loss
from .modes import eval_mode, private_view

#: The states, worst first (the first that applies is the model's ``status``).
STATES = ("collapsed", "degenerate", "not stationary", "indefinite")
#: Outputs whose spread across the training points is under this (relative to their size) are
#: constant: the model computes one output for every input.
CONSTANT_OUTPUTS = 1e-6
#: Parameters all under this in size: the zero network.
ZERO_WEIGHTS = 1e-4
#: A Hessian eigenvalue under ``-INDEFINITE_REL x`` the largest one is "clearly negative"
#: (rounding at a minimum gives about -1e-10 of it).
INDEFINITE_REL = 1e-4
#: Lanczos steps for the extreme eigenvalues of the Hessian.
LANCZOS_STEPS = 30
#: Parameters x training points above which :func:`assess` skips the spectrum unless asked
#: (``spectrum=True``): about a second of Hessian-vector products on a CPU; and parameters above
#: which it is skipped whatever the data (a ResNet-18's 11M: seconds per product).
SPECTRUM_WORK = 5e8
SPECTRUM_MAX_PARAMS = 200_000


@dataclass(frozen=True)
class Health:
    """One model's health: which of :data:`STATES` apply (``problems``, worst first), the
    numbers behind them, and the findings that say what each means and what to do.

    ``status`` is the worst problem, or "healthy". ``stationary`` is about the gradient alone
    (a collapsed model can sit at a stationary point: the zero network is one).
    """

    problems: tuple[str, ...]
    objective: float
    grad_norm: float
    stationary_limit: float
    train_accuracy: float | None = None
    majority: float | None = None  # the share of the largest class: a constant predictor's accuracy
    output_spread: float | None = None  # relative spread of the outputs across training points
    max_weight: float | None = None
    top_eigenvalue: float | None = None
    min_eigenvalue: float | None = None
    findings: tuple[Finding, ...] = field(default=(), compare=False)

    @property
    def status(self) -> str:
        return self.problems[0] if self.problems else "healthy"

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def stationary(self) -> bool:
        return self.grad_norm <= self.stationary_limit

    @property
    def collapsed(self) -> bool:
        return "collapsed" in self.problems

    def line(self) -> str:
        """One line in plain words (the zoo listing, the explorer, study summaries)."""
        parts = []
        if self.collapsed:
            acc = "" if self.train_accuracy is None else (
                f" (training accuracy {self.train_accuracy:.0%}, as predicting one class)")
            parts.append(f"COLLAPSED: the same output for every input{acc}")
        if "degenerate" in self.problems:
            parts.append("DEGENERATE: separable data without weight decay, no finite minimum")
        grad = f"gradient {self.grad_norm:.1e} (limit {self.stationary_limit:.1e})"
        parts.append(("stationary, " if self.stationary else "NOT STATIONARY, ") + grad)
        if self.min_eigenvalue is not None and math.isfinite(self.min_eigenvalue):
            sign = "INDEFINITE Hessian" if "indefinite" in self.problems else "Hessian"
            parts.append(f"{sign} eigenvalues {self.min_eigenvalue:.2g} to "
                         f"{self.top_eigenvalue:.3g}")
        if self.train_accuracy is not None and not self.collapsed:
            parts.append(f"training accuracy {self.train_accuracy:.0%}")
        head = "healthy" if self.healthy else self.status
        return f"{head}: " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["problems"] = list(self.problems)
        d["findings"] = [f.to_dict() for f in self.findings]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Health:
        d = dict(d)
        d["problems"] = tuple(d.get("problems") or ())
        d["findings"] = tuple(Finding.from_dict(f) for f in d.get("findings") or ())
        return cls(**d)


def _outputs(model: nn.Module, X: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    with torch.no_grad(), eval_mode(model):
        return torch.cat([model(X[s : s + chunk]) for s in range(0, X.shape[0], chunk)])


def _spread(out: torch.Tensor) -> float:
    """The largest spread (std) of an output column across the rows, relative to the outputs'
    size (a constant predictor: about 0)."""
    o = out.detach().double().reshape(out.shape[0], -1)
    if o.shape[0] < 2:
        return math.nan
    return float(o.std(dim=0).max() / (1.0 + o.abs().mean()))


def hessian_extremes(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, loss: str,
                     weight_decay: float, steps: int = LANCZOS_STEPS,
                     seed: int = 0) -> tuple[float, float]:
    """The largest and smallest Ritz values of ``steps`` Lanczos steps (full
    reorthogonalisation) on the Hessian of ``mean loss + (weight_decay/2)||theta||^2`` over all
    trainable parameters: close to the top eigenvalue, and an upper bound on the smallest (a
    clearly negative one proves the Hessian indefinite)."""
    model = private_view(model)  # functional_call below swaps parameters on the module
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    others = {k: v.detach() for k, v in {**dict(model.named_parameters()),
                                         **dict(model.named_buffers())}.items()
              if k not in params}
    names = list(params)
    shapes = [params[k].shape for k in names]
    sizes = [params[k].numel() for k in names]
    p = sum(sizes)
    dtype, device = params[names[0]].dtype, params[names[0]].device

    def objective(flat: torch.Tensor) -> torch.Tensor:
        parts = dict(zip(names, (t.reshape(s) for t, s in zip(flat.split(sizes), shapes))))
        out = functional_call(model, {**others, **parts}, (X,))
        value = per_sample_loss(out, y, loss).mean()
        return value + 0.5 * weight_decay * flat.pow(2).sum() if weight_decay else value

    theta = torch.cat([params[k].reshape(-1) for k in names])
    grad = torch.func.grad(objective)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(grad, (theta,), (v,))[1]

    m = max(1, min(steps, p))
    g = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(p, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    Q = torch.zeros(m, p, dtype=dtype, device=device)
    alpha = torch.zeros(m, dtype=torch.float64)
    beta = torch.zeros(m, dtype=torch.float64)
    q = q / q.norm()
    with eval_mode(model):
        for j in range(m):
            Q[j] = q
            w = hvp(q)
            alpha[j] = float(w @ q)
            w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)  # full reorthogonalisation
            w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
            b = float(w.norm())
            if j + 1 < m:
                if b < 1e-12 * max(1.0, abs(float(alpha[j]))):
                    m = j + 1
                    break
                beta[j] = b
                q = w / b
    T = torch.diag(alpha[:m]) + torch.diag(beta[: m - 1], 1) + torch.diag(beta[: m - 1], -1)
    evals = torch.linalg.eigvalsh(T)
    return float(evals.max()), float(evals.min())


def assess(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, loss: str = "cross_entropy",
           weight_decay: float = 0.0, objective: float | None = None,
           grad_norm: float | None = None, grad_tol: float = DEFAULT_GRAD_TOL,
           spectrum: bool | str = "auto", params: str = "all") -> Health:
    """The health of ``model`` trained on ``(X, y)`` under ``mean loss + (weight_decay/2)
    ||theta||^2`` (see the module's docstring for each state and its rule).

    ``objective``/``grad_norm``: the final training objective and its gradient norm, when the
    trainer measured them (else measured here). ``spectrum``: whether to find the Hessian's
    extreme eigenvalues (``"auto"``: up to :data:`SPECTRUM_MAX_PARAMS` parameters and
    parameters x training points <= :data:`SPECTRUM_WORK`; without it "indefinite" cannot be
    seen, and the health says nothing about it).
    """
    out = _outputs(model, X)
    n_params = sum(p.numel() for p in model.parameters())
    if objective is None or grad_norm is None:
        objective, grad_norm = _objective_and_grad(model, X, y, loss, weight_decay)
    acc = majority = None
    if loss == "cross_entropy" and out.dim() == 2 and out.shape[1] > 1:
        yy = y.reshape(-1).long().to(out.device)
        acc = float((out.argmax(dim=1) == yy).double().mean())
        majority = float(torch.bincount(yy.cpu()).max()) / max(1, yy.numel())
    spread = _spread(out)
    max_weight = max((float(p.detach().abs().max()) for p in model.parameters()
                      if p.numel()), default=0.0)
    limit = max(grad_tol, STATIONARY_REL * abs(objective))
    top = lo = None
    want = spectrum is True or (spectrum == "auto" and n_params <= SPECTRUM_MAX_PARAMS
                                and n_params * X.shape[0] <= SPECTRUM_WORK)
    finite = math.isfinite(objective) and math.isfinite(grad_norm) and bool(
        torch.isfinite(out).all())
    if want and n_params > 0 and finite:
        try:
            top, lo = hessian_extremes(model, X, y, loss=loss, weight_decay=weight_decay)
        except (RuntimeError, ValueError):  # an ill-conditioned or non-finite Lanczos run
            top = lo = None
        if top is not None and not (math.isfinite(top) and math.isfinite(lo)):
            top = lo = None
    constant = (math.isfinite(spread) and spread < CONSTANT_OUTPUTS) or max_weight < ZERO_WEIGHTS
    no_better = acc is None or majority is None or acc <= majority + 1e-9
    problems: list[str] = []
    findings: list[Finding] = []
    if constant and no_better:
        problems.append("collapsed")
        findings.append(_collapsed_finding(acc, majority, spread, max_weight, objective))
    degenerate = degenerate_findings(objective, acc, top, 0.0, None, weight_decay=weight_decay,
                                     loss=loss)
    if any(f.code == "degenerate" for f in degenerate):
        problems.append("degenerate")
    findings += degenerate
    stationary = stationarity_findings(objective, grad_norm, grad_tol, params=params)
    if grad_norm > limit or not math.isfinite(grad_norm):
        problems.append("not stationary")
    findings += stationary
    # a degenerate model's curvature is vanishing anyway (its "negative" eigenvalues are rounding
    # at the scale of the vanished top one): "degenerate" says it
    if (lo is not None and top is not None and "degenerate" not in problems
            and lo < -INDEFINITE_REL * max(abs(top), 1e-12)):
        problems.append("indefinite")
        findings.append(Finding(
            "warning", "training", "indefinite-at-trained",
            f"the Hessian of the training objective has a negative eigenvalue: {lo:.3g} "
            f"(largest {top:.3g}), found by {LANCZOS_STEPS} Lanczos steps",
            "the trained parameters are not at a minimum (a saddle or a kink): H^-1 flips the "
            "sign of the estimate along the negative directions, and a solver without damping "
            "fails or diverges there",
            "train to a minimum (smaller gradient; a smooth activation such as tanh), or damp the "
            "estimate above the negative eigenvalue, or use the Gauss-Newton curvature",
            action={"curvature": "ggn"}))
    order = {s: i for i, s in enumerate(STATES)}
    return Health(tuple(sorted(problems, key=order.__getitem__)), float(objective),
                  float(grad_norm), float(limit), acc, majority, spread, max_weight, top, lo,
                  tuple(findings))


def _collapsed_finding(acc: float | None, majority: float | None, spread: float,
                       max_weight: float, objective: float) -> Finding:
    seen = []
    if max_weight < ZERO_WEIGHTS:
        seen.append(f"every weight under {ZERO_WEIGHTS:g} in size (largest {max_weight:.1e}): "
                    "the zero network")
    else:
        seen.append(f"its outputs do not vary across the training points (relative spread "
                    f"{spread:.1e})")
    if acc is not None and majority is not None:
        seen.append(f"training accuracy {acc:.0%}, as always predicting the largest class "
                    f"({majority:.0%})")
    seen.append(f"objective {objective:.4g}")
    return Finding(
        "error", "training", "collapsed",
        "the model collapsed to a constant predictor: " + "; ".join(seen),
        "every input gets the same output, so every estimate and every retrain moves one shared "
        "number: the dots of a comparison sit on one point and no correlation or agreement "
        "means anything; another test point does not help",
        "retrain it: another seed, less weight decay, a shallower net, or a smaller learning "
        "rate (deep tanh nets with weight decay fall into the zero network)")


def _objective_and_grad(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss: str,
                        weight_decay: float) -> tuple[float, float]:
    params = [p for p in model.parameters() if p.requires_grad]
    with eval_mode(model):
        out = model(X)
        value = per_sample_loss(out, y, loss).mean()
        if weight_decay:
            value = value + 0.5 * weight_decay * sum(p.pow(2).sum() for p in params)
        grads = torch.autograd.grad(value, params, allow_unused=True)
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))
    return float(value.detach()), norm


def of(trained: Any, spectrum: bool | str = "auto") -> Health:
    """The health of a :class:`~influence_widgets.models.TrainedModel`: its cached assessment
    (``diagnostics["health"]``), else computed now from its model, training data and objective
    (and cached)."""
    diag = trained.diagnostics
    cached = diag.get("health")
    if isinstance(cached, Health):
        return cached
    if isinstance(cached, Mapping):
        return Health.from_dict(cached)
    cfg = trained.config.resolved()
    p = next(trained.model.parameters())
    X = trained.X_train.to(p.device, p.dtype)
    y = trained.y_train.to(p.device)
    health = assess(trained.model, X, y, loss=cfg.loss, weight_decay=float(cfg.weight_decay),
                    objective=diag.get("objective"), grad_norm=diag.get("grad_norm"),
                    grad_tol=float(diag.get("grad_tol", cfg.grad_tol)), spectrum=spectrum,
                    params=diag.get("params", "all") if isinstance(diag.get("params"), str)
                    else "subset")
    diag["health"] = health.to_dict()
    return health
