"""The result every retraining ground truth returns: :class:`LOOResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .._findings import Finding, TrustReport
from .problem import RetrainObjective


@dataclass
class LOOResult:
    """Actual influence values with everything needed to judge them.

    ``values[t, k]`` is the change in the loss of test point ``t`` when ``indices[k]`` (a training
    index, or a group of them for :func:`leave_group_out`) is removed and the model retrained:
    positive means the removed point(s) helped ``t``. ``reference`` says what the loss after
    retraining is compared with: the control retrain (nothing removed, same steps) or the
    trained model itself. ``n_retrains_computed``/``n_retrains_loaded`` count every retrain of
    the call, the control included (distinct removals only when ``indices`` repeat).

    ``objective`` says which loss and weight decay the retrains minimised and where they came
    from (the model's own, unless asked otherwise). A retrain that diverged has the value NaN
    (``diverged`` marks it), never a number that only looks like an effect; ``findings`` say
    what was seen (divergence, retrains short of stationarity, a different objective).

    ``truth`` names the registered ground truth that measured it (``mode`` is its retraining
    mode). A truth that averages ``n_seeds > 1`` paired retrains (control and removal share each
    seed) gives each value its standard error ``se`` (same shape; None with one seed);
    ``units`` lists the removed points of each column.
    """

    values: torch.Tensor
    indices: list[Any]
    mode: str
    steps: int
    params: str
    control_subtracted: bool
    grad_norms: torch.Tensor
    converged: torch.Tensor
    n_retrains_computed: int
    dtype: str
    seconds: float
    n_retrains_loaded: int = 0
    reference: str = "control retrain"
    reference_losses: torch.Tensor | None = None
    control_grad_norm: float | None = None
    batch_width: int = 1
    pbrf_damping: float | None = None
    setting: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    objective: RetrainObjective | None = None
    diverged: torch.Tensor | None = None
    findings: tuple[Finding, ...] = ()
    truth: str = ""
    se: torch.Tensor | None = None
    n_seeds: int = 1
    units: list[tuple[int, ...]] = field(default_factory=list)

    @property
    def report(self) -> TrustReport:
        """The findings as a :class:`TrustReport` (``print(res.report.to_text())``)."""
        return TrustReport(self.findings)

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())

    def __repr__(self) -> str:
        seeds = f", n_seeds={self.n_seeds}" if self.n_seeds > 1 else ""
        return (f"LOOResult(truth={self.truth or self.mode!r}, mode={self.mode!r}, "
                f"params={self.params!r}{seeds}, "
                f"values={tuple(self.values.shape)}, "
                f"steps={self.steps}, control_subtracted={self.control_subtracted}, "
                f"converged={int(self.converged.sum())}/{self.converged.numel()}, "
                f"computed={self.n_retrains_computed}, loaded={self.n_retrains_loaded}, "
                f"dtype={self.dtype}, seconds={self.seconds:.2f})")
