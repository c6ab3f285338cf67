"""The training objective as pure functions of a flat parameter vector (never edits the module).

``objective(theta) = mean_i loss_i(theta) + (weight_decay / 2) * ||theta||^2`` over the selected
parameter subset; per-sample gradients by ``vmap(grad)``; Hessian-vector products by
reverse-over-reverse or forward-over-reverse differentiation; Gauss-Newton products beside them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from ..models.losses import per_sample_loss
from ..models.params import ParamSelection, describe_params, select_params

CURVATURES = ("hessian", "ggn")
HVP_MODES = ("auto", "rev", "fwd")
_HVP_CHOICE: dict[tuple, str] = {}


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluate with batch-norm running statistics and no dropout; restore the flag afterwards."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def memory_budget(device: torch.device) -> int:
    """Bytes a single temporary may take: a quarter of free CUDA memory, or 2 GiB on the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 4)
    return 2 * 1024**3


class Objective:
    """Training objective of ``model`` on ``(X, y)`` over a parameter subset, as flat-vector functions.

    Args:
        model: the trained module (read, never modified).
        X, y: training inputs and targets (on the model's device).
        loss: "cross_entropy" or "mse".
        weight_decay: coefficient of ``(weight_decay / 2) * ||theta||^2`` (part of ``H``).
        params: "all", "last_layer" or parameter names (recorded as ``self.params_label``).
        curvature: "hessian" or "ggn" (Gauss-Newton, positive semi-definite) for :meth:`hvp`.
        chunk_size: rows per chunk for per-sample gradients and HVPs (``None``: from memory).
        hvp_mode: "rev" (vjp of grad), "fwd" (jvp of grad) or "auto" (timed once per device).
    """

    def __init__(self, model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, loss: str = "cross_entropy",
                 weight_decay: float = 0.0, params: ParamSelection = "all", curvature: str = "hessian",
                 chunk_size: int | None = None, hvp_mode: str = "auto") -> None:
        if curvature not in CURVATURES:
            raise ValueError(f"unknown curvature {curvature!r}; valid: {', '.join(CURVATURES)}")
        if hvp_mode not in HVP_MODES:
            raise ValueError(f"unknown hvp_mode {hvp_mode!r}; valid: {', '.join(HVP_MODES)}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.model = model
        self.loss = loss
        self.weight_decay = float(weight_decay)
        self.curvature = curvature
        self.params_label = describe_params(params)
        self.names = select_params(model, params)
        named = dict(model.named_parameters())
        first = named[self.names[0]]
        self.device, self.dtype = first.device, first.dtype
        self.shapes = [named[k].shape for k in self.names]
        self.numels = [named[k].numel() for k in self.names]
        self.theta = torch.cat([named[k].detach().reshape(-1) for k in self.names])
        self.frozen = {k: v.detach() for k, v in named.items() if k not in self.names}
        self.frozen.update({k: v.detach() for k, v in model.named_buffers()})
        self.X = X.to(self.device, self.dtype)
        self.y = y.to(self.device) if loss == "cross_entropy" else y.to(self.device, self.dtype)
        self.n = X.shape[0]
        self.p = self.theta.numel()
        self.chunk_size = chunk_size
        self.hvp_mode = hvp_mode
        self.hvp_calls = 0

    # ------------------------------------------------------------------ pure functions
    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: t.view(s) for k, t, s in zip(self.names, flat.split(self.numels), self.shapes)}

    def outputs(self, flat: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, {**self.frozen, **self.unflatten(flat)}, (X,))

    def losses(self, flat: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample losses ``(N,)``."""
        with eval_mode(self.model):
            return per_sample_loss(self.outputs(flat, X), y, self.loss)

    def _sample_loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return per_sample_loss(self.outputs(flat, x.unsqueeze(0)), y.unsqueeze(0), self.loss)[0]

    def _data_term(self, flat: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return per_sample_loss(self.outputs(flat, X), y, self.loss).sum() / self.n

    def value(self, flat: torch.Tensor | None = None) -> torch.Tensor:
        """The full objective: mean training loss plus the L2 term."""
        flat = self.theta if flat is None else flat
        with eval_mode(self.model):
            total = sum(self._data_term(flat, Xc, yc) for Xc, yc in self.chunks())
        return total + 0.5 * self.weight_decay * (flat**2).sum()

    def gradient(self, flat: torch.Tensor | None = None) -> torch.Tensor:
        """Gradient of the full objective (its norm says how far from stationary ``theta`` is)."""
        flat = self.theta if flat is None else flat
        with eval_mode(self.model):
            g = sum(grad(self._data_term)(flat, Xc, yc) for Xc, yc in self.chunks())
        return g + self.weight_decay * flat

    # ------------------------------------------------------------------ chunking
    def _auto_chunk(self, per_row_bytes: int) -> int:
        budget = memory_budget(self.device)
        return max(1, min(self.n, budget // max(1, per_row_bytes)))

    def chunks(self, X: torch.Tensor | None = None, y: torch.Tensor | None = None, size: int | None = None):
        X = self.X if X is None else X
        y = self.y if y is None else y
        size = size or self.chunk_size or self._auto_chunk(self.p * self.dtype.itemsize * 4)
        for s in range(0, X.shape[0], size):
            yield X[s : s + size], y[s : s + size]

    # ------------------------------------------------------------------ gradients
    def per_sample_grads(self, X: torch.Tensor, y: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Gradients of each row's loss, ``(N, p)`` (no weight decay: that is in ``H``)."""
        X = X.to(self.device, self.dtype)
        y = y.to(self.device) if self.loss == "cross_entropy" else y.to(self.device, self.dtype)
        size = chunk_size or self.chunk_size or self._auto_chunk(self.p * self.dtype.itemsize * 8)
        g = vmap(grad(self._sample_loss), in_dims=(None, 0, 0))
        out = []
        with eval_mode(self.model):
            for Xc, yc in self.chunks(X, y, size):
                out.append(g(self.theta, Xc, yc))
        G = torch.cat(out)
        if not torch.isfinite(G).all():
            bad = torch.nonzero(~torch.isfinite(G).all(dim=1)).flatten().tolist()
            raise FloatingPointError(
                f"per-sample gradients are NaN/inf for rows {bad[:10]}; check those inputs for NaN "
                "and that the model's loss is finite on them"
            )
        return G

    # ------------------------------------------------------------------ curvature products
    def hvp(self, V: torch.Tensor) -> torch.Tensor:
        """``(H + 0) V`` for a batch ``V (k, p)`` of vectors, with the chosen curvature (and the L2 term)."""
        V = V.to(self.device, self.dtype)
        single = V.dim() == 1
        V = V.unsqueeze(0) if single else V
        self.hvp_calls += 1
        with eval_mode(self.model):
            if self.curvature == "ggn":
                out = sum(self._ggn_chunk(V, Xc, yc) for Xc, yc in self.chunks())
            else:
                mode = self._pick_mode(V)
                out = sum(self._hvp_chunk(V, Xc, yc, mode) for Xc, yc in self.chunks())
        out = out + self.weight_decay * V
        return out[0] if single else out

    def _hvp_chunk(self, V, Xc, yc, mode: str) -> torch.Tensor:
        g = grad(self._data_term)
        if mode == "rev":
            _, pull = vjp(lambda t: g(t, Xc, yc), self.theta)
            return vmap(lambda v: pull(v)[0])(V)
        return vmap(lambda v: jvp(lambda t: g(t, Xc, yc), (self.theta,), (v,))[1])(V)

    def _ggn_chunk(self, V, Xc, yc) -> torch.Tensor:
        f = lambda t: self.outputs(t, Xc)  # noqa: E731
        out, pull = vjp(f, self.theta)

        def one(v):
            _, Jv = jvp(f, (self.theta,), (v,))
            HJv = self._output_hessian_product(out, yc, Jv)
            return pull(HJv)[0] / self.n

        return vmap(one)(V)

    def _output_hessian_product(self, out: torch.Tensor, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Hessian of each row's loss w.r.t. the outputs, times ``u`` (row by row)."""
        if self.loss == "mse":
            return u
        p = torch.softmax(out.detach(), dim=-1)
        return p * u - p * (p * u).sum(-1, keepdim=True)

    def _pick_mode(self, V: torch.Tensor) -> str:
        if self.hvp_mode != "auto":
            return self.hvp_mode
        key = (self.device.type, type(self.model).__name__, self.p, self.n, V.shape[0] > 1)
        if key not in _HVP_CHOICE:
            Xc, yc = next(iter(self.chunks()))
            times = {}
            for mode in ("rev", "fwd"):
                self._hvp_chunk(V, Xc, yc, mode)  # warm-up
                t = time.perf_counter()
                for _ in range(2):
                    self._hvp_chunk(V, Xc, yc, mode)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                times[mode] = time.perf_counter() - t
            _HVP_CHOICE[key] = min(times, key=times.get)
        return _HVP_CHOICE[key]

    def hessian(self, block: int | None = None, progress: Any = None) -> torch.Tensor:
        """The explicit ``p x p`` curvature matrix, built from batched HVPs on identity columns."""
        block = block or max(1, min(self.p, memory_budget(self.device) // max(1, self.p * self.n * self.dtype.itemsize)))
        block = min(block, 512)
        eye = torch.eye(self.p, device=self.device, dtype=self.dtype)
        cols = []
        for s in range(0, self.p, block):
            cols.append(self.hvp(eye[s : s + block]))
            if progress is not None:
                progress(min(self.p, s + block), self.p, {"stage": "hessian"})
        H = torch.cat(cols)
        return 0.5 * (H + H.T)

    def describe(self) -> dict[str, Any]:
        return {"params": self.params_label, "n_params": self.p, "n_train": self.n, "loss": self.loss,
                "weight_decay": self.weight_decay, "curvature": self.curvature,
                "device": str(self.device), "dtype": str(self.dtype).replace("torch.", "")}
