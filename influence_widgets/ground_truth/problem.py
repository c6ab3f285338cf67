"""Resolving a retraining problem: model, data, config, mode, dtype, start state and cache key."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._cache import hash_settings, hash_tensors, module_fingerprint
from .._devices import dtype_name, resolve_device, resolve_dtype
from ..datasets.base import as_tensors
from ..models.losses import cast_targets
from ..models.params import ParamSelection, describe_params, select_params
from ..models.training import TrainConfig, TrainedModel, state_of
from .pbrf import check_pbrf_damping
from .retrain import MODES, Job, RetrainTask, losses_of_copies, module_state

KEY_VERSION = 4  # 2: the model's code and plain attributes are in the key; 3: L-BFGS trains
# stacked copies together with its own line search (its retrains differ from version 2's); 4:
# dropout is off in every retrain (a dropout model's retrains differ from version 3's)
AUTO_FLOAT64_MAX_PARAMS = {"cpu": 5_000_000, "cuda": 1_000_000}


@dataclass
class Problem:
    """Everything a sweep needs, resolved once: tensors are on ``device`` in ``dtype``."""

    module: nn.Module  # a private copy on device/dtype: the user's model is never edited
    trained: dict[str, torch.Tensor]
    start: dict[str, torch.Tensor]
    spec: Any
    X: torch.Tensor
    y: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    config: TrainConfig
    mode: str
    names: list[str]
    params_label: str
    steps: int
    dtype: torch.dtype
    device: torch.device
    pbrf_damping: float  # the damping of the PBRF objective (mode "pbrf")
    subtract_control: bool
    init: dict[str, torch.Tensor] | None = None
    objective: RetrainObjective | None = None  # where the retraining objective came from
    init_known: bool = True  # False: a plain module, or weights wrapped without their start

    @property
    def n(self) -> int:
        return self.X.shape[0]

    def setting(self) -> tuple[str, dict[str, Any]]:
        """The store key of this problem's retrains and what it stands for (computed once)."""
        if getattr(self, "_setting", None) is None:
            self._setting = self._make_setting()
        return self._setting

    def _make_setting(self) -> tuple[str, dict[str, Any]]:
        """Everything that decides a retrain's numbers: the trained state (parameters and
        buffers), the start, the model's code and plain attributes (an edited ``forward`` or
        ``self.scale`` is another setting), the data, the objective and schedule, mode,
        parameters, dtype and device."""
        desc = {
            "version": KEY_VERSION,
            "model": hash_tensors(*[self.trained[k] for k in sorted(self.trained)]),
            "init": (hash_tensors(*[self.init[k] for k in sorted(self.init)])
                     if self.mode == "scratch" and self.init is not None else None),
            "architecture": self.spec.to_dict() if self.spec is not None else repr(self.module),
            "code": module_fingerprint(self.module),
            "train": hash_tensors(self.X, self.y),
            "test": hash_tensors(self.X_test, self.y_test),
            "config": self.config.to_dict(),
            "device": self.device.type,
            "steps": self.steps,
            "mode": self.mode,
            "params": self.names,
            "subtract_control": self.subtract_control,
            "dtype": dtype_name(self.dtype),
            "pbrf_damping": self.pbrf_damping if self.mode == "pbrf" else None,
        }
        return hash_settings(desc, length=32), desc

    def trained_losses(self) -> torch.Tensor:
        """Test losses ``(n_test,)`` of the trained model itself."""
        stacked = {k: self.trained[k].unsqueeze(0) for k in self.names}
        frozen = {k: v for k, v in self.trained.items() if k not in stacked}
        return losses_of_copies(self.module, stacked, frozen, self.X_test, self.y_test,
                           self.config.loss)[0]

    def task(self, jobs: list[Job], *, portable: bool, keep_params: bool = False) -> RetrainTask:
        """The task of one chunk (``portable``: CPU tensors and a CPU module for other processes
        or threads)."""
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.cpu() if portable else t

        spec_init = None
        if jobs[0].seed is not None and jobs[0].reinit and self.mode == "scratch":
            spec_init = self.fresh_init(jobs[0].seed)
        return RetrainTask(
            module=self._portable_module() if portable else self.module,
            copy_module=portable,
            start={k: move(v) for k, v in self.start.items()},
            X=move(self.X), y=move(self.y),
            X_test=move(self.X_test), y_test=move(self.y_test),
            config=self.config,
            trainable=tuple(self.names),
            steps=self.steps,
            mode=self.mode,
            pbrf_damping=self.pbrf_damping,
            device=str(self.device),
            dtype=dtype_name(self.dtype),
            jobs=tuple(jobs),
            spec_init=spec_init,
            keep_params=keep_params,
        )

    def fresh_init(self, seed: int) -> dict[str, torch.Tensor]:
        """A new initialisation under ``seed``: the spec rebuilt with that seed, else every
        submodule's ``reset_parameters()`` (see
        :func:`~influence_widgets.models.architectures.reinitialised`)."""
        if self.spec is not None:
            return module_state(self.spec.build(seed=seed))
        from ..models.architectures import reinitialised

        return reinitialised(self.module, seed)

    def _portable_module(self) -> nn.Module:
        if not hasattr(self, "_cpu_module"):
            self._cpu_module = copy.deepcopy(self.module).cpu()
        return self._cpu_module


