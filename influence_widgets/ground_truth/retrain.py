"""Retraining chunks: the picklable :class:`RetrainTask` every executor runs, and how many copies
go in a chunk.

A *job* is one retrain: which training points it removes (none for a control), which seed it
runs under (a new initialisation and/or batch order; a small perturbation of the start for a
perturbation floor), and which retrain it is compared with (its ``reference``: a control with
nothing removed under the same seed, or ``None`` for the trained model itself). Jobs of one
:attr:`Job.group` share the start and the batch order, so they are trained together by
:func:`~influence_widgets.models.training.fit_copies` (one row of the weight matrix per job, 0 for
each removed point).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .._devices import resolve_dtype
from ..models.losses import cast_targets, per_sample_loss
from ..models.modes import eval_mode
from ..models.training import LBFGS_HISTORY, Copies, TrainConfig, fit_copies, state_of
from .pbrf import pbrf_objective

MODES = ("warm_start", "scratch", "pbrf")


@dataclass(frozen=True)
class Job:
    """One retrain. ``key`` names it in the store; ``remove`` lists the removed training points.

    ``seed``: ``None`` runs under the config's seed from the shared start; a seed changes the
    mini-batch order and, in "scratch" mode with ``reinit`` (the default), draws a new
    initialisation. ``perturb``: relative size of a seeded random perturbation of the start (a
    perturbation-only floor). ``reference``: the job whose test losses this one's are compared
    with (a control, nothing removed, same seed and start), or ``None`` (the trained model).
    """

    key: str
    remove: tuple[int, ...] = ()
    seed: int | None = None
    perturb: float = 0.0
    reinit: bool = True
    reference: Job | None = field(default=None, compare=False, repr=False)

    @property
    def group(self) -> tuple:
        """Jobs of one group share the start and the batch order, so they stack in one chunk."""
        return (self.seed, self.perturb, self.reinit if self.seed is not None else True)

    @property
    def stackable(self) -> bool:
        """Whether this job runs from the shared start under the config's own seed."""
        return self.seed is None and self.perturb == 0.0


def weight_matrix(jobs: list[Job], n: int) -> torch.Tensor:
    """``(len(jobs), n)`` ones with a 0 for every point a job removes."""
    w = torch.ones(len(jobs), n)
    for c, job in enumerate(jobs):
        if job.remove:
            w[c, list(job.remove)] = 0.0
    return w


def losses_of_copies(module: nn.Module, stacked: dict[str, torch.Tensor],
                     frozen: dict[str, torch.Tensor], X_test: torch.Tensor, y_test: torch.Tensor,
                     loss: str) -> torch.Tensor:
    """Per-copy test losses ``(C, n_test)`` of stacked parameters (model in eval mode)."""
    with torch.no_grad(), eval_mode(module):
        out = Copies(module, stacked, frozen).outputs(X_test)
        return per_sample_loss(out, y_test, loss)


@dataclass(frozen=True)
class RetrainTask:
    """One chunk of retrains: what :func:`run_chunk` needs, picklable for any executor.

    Built by ``Problem.task``. Tensors are on ``device`` (or on the CPU for a task sent to other
    processes); ``run_chunk`` casts them to ``device``/``dtype``.
    """

    module: nn.Module  # the model (architecture, and the buffers of the start)
    copy_module: bool  # train a private copy (the module is shared with other threads)
    start: dict[str, torch.Tensor]  # the full state every retrain starts from
    X: torch.Tensor
    y: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    config: TrainConfig
    trainable: tuple[str, ...]  # the parameters retrained; every other tensor stays as in start
    steps: int
    mode: str  # one of MODES
    pbrf_damping: float  # used in mode "pbrf"
    device: str
    dtype: str  # "float32" or "float64"
    jobs: tuple[Job, ...]
    spec_init: dict[str, torch.Tensor] | None = None  # a fresh initialisation (a seeded scratch run)
    keep_params: bool = False  # also return the retrained states


