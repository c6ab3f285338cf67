"""The proximal Bregman response function (PBRF) of Bae et al. (NeurIPS 2022).

From the trained parameters ``theta_s``, each copy minimises::

    mean_j D(f(x_j; theta), f(x_j; theta_s))  -  (1/n) * sum_{i removed} loss_i(theta)
        + ((damping + weight_decay) / 2) * ||theta - theta_s||^2

where ``D`` is the Bregman divergence of the loss in output space: ``KL(softmax(f_s) ||
softmax(f))`` for cross-entropy and ``0.5 * ||f - f_s||^2`` for mse. The weight-decay term of the
training objective enters through its own Bregman divergence, ``(weight_decay/2)||theta -
theta_s||^2``, so with nothing removed ``theta_s`` is the minimiser. Influence functions
approximate this response well even where they miss leave-one-out retraining.

Only the objective lives here: it is minimised by the training engine,
``fit_copies(..., objective=pbrf_objective(damping))``, with the same optimisers, batch order,
NaN checks, progress and cancellation as training (never polished).
"""

from __future__ import annotations

import functools
import math
import numbers

import torch

from ..models.losses import per_sample_loss
from ..models.modes import eval_mode
from ..models.training import Copies, ObjectiveFactory, TrainConfig, per_copy_grad_norms


def check_pbrf_damping(damping: float) -> float:
    """``damping`` as a float, or a ValueError saying what to pass."""
    ok = isinstance(damping, numbers.Real) and not isinstance(damping, bool)
    if not (ok and math.isfinite(damping) and damping >= 0):
        raise ValueError(f"pbrf_damping must be a finite number >= 0 (e.g. 1e-3), got {damping!r}")
    return float(damping)


def bregman(outputs: torch.Tensor, ref: torch.Tensor, loss: str) -> torch.Tensor:
    """Output-space Bregman divergence ``D(outputs, ref)`` per row: ``(..., N, K) -> (..., N)``."""
    if loss == "cross_entropy":
        logp_ref = torch.log_softmax(ref, dim=-1)
        logp = torch.log_softmax(outputs, dim=-1)
        return (logp_ref.exp() * (logp_ref - logp)).sum(-1)
    if loss == "mse":
        return 0.5 * ((outputs - ref) ** 2).sum(-1)
    raise ValueError(f"PBRF supports cross_entropy and mse losses, got {loss!r}")


class PBRFObjective:
    """The per-copy PBRF objective ``(C,)``; a 0 in ``weights`` ``(C, N)`` marks a removed point.

    The copies start at ``theta_s`` (the anchor of the proximal term). PBRF compares outputs of
    one function, so the module runs in eval mode (no dropout noise, batch-norm running stats).
    """

    training = False

    def __init__(self, copies: Copies, X: torch.Tensor, y: torch.Tensor, weights: torch.Tensor,
                 config: TrainConfig, damping: float) -> None:
        removed = 1.0 - weights
        self.copies, self.X, self.y = copies, X, y
        self.rows_removed = torch.nonzero(removed.any(dim=0)).flatten()  # union over copies
        self.mask = removed[:, self.rows_removed]
        config = config.resolved()
        self.loss = config.loss
        self.prox = damping + config.weight_decay
        self.n = X.shape[0]
        self.anchor = {k: v[0].detach().clone() for k, v in copies.trainable.items()}
        with torch.no_grad(), eval_mode(copies.model):
            one = Copies(copies.model, {k: v[:1] for k, v in copies.trainable.items()},
                         copies.frozen)
            self.ref = one.outputs(X)[0]  # (N, K) outputs at theta_s

    def __call__(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        X, ref = (self.X, self.ref) if rows is None else (self.X[rows], self.ref[rows])
        out = self.copies.outputs(X)
        div = bregman(out, ref, self.loss).mean(dim=1)
        obj = div
        r = self.rows_removed
        if r.numel():
            out_r = out[:, r] if rows is None else self.copies.outputs(self.X[r])
            removed_loss = (per_sample_loss(out_r, self.y[r], self.loss) * self.mask).sum(dim=1)
            obj = obj - removed_loss / self.n
        if self.prox:
            obj = obj + 0.5 * self.prox * self.copies.sq_norms(self.anchor)
        return obj

    def grad_norms(self) -> tuple[torch.Tensor, torch.Tensor]:
        return per_copy_grad_norms(self(), self.copies.trainable)


def pbrf_objective(damping: float) -> ObjectiveFactory:
    """The ``objective=`` of :func:`~influence_widgets.models.training.fit_copies` for PBRF."""
    return functools.partial(PBRFObjective, damping=check_pbrf_damping(damping))