def resolve_model(model: Any) -> tuple[nn.Module, dict[str, torch.Tensor] | None, Any,
                                        TrainConfig | None]:
    """``(module, init_params, spec, config)`` of a TrainedModel or a plain module."""
    if isinstance(model, TrainedModel):
        return model.model, model.init_params, model.spec, model.config
    if isinstance(model, nn.Module):
        return model, None, None, None
    raise TypeError(f"model must be a TrainedModel or an nn.Module, got {type(model).__name__}")


def resolve_dtype_auto(dtype: Any, n_params: int, device: torch.device) -> torch.dtype:
    """``"auto"``: float64 for models under 5e6 parameters on CPU (1e6 on CUDA), else float32."""
    if dtype != "auto":
        return resolve_dtype(dtype)
    limit = AUTO_FLOAT64_MAX_PARAMS.get(device.type, AUTO_FLOAT64_MAX_PARAMS["cuda"])
    return torch.float64 if n_params < limit else torch.float32


@dataclass(frozen=True)
class RetrainObjective:
    """The objective a sweep retrains under, and where it came from.

    ``source`` is "model" (the TrainedModel's own loss and weight decay: the estimate's objective),
    "config" (a plain ``nn.Module``, which carries none: the config's values), "assumed" (a plain
    module whose config sets no weight decay: 0 is assumed, with a warning) or "override" (the caller asked for an objective that differs
    from the model's: ``model`` holds the model's, and every result says so).
    """

    loss: str
    weight_decay: float
    source: str
    model: dict[str, Any] | None = None

    @property
    def differs(self) -> bool:
        return self.source == "override"

    def describe(self) -> str:
        what = f"loss {self.loss}, weight decay {self.weight_decay:g}"
        if self.source == "model":
            return f"{what} (the model's own)"
        if self.source == "config":
            return f"{what} (from the config: a plain nn.Module carries no objective)"
        if self.source == "assumed":
            return (f"{what} (ASSUMED: a plain nn.Module carries no objective and the config sets "
                    "no weight_decay)")
        return (f"{what}, DIFFERENT from the model's (loss {self.model['loss']}, weight decay "
                f"{self.model['weight_decay']:g}), as asked: the estimate and this ground truth "
                "answer different questions")


class ObjectiveMismatchError(ValueError):
    """A retraining config asks for another objective than the model was trained with."""


def retraining_objective(model_config: TrainConfig | None, config: TrainConfig,
                         allow_different: bool = False) -> tuple[TrainConfig, RetrainObjective]:
    """``config`` with the model's objective filled in, and a record of where it came from.

    The objective belongs to the model: unset fields (``None``) take the model's values; a set
    field that differs from the model's raises :class:`ObjectiveMismatchError` unless
    ``allow_different`` (then the result records the difference).
    """
    if model_config is None:  # a plain module: the config is all there is
        cfg = config.resolved()
        source = "config" if config.weight_decay is not None else "assumed"
        return cfg, RetrainObjective(cfg.loss, float(cfg.weight_decay), source)
    own = model_config.resolved()
    mine = {"loss": own.loss, "weight_decay": float(own.weight_decay)}
    asked = {k: v for k, v in config.objective.items() if v is not None}
    differ = {k: v for k, v in asked.items() if v != mine[k]}
    if differ and not allow_different:
        said = ", ".join(f"{k}={v!r}" for k, v in differ.items())
        theirs = ", ".join(f"{k}={mine[k]!r}" for k in differ)
        raise ObjectiveMismatchError(
            f"the retraining config sets {said} but the model was trained with {theirs}: the "
            "estimate explains the model's own objective, so retraining under another one "
            "measures something else (with weight decay missing, LOO effects can even flip "
            "sign). Leave these fields unset (None) to retrain under the model's objective; "
            "pass allow_different_objective=True only to study a different objective on purpose."
        )
    cfg = config.replace(loss=asked.get("loss", mine["loss"]),
                         weight_decay=float(asked.get("weight_decay", mine["weight_decay"])))
    source = "override" if differ else "model"
    return cfg, RetrainObjective(cfg.loss, float(cfg.weight_decay), source,
                                 mine if differ else None)


