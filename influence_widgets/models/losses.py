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


def cast_targets(y: torch.Tensor, loss: str, device: torch.device | str,
                 dtype: torch.dtype) -> torch.Tensor:
    """Targets on ``device``: class indices stay integers for ``cross_entropy``; ``mse`` targets
    take the floating ``dtype`` of the model."""
    if loss == "cross_entropy":
        return y.to(device=device)
    return y.to(device=device, dtype=dtype)
