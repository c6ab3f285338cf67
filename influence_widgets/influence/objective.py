"""The training objective as pure functions of a flat parameter vector (never edits the module).

``objective(theta) = mean_i loss_i(theta) + (weight_decay / 2) * ||theta||^2`` over the selected
parameter subset; per-sample gradients by ``vmap`` over per-row copies of the parameters;
Hessian-vector products by reverse-over-reverse or forward-over-reverse differentiation, or through
an autograd graph of the gradient built once at the trained parameters ("graph"); Gauss-Newton
products beside them.

Products are always taken at the fixed trained ``theta``, so the graph of the gradient (or, for the
Gauss-Newton curvature, of the outputs) is built once per data chunk and reused by every later call
while the data fit in one chunk.

Memory: nothing here holds ``n_train x p`` numbers. Per-sample gradients come chunk by chunk
(:meth:`Objective.iter_per_sample_grads`, :meth:`Objective.psg_chunk_size` rows at a time, a fixed
number per device and model so results are the same bits in every process); products hold one
chunk's graph at a time unless graphs are cached (by default only when the data fit in one chunk).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from ..models.losses import cast_targets, per_sample_loss
from ..models.modes import eval_mode, private_view
from ..models.params import ParamSelection, describe_params, select_params

CURVATURES = ("hessian", "ggn")
ROUTES = ("rev", "fwd", "graph", "graph_loop")
HVP_MODES = ("auto", "tune", *ROUTES)
SMALL_HVP_WORK = 100_000  # parameters x training rows under which one batched backward wins


def memory_budget(device: torch.device) -> int:
    """Bytes a single temporary may take: an eighth of the CUDA device's total memory, or 2 GiB
    on the CPU. A fixed number per device (never the memory free at the moment), so chunk sizes,
    and with them the last bits of every result, are the same in every process."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory // 8)
    return 2 * 1024**3


def hvp_route(device_type: str, p: int, n: int, k: int, cached: bool) -> str:
    """The Hessian-vector-product route ``hvp_mode="auto"`` takes: a fixed rule of the device
    type, the parameter count ``p``, the training rows ``n``, the vectors per product ``k`` and
    whether the gradient graph at theta is kept between products (``cached``).

    The rule, measured on this project's models (``benchmarks/bench_hvp_routes.py``, figures in
    ``benchmarks/results/hvp_routes.md``): one vector -> "graph_loop" (a single backward through
    the gradient graph, no imports); small problems (``p * n < 1e5``: Iris-sized MLPs) -> "graph"
    (one batched backward: 3-8x faster than a loop there, after a one-time 0.4 s import); larger
    ones -> "graph_loop" (batching gains nothing once each backward is large). Over every
    measured case it is at worst 1.96x slower than the fastest route, and never needs
    torch.func's routes (a 1.2 s import). ``device_type`` and ``cached`` are part of the
    signature so a rule measured on a GPU can differ; the CPU figures hold for both today.
    """
    if k == 1:
        return "graph_loop"
    if p * n < SMALL_HVP_WORK:
        return "graph"
    return "graph_loop"