def prepare(model: Any, train: Any, test: Any, *, config: TrainConfig | None, mode: str,
            params: ParamSelection, dtype: Any, subtract_control: bool,
            pbrf_damping: float, allow_different_objective: bool = False,
            needs_init: bool = True) -> Problem:
    """Check the arguments of a sweep and resolve them into a :class:`Problem`.

    ``needs_init=False``: every retrain of the sweep draws its own fresh initialisation (a
    real noise floor), so mode "scratch" does not need the model's own start."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
    module, init, spec, model_config = resolve_model(model)
    if needs_init and mode == "scratch" and getattr(model, "extra", {}).get("init_known") is False:
        raise ValueError(
            f"mode='scratch' retrains from the model's initial parameters, but "
            f"{getattr(model, 'name', None) or 'this model'!r} was wrapped or registered from "
            "trained weights (iw.wrap, iw.zoo.register), so its initialisation is not known and "
            "a 'scratch' retrain would start from the trained weights; use mode='warm_start' (or "
            "the explorer's 'warm start' ground truth), or train it with iw.train(...) to keep "
            "its initialisation")
    config = config if config is not None else model_config
    if not isinstance(config, TrainConfig):
        raise TypeError("pass config=TrainConfig(...): how to retrain (a plain nn.Module does not "
                        "carry one; a TrainedModel's own config is used when config is None)")
    config, objective = retraining_objective(model_config, config, allow_different_objective)
    pbrf_damping = check_pbrf_damping(pbrf_damping)
    device = resolve_device(config.device)
    n_params = sum(p.numel() for p in module.parameters())
    dt = resolve_dtype_auto(dtype, n_params, device)
    config = config.replace(dtype=dtype_name(dt))
    work = copy.deepcopy(module).to(device=device, dtype=dt)
    names = select_params(work, params)
    trained = state_of(work)
    init_known = init is not None and getattr(model, "extra", {}).get("init_known", True) is not False
    # without a known start (needs_init=False: every job draws its own), start as trained
    start = (_start_state(mode, trained, init, names, work) if needs_init or init_known
             else trained)
    X, y = _tensors(model, train, "train", device, dt, config.loss)
    X_test, y_test = _tensors(None, test, "test", device, dt, config.loss)
    if X.shape[0] < 2:
        raise ValueError("leave-one-out needs at least 2 training points")
    from ..models.losses import check_targets, output_width

    n_outputs = output_width(work, X)
    check_targets(y, n_outputs, config.loss, "training")
    check_targets(y_test, n_outputs, config.loss, "test")
    return Problem(work, trained, start, spec, X, y, X_test, y_test, config, mode, names,
                   describe_params(params), config.n_steps(X.shape[0]), dt, device,
                   pbrf_damping, bool(subtract_control) and mode != "pbrf",
                   init=None if init is None else {k: v.to(device) for k, v in init.items()},
                   objective=objective, init_known=init_known)


def _start_state(mode: str, trained: dict[str, torch.Tensor], init: dict[str, torch.Tensor] | None,
                 names: list[str], work: nn.Module) -> dict[str, torch.Tensor]:
    if mode != "scratch":
        return trained
    if init is None:
        raise ValueError(
            "mode='scratch' needs the initial parameters, which a plain nn.Module does not keep; "
            "pass the TrainedModel returned by iw.train(...), or use mode='warm_start'"
        )
    everything = set(names) == {k for k, p in work.named_parameters() if p.requires_grad}
    dtype = next(iter(trained.values())).dtype
    start = dict(trained)
    for k in (init if everything else names):
        if k in start:
            v = init[k]
            start[k] = v.to(device=start[k].device,
                            dtype=dtype if v.is_floating_point() else v.dtype)
    return start


def _tensors(model: Any, data: Any, split: str, device: torch.device, dtype: torch.dtype,
             loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    if data is None and split == "train" and isinstance(model, TrainedModel):
        X, y = model.X_train, model.y_train
    elif data is None:
        raise ValueError(f"pass the {split} data as an (X, y) pair or a torch Dataset")
    else:
        X, y = as_tensors(data)
    if X.shape[0] == 0:
        raise ValueError(f"the {split} set is empty")
    X = X.to(device=device, dtype=dtype)
    y = cast_targets(y, loss, device, dtype)
    if not bool(torch.isfinite(X).all()):
        row = int(torch.nonzero(~torch.isfinite(X.reshape(X.shape[0], -1)).all(1))[0])
        raise ValueError(f"the {split} inputs contain NaN or inf (first at {split} row {row}): "
                         "no loss exists there, so every retrain's value would be NaN; drop, "
                         "clean or impute those rows first")
    if split == "train" and data is not None and isinstance(model, TrainedModel):
        problem = model.training_set_problem(X, y)
        if problem is not None:
            import warnings

            warnings.warn(
                f"{problem}: this is not the model's own training set, so the retrains start "
                "from a minimum of another objective and every 'actual' effect includes that "
                "drift; pass the model's own rows (tm.train, or tm.data.train)",
                RuntimeWarning, stacklevel=5)
    return X, y
