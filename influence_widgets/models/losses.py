"""Per-sample losses shared by training, the influence objective and leave-one-out retraining."""

from __future__ import annotations

import torch

LOSSES = ("cross_entropy", "mse")


def per_sample_loss(outputs: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy") -> torch.Tensor:
    """Loss of each row: ``outputs`` is ``(..., N, K)``; returns ``(..., N)``.

    ``cross_entropy`` takes int64 labels; ``mse`` is ``0.5 * ||f(x) - y||^2`` (so that a linear
    model's Hessian is ``X^T X / n``), with ``y`` of shape ``(N,)`` for one output or ``(N, K)``.
    """
    if loss == "cross_entropy":
        logp = torch.log_softmax(outputs, dim=-1)
        return -torch.gather(logp, -1, y.expand(*outputs.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    if loss == "mse":
        target = y.to(outputs.dtype)
        if target.dim() == outputs.dim() - 1 or (outputs.shape[-1] == 1 and target.shape[-1] != 1):
            target = target.unsqueeze(-1)
        return 0.5 * ((outputs - target) ** 2).sum(-1)
    raise ValueError(f"unknown loss {loss!r}; valid names: {', '.join(LOSSES)}")


def output_width(model: torch.nn.Module, X: torch.Tensor) -> int:
    """The number of outputs of ``model`` (one forward pass on the first row of ``X``, in eval
    mode, without gradients)."""
    from .modes import eval_mode

    with torch.no_grad(), eval_mode(model):
        out = model(X[:1])
    return int(out.shape[-1]) if out.dim() > 1 else 1


def check_targets(y: torch.Tensor, n_outputs: int, loss: str, what: str = "training") -> None:
    """Raise a clear error when the ``what`` ("training", "test") targets ``y`` do not fit a model
    with ``n_outputs`` outputs under ``loss``.

    ``cross_entropy``: ``y`` is a 1-D integer tensor of class indices in ``0..n_outputs-1``.
    ``mse``: ``y`` holds finite numbers, of shape ``(N,)`` for one output or ``(N, n_outputs)``.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid names: {', '.join(LOSSES)}")
    if loss == "cross_entropy":
        if y.dtype not in (torch.int64, torch.int32):
            raise TypeError(
                f"the {what} labels are {y.dtype}, but cross_entropy needs integer class indices; "
                "pass y.long() (labels 0..K-1), or loss='mse' for regression targets"
            )
        if y.dim() != 1:
            raise ValueError(
                f"the {what} labels have shape {tuple(y.shape)}; cross_entropy needs one class "
                "index per row, shape (N,): pass y.reshape(-1), or y.argmax(1) for one-hot labels"
            )
        bad = (y < 0) | (y >= n_outputs)
        if bool(bad.any()):
            row = int(torch.nonzero(bad)[0])
            lo, hi = int(y.min()), int(y.max())
            raise ValueError(
                f"the {what} labels must be class indices in 0..{n_outputs - 1} (the model has "
                f"{n_outputs} outputs), but row {row} is {int(y[row])} (labels range {lo}..{hi}); "
                f"relabel the classes as 0..K-1, or build the model with {max(hi + 1, n_outputs)} "
                "outputs"
            )
        return
    if y.dtype == torch.bool or y.is_complex() or not torch.isfinite(y.double()).all():
        raise ValueError(f"the {what} targets of loss='mse' must be finite real numbers; clean "
                         "or impute the NaN/inf targets first")
    if not ((y.dim() == 1 and n_outputs == 1) or (y.dim() == 2 and y.shape[1] == n_outputs)):
        raise ValueError(
            f"the {what} targets have shape {tuple(y.shape)} but the model has {n_outputs} "
            f"output(s); loss='mse' needs targets of shape (N, {n_outputs})"
            + (" or (N,)" if n_outputs == 1 else "")
        )


def cast_targets(y: torch.Tensor, loss: str, device: torch.device | str,
                 dtype: torch.dtype) -> torch.Tensor:
    """Targets on ``device``: class indices stay integers for ``cross_entropy``; ``mse`` targets
    take the floating ``dtype`` of the model."""
    if loss == "cross_entropy":
        return y.to(device=device)
    return y.to(device=device, dtype=dtype)