def _batched_backward(out: torch.Tensor, inp: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """``d(out . V[j]) / d inp`` for every row ``V[j]``: one backward pass through the graph of
    ``out``, batched over the rows by ``torch.func.vmap`` (which batches the backward kernels of
    tanh, softmax and friends; autograd's own ``is_grads_batched`` falls back to a Python loop
    over the rows for them: 1.2-1.5x slower on Iris MLPs, the same bits)."""
    return vmap(lambda v: torch.autograd.grad(out, inp, v, retain_graph=True)[0])(V)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
        hvp_mode: "rev" (vjp of grad), "fwd" (jvp of grad), "graph" (batched backward through a
            gradient graph built once at ``theta``), "graph_loop" (the same, one vector at a
            time), "auto" (a fixed rule of device, sizes and vectors per product:
            :func:`hvp_route`) or "tune" (opt-in: the fastest, timed once on this objective).
            Routes agree to rounding (about 1e-16 relative); every mode but "tune" gives the same
            bits for the same inputs in every process.
        cache_graph: keep the gradient graph between calls; ``None``: when the data fit in one chunk.
    """

    def __init__(self, model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, loss: str = "cross_entropy",
                 weight_decay: float = 0.0, params: ParamSelection = "all", curvature: str = "hessian",
                 chunk_size: int | None = None, hvp_mode: str = "auto",
                 cache_graph: bool | None = None) -> None:
        if curvature not in CURVATURES:
            raise ValueError(f"unknown curvature {curvature!r}; valid: {', '.join(CURVATURES)}")
        if hvp_mode not in HVP_MODES:
            raise ValueError(f"unknown hvp_mode {hvp_mode!r}; valid: {', '.join(HVP_MODES)}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size}")
        # functional_call swaps parameters on the module it is given: work on a private view, so
        # another thread using (or copying) the same model never sees them swapped
        self.model = model = private_view(model)
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
        self.y = cast_targets(y, loss, self.device, self.dtype)
        self.n = X.shape[0]
        self.p = self.theta.numel()
        self.chunk_size = chunk_size
        self.hvp_mode = hvp_mode
        self.cache_graph = cache_graph
        self.hvp_calls = 0
        self.last_hvp_mode: str | None = None
        self._graphs: dict[tuple, tuple[torch.Tensor, ...]] = {}
        self._psg_route: str | None = None
        self._no_double_backward = False
        self._tuned: dict[tuple[int, bool], str] = {}
        self.tune_times: dict[tuple[int, bool], dict[str, float]] = {}

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

    def _data_term(self, flat: torch.Tensor, X: torch.Tensor, y: torch.Tensor, n: int | None = None) -> torch.Tensor:
        return per_sample_loss(self.outputs(flat, X), y, self.loss).sum() / (n or self.n)

    def value(self, flat: torch.Tensor | None = None) -> torch.Tensor:
        """The full objective: mean training loss plus the L2 term."""
        flat = self.theta if flat is None else flat.detach()
        with torch.no_grad(), eval_mode(self.model):
            total = sum(self._data_term(flat, Xc, yc) for Xc, yc in self.chunks())
        return total + 0.5 * self.weight_decay * (flat**2).sum()

    def gradient(self, flat: torch.Tensor | None = None) -> torch.Tensor:
        """Gradient of the full objective (its norm says how far from stationary ``theta`` is).

        At ``theta``, when the Hessian products will go through cached gradient graphs, the
        gradient is read off those graphs (built here once, then reused by every product)."""
        if flat is None and self._graph_products():
            size = self._hvp_chunk_size()
            g = sum(self._grad_graph(Xc, yc, (size, i), self.n)[1].detach()
                    for i, (Xc, yc) in enumerate(self.chunks(size=size)))
            return g + self.weight_decay * self.theta
        flat = (self.theta if flat is None else flat).detach()
        g = torch.zeros_like(flat)
        with torch.enable_grad(), eval_mode(self.model):
            for Xc, yc in self.chunks():
                t = flat.clone().requires_grad_(True)
                g += torch.autograd.grad(self._data_term(t, Xc, yc), t)[0]
        return g + self.weight_decay * flat

    def _graph_products(self) -> bool:
        """Whether products at ``theta`` go through gradient graphs kept between calls (the
        Hessian, one chunk or ``cache_graph``, a graph route whatever the number of vectors)."""
        return (self.curvature == "hessian" and self.caches_graph and not self._no_double_backward
                and (self.hvp_mode == "auto" or self.hvp_mode.startswith("graph")))

    # ------------------------------------------------------------------ chunking
    def _auto_chunk(self, per_row_bytes: int, rows: int | None = None) -> int:
        budget = memory_budget(self.device)
        return max(1, min(rows or self.n, budget // max(1, per_row_bytes)))

    def _hvp_chunk_size(self) -> int:
        return self.chunk_size or self._auto_chunk(self.p * self.dtype.itemsize * 4)

    def psg_chunk_size(self, rows: int | None = None) -> int:
        """Rows per chunk of per-sample gradients (of ``rows`` rows; default the training set):
        ``chunk_size`` if given, else the memory budget over ``8 p`` numbers per row (measured
        peak of a chunk: ``2 p`` per row on a 1M-parameter MLP, ``2.4 p`` on a ResNet-18: the
        chunk's gradients and each parameter's per-row gradients before they are copied in; the
        rest is room for activations). A fixed number per device and model, never the memory
        free at the moment."""
        return self.chunk_size or self._auto_chunk(self.p * self.dtype.itemsize * 8, rows)

    def chunks(self, X: torch.Tensor | None = None, y: torch.Tensor | None = None, size: int | None = None):
        X = self.X if X is None else X
        y = self.y if y is None else y
        size = size or self._hvp_chunk_size()
        for s in range(0, X.shape[0], size):
            yield X[s : s + size], y[s : s + size]

    @property
    def caches_graph(self) -> bool:
        """Whether graphs at ``theta`` are kept between HVP calls."""
        if self.cache_graph is not None:
            return self.cache_graph
        return self._hvp_chunk_size() >= self.n

    def clear_cache(self) -> None:
        """Drop the cached autograd graphs (they are rebuilt on the next product)."""
        self._graphs.clear()

    # ------------------------------------------------------------------ gradients
    def per_sample_grads(self, X: torch.Tensor, y: torch.Tensor, chunk_size: int | None = None,
                         check: bool = True) -> torch.Tensor:
        """Gradients of each row's loss, ``(N, p)`` (no weight decay: that is in ``H``); ``check``
        raises on NaN/inf rows (see :meth:`check_finite`). The whole ``N x p`` matrix: for many
        rows of a large model, :meth:`iter_per_sample_grads` gives it chunk by chunk."""
        X = X.to(self.device, self.dtype)
        G = torch.empty(X.shape[0], self.p, device=self.device, dtype=self.dtype)
        for start, Gc in self.iter_per_sample_grads(X, y, chunk_size, check=check):
            G[start : start + Gc.shape[0]] = Gc
        return G

    def iter_per_sample_grads(self, X: torch.Tensor | None = None, y: torch.Tensor | None = None,
                              chunk_size: int | None = None, check: bool = True, what: str = ""
                              ) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start, G)`` chunk by chunk: ``G`` the gradients of rows ``start ..
        start + len(G)`` of ``X`` (default: the training set), :meth:`psg_chunk_size` rows at a
        time unless ``chunk_size`` is given. Only one chunk is alive at a time (if the caller
        lets it go); ``check`` raises on NaN/inf rows, numbered in the whole of ``X`` and named
        ``what`` ("training", "test")."""
        X = self.X if X is None else X.to(self.device, self.dtype)
        y = self.y if y is None else cast_targets(y, self.loss, self.device, self.dtype)
        size = chunk_size or self.psg_chunk_size(X.shape[0])
        for start in range(0, X.shape[0], size):
            with eval_mode(self.model):  # per chunk: never left set while the caller holds a chunk
                G = self._psg_chunk(X[start : start + size], y[start : start + size])
            yield start, (self.check_finite(G, what, start) if check else G)

    @staticmethod
    def check_finite(G: torch.Tensor, what: str = "", offset: int = 0) -> torch.Tensor:
        """``G`` itself, or a ``FloatingPointError`` naming the rows whose gradients are NaN/inf
        (row ``i`` of ``G`` named ``offset + i``: ``G`` may be one chunk of a larger set)."""
        if not torch.isfinite(G).all():
            bad = (torch.nonzero(~torch.isfinite(G).all(dim=1)).flatten() + offset).tolist()
            rows = f"{what} rows" if what else "rows"
            raise FloatingPointError(
                f"per-sample gradients are NaN/inf for {rows} {bad[:10]}; check those inputs for NaN "
                "and that the model's loss is finite on them"
            )
        return G

    def _sample_loss_parts(self, parts: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        params = {**self.frozen, **dict(zip(self.names, parts))}
        return per_sample_loss(functional_call(self.model, params, (x.unsqueeze(0),)), y.unsqueeze(0),
                               self.loss)[0]

    def _psg_chunk(self, Xc: torch.Tensor, yc: torch.Tensor) -> torch.Tensor:
        # One copy of each parameter per row (an expanded view: no memory), vmapped forward, one
        # plain backward: the same numbers as vmap(grad) without torch.func's backward (whose
        # first use costs seconds of imports). Each parameter's per-row gradients are copied
        # straight into their columns of the chunk (no reshape copies, no join of the pieces).
        if self._psg_route != "vmap_grad":
            try:
                rows = Xc.shape[0]
                parts = [t.expand(rows, *t.shape).requires_grad_(True)
                         for t in self.unflatten(self.theta.detach()).values()]
                with torch.enable_grad():
                    losses = vmap(self._sample_loss_parts)(parts, Xc, yc)
                    grads = torch.autograd.grad(losses.sum(), parts, allow_unused=True)
                self._psg_route = "expand"
                G = torch.empty(rows, self.p, device=self.device, dtype=self.dtype)
                for piece, g, shape in zip(G.split(self.numels, dim=1), grads, self.shapes):
                    if g is None:
                        piece.zero_()
                    else:
                        piece.view(rows, *shape).copy_(g)
                return G
            except (RuntimeError, NotImplementedError):
                if self._psg_route == "expand":
                    raise
                self._psg_route = "vmap_grad"
        return vmap(grad(self._sample_loss), in_dims=(None, 0, 0))(self.theta, Xc, yc)

    # ------------------------------------------------------------------ curvature products
    def hvp(self, V: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``H V`` for a batch ``V (k, p)`` of vectors, with the chosen curvature (and the L2 term).

        ``rows`` restricts the data term to those training rows (mean over them), as stochastic
        solvers do; such products are never cached.
        """
        V = V.to(self.device, self.dtype)
        single = V.dim() == 1
        V = V.unsqueeze(0) if single else V
        self.hvp_calls += 1
        # Graphs are built in eval mode (see _grad_graph); products through them need no mode.
        if rows is not None:
            rows = torch.as_tensor(rows, device=self.device)
            Xr, yr = self.X[rows], self.y[rows]
            n = int(rows.numel())
            mode = "ggn" if self.curvature == "ggn" else "graph_nocache"
            out = sum(self._run_chunk(V, Xc, yc, mode, None, n) for Xc, yc in self.chunks(Xr, yr))
        elif self.curvature == "ggn":
            out = self._run(V, "ggn")
        else:
            out = self._routed(V)
        out = out + self.weight_decay * V
        return out[0] if single else out

    def _run(self, V: torch.Tensor, mode: str) -> torch.Tensor:
        self.last_hvp_mode = mode
        size = self._hvp_chunk_size()
        cache = self.caches_graph
        total = None
        for i, (Xc, yc) in enumerate(self.chunks(size=size)):
            part = self._run_chunk(V, Xc, yc, mode, (size, i) if cache else None, self.n)
            total = part if total is None else total + part
        return total

    def _run_chunk(self, V, Xc, yc, mode: str, key, n: int) -> torch.Tensor:
        if mode == "ggn":
            return self._ggn_chunk(V, Xc, yc, key, n)
        if mode in ("rev", "fwd"):
            return self._func_chunk(V, Xc, yc, mode, n)
        theta, g = self._grad_graph(Xc, yc, key, n)
        if not g.requires_grad:  # the data term is linear in theta: no curvature
            return torch.zeros_like(V)
        if mode == "graph_loop" or V.shape[0] == 1:
            # A scalar output per vector: no grad_outputs, so autograd skips its shape checks
            # (whose first use imports sympy, about a second).
            return torch.stack([torch.autograd.grad(g @ v, theta, retain_graph=True)[0] for v in V])
        return _batched_backward(g, theta, V)

    def _grad_graph(self, Xc, yc, key, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        hit = self._graphs.get(("grad", key)) if key is not None else None
        if hit is not None:
            return hit
        theta = self.theta.detach().clone().requires_grad_(True)
        with torch.enable_grad(), eval_mode(self.model):
            out = self.outputs(theta, Xc)
            data = per_sample_loss(out, yc, self.loss).sum() / n  # the data term (_data_term)
            g = torch.autograd.grad(data, theta, create_graph=True)[0]
        if key is not None:
            self._graphs[("grad", key)] = (theta, g)
            self._graphs[("outputs", key)] = out.detach()
        return theta, g

    def train_outputs(self) -> torch.Tensor:
        """The model's outputs on every training row at ``theta`` (eval mode, no graph): read
        off the kept gradient graphs when they cover the training set, else one forward pass."""
        size = self._hvp_chunk_size()
        kept = [self._graphs.get(("outputs", (size, i))) for i in range(-(-self.n // size))]
        if all(o is not None for o in kept):
            return torch.cat(kept)
        with torch.no_grad(), eval_mode(self.model):
            return torch.cat([self.outputs(self.theta, Xc) for Xc, _ in self.chunks(size=size)])

    def _func_chunk(self, V, Xc, yc, mode: str, n: int) -> torch.Tensor:
        g = grad(self._data_term)
        with eval_mode(self.model):
            if mode == "rev":
                _, pull = vjp(lambda t: g(t, Xc, yc, n), self.theta)
                return vmap(lambda v: pull(v)[0])(V)
            return vmap(lambda v: jvp(lambda t: g(t, Xc, yc, n), (self.theta,), (v,))[1])(V)

    def _ggn_chunk(self, V, Xc, yc, key, n: int) -> torch.Tensor:
        hit = self._graphs.get(("ggn", key)) if key is not None else None
        if hit is None:
            theta = self.theta.detach().clone().requires_grad_(True)
            with torch.enable_grad(), eval_mode(self.model):
                out = self.outputs(theta, Xc)
                u = torch.zeros_like(out, requires_grad=True)
                ju = torch.autograd.grad((out * u).sum(), theta, create_graph=True)[0]  # J^T u
            hit = (theta, out, u, ju)
            if key is not None:
                self._graphs[("ggn", key)] = hit
        theta, out, u, ju = hit
        logits = out.detach()
        if V.shape[0] == 1:
            Jv = torch.autograd.grad(ju @ V[0], u, retain_graph=True)[0]
            HJv = self._output_hessian_product(logits, yc, Jv)
            return torch.autograd.grad((out * HJv).sum(), theta, retain_graph=True)[0].unsqueeze(0) / n
        Jv = _batched_backward(ju, u, V)
        HJv = self._output_hessian_product(logits, yc, Jv)
        return _batched_backward(out, theta, HJv) / n

    def _output_hessian_product(self, out: torch.Tensor, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Hessian of each row's loss w.r.t. the outputs, times ``u`` (row by row)."""
        if self.loss == "mse":
            return u
        p = torch.softmax(out, dim=-1)
        return p * u - p * (p * u).sum(-1, keepdim=True)

    def route(self, k: int) -> str:
        """The route a product of ``k`` vectors takes (``hvp_mode`` fixed, the rule of
        :func:`hvp_route` for "auto", this objective's own timing for "tune")."""
        cached = self.caches_graph
        if self.hvp_mode in ROUTES:
            route = self.hvp_mode
        elif self.hvp_mode == "tune":
            route = self._tuned.get((k, cached), "")
        else:
            route = hvp_route(self.device.type, self.p, self.n, k, cached)
        if route.startswith("graph") and self._no_double_backward:
            return "rev"
        return route

    def _routed(self, V: torch.Tensor) -> torch.Tensor:
        route = self.route(V.shape[0])
        if not route:  # "tune", first product of this shape: time the routes on it
            return self._tune(V)
        try:
            return self._run(V, route)
        except (RuntimeError, NotImplementedError):
            # A model without double backward (some fused ops): torch.func's routes still work.
            # Decided by the model alone, so every process takes the same route.
            if not route.startswith("graph") or self.hvp_mode in ROUTES:
                raise
            self._no_double_backward = True
            self.clear_cache()
            return self._run(V, "rev")

    def _tune(self, V: torch.Tensor) -> torch.Tensor:
        """Opt-in (``hvp_mode="tune"``): time every route once on this objective and keep the
        fastest for products of this many vectors. The choice lives on this object only; another
        process may choose differently, so results can differ in the last bits."""
        times, out = {}, None
        for route in ROUTES:
            try:
                elapsed, res = self._time(V, route)
            except (RuntimeError, NotImplementedError):
                continue  # a route this model does not support
            times[route] = elapsed
            out = res if out is None or elapsed <= min(times.values()) else out
        if not times:
            raise RuntimeError("no Hessian-vector-product route works for this model; try curvature='ggn'")
        best = min(times, key=times.get)
        self._tuned[(V.shape[0], self.caches_graph)] = best
        self.tune_times[(V.shape[0], self.caches_graph)] = times
        return self._run(V, best)

    def _time(self, V: torch.Tensor, mode: str) -> tuple[float, torch.Tensor]:
        self._run(V, mode)  # warm-up: builds the graph
        _sync(self.device)
        elapsed, out = [], None
        for _ in range(3):
            t = time.perf_counter()
            out = self._run(V, mode)
            _sync(self.device)
            elapsed.append(time.perf_counter() - t)
        return min(elapsed), out

    def hessian(self, block: int | None = None, progress: Any = None) -> torch.Tensor:
        """The explicit ``p x p`` curvature matrix, built from batched HVPs on identity columns."""
        block = block or max(1, min(self.p, memory_budget(self.device) // max(1, self.p * self.n * self.dtype.itemsize)))
        block = min(block, 512, self.p)
        H = torch.empty(self.p, self.p, device=self.device, dtype=self.dtype)
        eye = torch.eye(block, self.p, device=self.device, dtype=self.dtype)
        for s in range(0, self.p, block):
            e = min(self.p, s + block)
            H[s:e] = self.hvp(torch.roll(eye[: e - s], s, dims=1))
            if progress is not None:
                progress(e, self.p, {"stage": "hessian"})
        H = 0.5 * (H + H.T)
        return H

    def describe(self) -> dict[str, Any]:
        return {"params": self.params_label, "n_params": self.p, "n_train": self.n, "loss": self.loss,
                "weight_decay": self.weight_decay, "curvature": self.curvature,
                "device": str(self.device), "dtype": str(self.dtype).replace("torch.", "")}
