"""Is a retrain's result usable? Divergence, stationarity and the objective, as findings.

A retrain that diverged (its final objective far above the trained model's) gives a change in
test loss that means nothing: its value becomes NaN, so no comparison can use it without saying
so, and a finding counts it. Retrains that end short of a stationary point are counted (normal
for a fixed warm-start budget: the effect then includes unfinished optimisation). A retraining
objective that differs from the model's, asked for on purpose, is a finding on every result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._findings import Finding
from ..models.modes import eval_mode
from ..models.training import Copies, TrainingObjective
from .problem import Problem

#: A retrain has diverged when its final objective exceeds the reference objective by more than
#: ``max(DIVERGED_ABS, DIVERGED_REL * |reference|)``: removing points moves the objective by about
#: ``loss_i / n``, far below this; a blown-up optimiser lands orders of magnitude above it.
DIVERGED_ABS = 1.0
DIVERGED_REL = 1.0


def trained_objective(problem: Problem) -> float:
    """The objective a retrain is judged against: the training objective of the trained model
    on all points (0 in "pbrf" mode, whose objective is 0 at the trained parameters)."""
    if problem.mode == "pbrf":
        return 0.0
    copies = Copies.stack(problem.module, problem.trained, problem.names, 1, problem.device,
                          problem.dtype)
    w = torch.ones(1, problem.n, device=problem.device, dtype=problem.dtype)
    objective = TrainingObjective(copies, problem.X, problem.y, w, problem.config)
    with torch.no_grad(), eval_mode(problem.module):
        return float(objective()[0])


@dataclass
class Health:
    """Per retrain: diverged (its value is NaN) and converged; plus the findings to show."""

    diverged: torch.Tensor  # (n_jobs,) bool
    findings: tuple[Finding, ...]


def diverged_mask(objectives: torch.Tensor, reference: float) -> torch.Tensor:
    """Which final objectives are non-finite or far above ``reference`` (see ``DIVERGED_*``)."""
    limit = reference + max(DIVERGED_ABS, DIVERGED_REL * abs(reference))
    return ~torch.isfinite(objectives) | (objectives > limit)


def check_retrains(problem: Problem, objectives: torch.Tensor, grad_norms: torch.Tensor,
                   control_objective: float | None, source: str = "retraining") -> Health:
    """Findings about the retrains of one sweep (``objectives``/``grad_norms`` per job)."""
    ref = trained_objective(problem)
    findings: list[Finding] = []
    diverged = diverged_mask(objectives.double(), ref)
    control_bad = (control_objective is not None
                   and bool(diverged_mask(torch.tensor([control_objective]), ref)[0]))
    how = (f"{problem.config.optimizer}, lr {problem.config.lr:g}, {problem.steps} steps, "
           f"mode {problem.mode}")
    if control_bad:
        diverged = torch.ones_like(diverged)
        findings.append(Finding(
            "error", source, "control-diverged",
            f"the control retrain (nothing removed) diverged: final objective "
            f"{control_objective:.4g} against {ref:.4g} for the trained model ({how})",
            "every change in test loss is measured against the control, so none of them means "
            "anything: all values are NaN",
            "lower the learning rate (or the steps) of the retraining config", None))
    elif bool(diverged.any()):
        k, n = int(diverged.sum()), diverged.numel()
        worst = float(objectives[diverged].nan_to_num(float("inf")).max())
        findings.append(Finding(
            "warning", source, "retrain-diverged",
            f"{k} of {n} retrains diverged: final objective up to {worst:.4g} against {ref:.4g} "
            f"for the trained model ({how})",
            "their change in test loss is the optimiser blowing up, not the effect of the "
            "removal: those values are NaN and left out of comparisons",
            "lower the learning rate (or the steps) of the retraining config", None))
    ok = ~diverged
    tol = problem.config.grad_tol
    far = ok & ~(grad_norms < tol)
    if bool(far.any()):
        k, n = int(far.sum()), int(ok.sum())
        findings.append(Finding(
            "info", source, "retrain-not-stationary",
            f"{k} of {n} retrains ended with a gradient norm above {tol:g} (largest "
            f"{float(grad_norms[far].max()):.3g}) after {problem.steps} steps",
            "a retrain stopped short of a minimum measures the removal plus unfinished "
            "optimisation (the usual state of warm-start LOO with a fixed budget)",
            "more steps, or compare with the estimate the protocol approximates (PBRF)", None))
    obj = problem.objective
    if obj is not None and obj.source == "assumed":
        findings.append(Finding(
            "warning", source, "objective-assumed",
            f"retrained under {obj.describe()}",
            "the estimate's weight decay was given to iw.influence separately; if it differs from "
            "this one, the two answer different questions and disagreement means nothing",
            "pass config=TrainConfig(..., weight_decay=W) with the W given to iw.influence, or "
            "wrap the module in a TrainedModel (iw.wrap(net, train, test, weight_decay=W)) so "
            "both take it from the model",
            None))
    if obj is not None and obj.differs:
        findings.append(Finding(
            "warning", source, "objective-mismatch",
            f"retrained under {obj.describe()}",
            "the estimate explains the model's own objective; this ground truth answers another "
            "question, so disagreement between them says nothing about the estimate",
            "leave loss and weight_decay unset in the retraining config", None))
    return Health(diverged, tuple(findings))
