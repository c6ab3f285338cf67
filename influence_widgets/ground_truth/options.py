"""How a retraining sweep runs: the options shared by every sweep front end, in one dataclass.

:func:`~influence_widgets.ground_truth.leave_one_out`, :func:`leave_group_out` and
:func:`retraining_noise` take ``options=SweepOptions(...)`` and/or the same fields as keywords
(``batch_width=3``, ``store=None``, ...); a keyword overrides the field of ``options``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._devices import resolve_dtype
from ..models.training import Progress
from .pbrf import check_pbrf_damping
from .store import LOOStore


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep runs (what it computes is set by the model, data, ``config``, ``mode`` and
    ``params``). Every field is checked when the options are made; ``help`` in each field's
    metadata says what it does (``dataclasses.fields(SweepOptions)``)."""

    subtract_control: bool = field(default=True, metadata={"help": (
        "compare each retrain with the control retrain (nothing removed, same start and steps); "
        "False compares with the trained model. Not used in mode 'pbrf' (always the trained "
        "model); the noise floor always uses the control.")})
    dtype: str | torch.dtype | None = field(default="auto", metadata={"help": (
        "dtype of the retraining: 'float32', 'float64', a torch.dtype, or 'auto' (float64 for "
        "models under 5e6 parameters on CPU, 1e6 on CUDA, else float32).")})
    batch_width: int | str = field(default="auto", metadata={"help": (
        "how many retrains are stacked in one chunk and trained together: a positive integer, "
        "or 'auto' (from model size, data and free memory; with an executor, small enough to "
        "give each of n_workers a chunk).")})
    n_workers: int | None = field(default=None, metadata={"help": (
        "how many chunks the executor runs at once; with batch_width='auto' the chunks are "
        "made small enough to give each worker one; None: os.cpu_count().")})
    executor: Executor | None = field(default=None, metadata={"help": (
        "a concurrent.futures Executor (a process pool, Dask's Client.get_executor(), ...) "
        "that runs the chunks; None runs them in this process, with step-level progress.")})
    store: LOOStore | str | Path | None = field(default="auto", metadata={"help": (
        "where finished chunks are saved so an interrupted sweep resumes: 'auto' "
        "(<cache_dir()>/loo.sqlite), a file path, a LOOStore, or None (nothing saved).")})
    progress: Progress | bool | None = field(default=None, metadata={"help": (
        "progress(done, total, info), called after every chunk (and during training when the "
        "chunks run in this process); True shows a tqdm bar.")})
    should_stop: Callable[[], bool] | None = field(default=None, metadata={"help": (
        "called between steps and chunks; returning True stops the sweep with an "
        "InterruptedError (finished chunks stay in the store).")})
    pbrf_damping: float = field(default=1e-3, metadata={"help": (
        "the damping of the PBRF objective (mode 'pbrf'): a finite number >= 0.")})
    allow_different_objective: bool = field(default=False, metadata={"help": (
        "retrain under a loss or weight decay set in config that differs from the model's own "
        "(the estimate's objective). Off by default: such a config is an error, since the two "
        "would then answer different questions; when on, the result records the difference and "
        "carries a warning.")})

    def __post_init__(self) -> None:
        for name in ("subtract_control", "allow_different_objective"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not (isinstance(self.dtype, str) and self.dtype == "auto"):
            try:
                resolve_dtype(self.dtype)
            except (ValueError, TypeError):
                raise ValueError(f"dtype must be 'auto', 'float32' or 'float64' (or a torch.dtype), "
                                 f"got {self.dtype!r}") from None
        if not (self.batch_width == "auto" or _positive_int(self.batch_width)):
            raise ValueError(f"batch_width must be 'auto' or a positive integer (retrains per "
                             f"chunk), got {self.batch_width!r}")
        if not (self.n_workers is None or _positive_int(self.n_workers)):
            raise ValueError(f"n_workers must be None (os.cpu_count()) or a positive integer (the "
                             f"chunks the executor runs at once), got {self.n_workers!r}")
        if self.executor is not None and not callable(getattr(self.executor, "submit", None)):
            raise TypeError("executor must be a concurrent.futures.Executor (with a submit "
                            f"method) or None, got {type(self.executor).__name__}")
        if not (self.store is None or isinstance(self.store, LOOStore | str | Path)):
            raise TypeError("store must be 'auto', None, a file path or a LOOStore, "
                            f"got {type(self.store).__name__}")
        if not (self.progress is None or self.progress is True or callable(self.progress)):
            raise TypeError("progress must be a function, True (a tqdm bar) or None, got "
                            f"{self.progress!r}")
        if self.should_stop is not None and not callable(self.should_stop):
            raise TypeError(f"should_stop must be a function or None, got "
                            f"{type(self.should_stop).__name__}")
        object.__setattr__(self, "pbrf_damping", check_pbrf_damping(self.pbrf_damping))

    def replace(self, **changes: Any) -> SweepOptions:
        return dataclasses.replace(self, **changes)

    def workers(self) -> int:
        """How many chunks the executor runs at once (``n_workers``, else ``os.cpu_count()``)."""
        return self.n_workers or os.cpu_count() or 1


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(SweepOptions))


def sweep_options(options: SweepOptions | None, overrides: dict[str, Any], *,
                  caller: str) -> SweepOptions:
    """``options`` (default: ``SweepOptions()``) with the keyword ``overrides`` of ``caller``."""
    if options is not None and not isinstance(options, SweepOptions):
        raise TypeError(f"{caller}(options=...) must be a SweepOptions, got "
                        f"{type(options).__name__}")
    unknown = sorted(set(overrides) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(
            f"{caller}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"valid sweep options (fields of SweepOptions): {', '.join(OPTION_NAMES)}"
        )
    base = options if options is not None else SweepOptions()
    return base.replace(**overrides) if overrides else base