def run_chunk(task: RetrainTask, progress: Callable | None = None,
              should_stop: Callable[[], bool] | None = None) -> dict[str, torch.Tensor]:
    """Run the retrains of one chunk; the function every executor is given.

    Returns CPU tensors: ``losses`` ``(C, n_test)``, ``grad_norm`` and ``objective`` ``(C,)``,
    and with ``task.keep_params`` the full retrained states ``params`` (``name -> (C, ...)``).
    """
    device, dtype = torch.device(task.device), resolve_dtype(task.dtype)
    module = copy.deepcopy(task.module) if task.copy_module else task.module
    config, jobs, names = task.config, list(task.jobs), list(task.trainable)
    X = task.X.to(device=device, dtype=dtype)
    y = cast_targets(task.y, config.loss, device, dtype)
    X_test = task.X_test.to(device=device, dtype=dtype)
    y_test = cast_targets(task.y_test, config.loss, device, dtype)
    start = {k: _cast(v, device, dtype) for k, v in task.start.items()}
    if len({j.group for j in jobs}) > 1:
        raise ValueError("only jobs that share the start and the batch order (one Job.group) "
                         "can share a chunk")
    start = _start_of(jobs[0], start, names, task.spec_init)
    cfg = config if jobs[0].seed is None else config.replace(seed=jobs[0].seed)
    w = weight_matrix(jobs, X.shape[0]).to(device=device, dtype=dtype)
    objective = pbrf_objective(task.pbrf_damping) if task.mode == "pbrf" else None
    params, diag = fit_copies(module, start, X, y, w, cfg, trainable=names, steps=task.steps,
                              progress=progress, should_stop=should_stop, objective=objective)
    frozen = {k: v for k, v in start.items() if k not in params}
    losses = losses_of_copies(module, params, frozen, X_test, y_test, config.loss)
    out = {"losses": losses.cpu(), "grad_norm": diag["grad_norm"].detach().cpu(),
           "objective": diag["objective"].detach().cpu()}
    if task.keep_params:
        C = losses.shape[0]
        full = {k: v.unsqueeze(0).expand(C, *v.shape) for k, v in frozen.items()}
        out["params"] = {k: v.cpu() for k, v in {**full, **params}.items()}
    return out


def _cast(v: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)


def _start_of(job: Job, start: dict[str, torch.Tensor], names: list[str],
              spec_init: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """The start of a seeded run: a fresh initialisation (given) and/or a seeded perturbation."""
    if job.stackable:
        return start
    start = dict(start)
    if spec_init is not None:
        for k in names:
            start[k] = spec_init[k].to(start[k])
    if job.perturb:
        g = torch.Generator().manual_seed(job.seed or 0)
        for k in names:
            v = start[k]
            scale = v.detach().pow(2).mean().sqrt().clamp_min(1e-12)
            noise = torch.randn(v.shape, generator=g, dtype=torch.float64).to(v)
            start[k] = v + job.perturb * scale * noise
    return start


# ----------------------------------------------------------------------------- chunk width

CPU_WORK_BUDGET = 1e8  # copies * params * training points per chunk on CPU (see choose_width)
LBFGS_MAX_WIDTH = 128  # L-BFGS copies per chunk (the slowest copy sets the chunk's iterations)


def available_memory(device: torch.device) -> int:
    """Free bytes on ``device``: CUDA's free memory, or MemAvailable on Linux (else 4 GiB)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def activation_size(module: nn.Module, x: torch.Tensor) -> int:
    """Numbers produced per input row by the leaf modules (what backward keeps), from one row."""
    total = 0

    def hook(_m, _inp, out):
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out[0].numel() if out.dim() > 0 else 1

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad(), eval_mode(module):
            module(x[:1])
    finally:
        for h in handles:
            h.remove()
    return max(total, 1)


def choose_width(module: nn.Module, X: torch.Tensor, n_jobs: int, trainable: list[str],
                 config: TrainConfig, device: torch.device) -> int:
    """How many retrains to stack in one chunk.

    Memory: each copy keeps its parameters, gradients and optimiser state (about 6 numbers per
    trainable parameter, plus L-BFGS's ``2 * LBFGS_HISTORY`` curvature pairs) plus ``3 * N * A``
    activations (``A`` per row, measured with hooks); chunks use at most a quarter of the free
    memory (half on CUDA). On CPU, stacking only pays while the per-step work is
    overhead-bound, so ``copies * params * N`` is capped at ``CPU_WORK_BUDGET``. L-BFGS runs
    until its slowest copy has converged (the others idle), so its chunks are capped at
    ``LBFGS_MAX_WIDTH``.
    """
    n = X.shape[0]
    itemsize = torch.empty((), dtype=X.dtype).element_size()
    params = dict(module.named_parameters())
    p_train = sum(params[k].numel() for k in trainable)
    p_all = sum(p.numel() for p in params.values())
    state = 6 + (2 * LBFGS_HISTORY if config.optimizer == "lbfgs" or config.polish_steps else 0)
    per_copy = itemsize * (state * p_train + 3 * n * activation_size(module, X.to(
        next(iter(params.values())).dtype)))
    share = 0.5 if device.type == "cuda" else 0.25
    width = max(1, int(share * available_memory(device) // per_copy))
    if device.type == "cpu":
        width = min(width, max(1, int(CPU_WORK_BUDGET // (p_all * n))))
    if config.optimizer == "lbfgs":
        width = min(width, LBFGS_MAX_WIDTH)
    return max(1, min(width, n_jobs))


def module_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers of ``module`` on the CPU (what a task carries)."""
    return {k: v.cpu() for k, v in state_of(module).items()}
