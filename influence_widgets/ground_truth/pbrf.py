"""The proximal Bregman response function (PBRF) of Bae et al. (NeurIPS 2022).

From the trained parameters ``theta_s``, each copy minimises::

    mean_j D(f(x_j; theta), f(x_j; theta_s))  -  (1/n) * sum_{i removed} loss_i(theta)
        + ((damping + weight_decay) / 2) * ||theta - theta_s||^2

where ``D`` is the Bregman divergence of the loss in output space: ``KL(softmax(f_s) ||
softmax(f))`` for cross-entropy and ``0.5 * ||f - f_s||^2`` for mse. The weight-decay term of the
training objective enters through its own Bregman divergence, ``(weight_decay/2)||theta -
theta_s||^2``, so with nothing removed ``theta_s`` is the minimiser. Influence functions
approximate this response well even where they miss leave-one-out retraining.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..models.losses import per_sample_loss
from ..models.training import Copies, TrainConfig, _check_finite, per_copy_grad_norms


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
    """The per-copy PBRF objective ``(C,)`` for removal masks ``removed`` ``(C, N)``."""

    def __init__(self, copies: Copies, X: torch.Tensor, y: torch.Tensor, removed: torch.Tensor,
                 config: TrainConfig, damping: float) -> None:
        self.copies, self.X, self.y = copies, X, y
        self.rows_removed = torch.nonzero(removed.any(dim=0)).flatten()  # union over copies
        self.mask = removed[:, self.rows_removed]
        self.loss = config.loss
        self.prox = damping + config.weight_decay
        self.n = X.shape[0]
        self.anchor = {k: v[0].detach().clone() for k, v in copies.trainable.items()}
        with torch.no_grad():
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
            C = self.copies.n
            sq = sum(((v - self.anchor[k]).reshape(C, -1) ** 2).sum(dim=1)
                     for k, v in self.copies.trainable.items())
            obj = obj + 0.5 * self.prox * sq
        return obj

    def grad_norms(self) -> tuple[torch.Tensor, torch.Tensor]:
        return per_copy_grad_norms(self(), self.copies.trainable)


def fit_pbrf(
    model: nn.Module,
    start: dict[str, torch.Tensor],
    X: torch.Tensor,
    y: torch.Tensor,
    weights: torch.Tensor,
    config: TrainConfig,
    *,
    trainable: list[str],
    steps: int,
    damping: float,
    progress: Callable | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Minimise the PBRF objective for ``C`` copies (the same interface as ``fit_copies``).

    ``weights`` is the usual ``(C, N)`` matrix: a 0 marks a removed point. Adam and SGD train the
    copies together (mini-batches of the divergence term when ``config.batch_size`` is set);
    L-BFGS runs copy by copy.
    """
    if damping < 0 or not math.isfinite(damping):
        raise ValueError(f"pbrf_damping must be a finite number >= 0, got {damping}")
    if config.optimizer == "lbfgs" and weights.shape[0] > 1:
        parts = [fit_pbrf(model, start, X, y, weights[c : c + 1], config, trainable=trainable,
                          steps=steps, damping=damping, progress=progress, should_stop=should_stop)
                 for c in range(weights.shape[0])]
        params = {k: torch.cat([p[k] for p, _ in parts]) for k in trainable}
        diag = {k: torch.cat([d[k] for _, d in parts]) for k in ("objective", "grad_norm")}
        return params, {**diag, "steps": steps, "seconds": sum(d["seconds"] for _, d in parts)}
    t0 = time.perf_counter()
    C = weights.shape[0]
    leaves = {k: start[k].detach().unsqueeze(0).repeat(C, *([1] * start[k].dim()))
              .requires_grad_(True) for k in trainable}
    frozen = {k: v.detach() for k, v in start.items() if k not in leaves}
    was = model.training
    model.eval()  # PBRF compares outputs of one function: no dropout noise
    try:
        objective = PBRFObjective(Copies(model, leaves, frozen), X, y, 1.0 - weights, config,
                                  damping)
        _minimise(objective, config, steps, progress, should_stop)
        obj, gn = objective.grad_norms()
    finally:
        model.train(was)
    seconds = time.perf_counter() - t0
    return ({k: v.detach() for k, v in leaves.items()},
            {"objective": obj, "grad_norm": gn, "steps": steps, "seconds": seconds})


def _minimise(objective: PBRFObjective, config: TrainConfig, steps: int,
              progress: Callable | None, should_stop: Callable[[], bool] | None) -> None:
    params = list(objective.copies.trainable.values())
    if config.optimizer == "lbfgs":
        opt: torch.optim.Optimizer = torch.optim.LBFGS(
            params, lr=config.lr, max_iter=steps, history_size=50, line_search_fn="strong_wolfe",
            tolerance_grad=config.grad_tol * 1e-3, tolerance_change=0.0)

        def closure():
            opt.zero_grad(set_to_none=True)
            total = objective().sum()
            total.backward()
            return total

        opt.step(closure)
        _check_finite(objective().detach(), steps)
        return
    if config.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=config.lr)
    else:
        opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)
    n, B = objective.n, config.batch_size or objective.n
    g = torch.Generator().manual_seed(config.seed)
    per_epoch = math.ceil(n / B)
    order = None
    for step in range(steps):
        rows = None
        if B < n:
            if step % per_epoch == 0:
                order = torch.randperm(n, generator=g).to(objective.X.device)
            rows = order[(step % per_epoch) * B : (step % per_epoch + 1) * B]
        opt.zero_grad(set_to_none=True)
        obj = objective(rows)
        _check_finite(obj.detach(), step)
        obj.sum().backward()
        opt.step()
        if progress is not None and (step % max(1, steps // 100) == 0 or step == steps - 1):
            progress(step + 1, steps, {"objective": float(obj.detach().mean())})
        if should_stop is not None and should_stop():
            raise InterruptedError(f"PBRF cancelled at step {step + 1} of {steps}")
