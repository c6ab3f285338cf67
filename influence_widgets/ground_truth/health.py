"""Is a retrain's result usable? Divergence, stationarity and the objective, as findings.

A retrain that diverged (its final objective far above the trained model's) gives a change in
test loss that means nothing: its value becomes NaN, so no comparison can use it without saying
so, and a finding counts it. Retrains that end short of a stationary point are counted (normal
for a fixed warm-start budget: the effect then includes unfinished optimisation). A retraining
objective that differs from the model's, asked for on purpose, is a finding on every result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .._findings import Finding
from ..models.modes import eval_mode
from ..models.training import Copies, TrainingObjective
from .problem import Problem
from .retrain import Job

#: A retrain has diverged when its final objective exceeds the reference objective by more than
#: ``max(DIVERGED_ABS, DIVERGED_REL * |reference|)``: removing points moves the objective by about
#: ``loss_i / n``, far below this; a blown-up optimiser lands orders of magnitude above it.
DIVERGED_ABS = 1.0
DIVERGED_REL = 1.0
#: From scratch a retrain may end in another minimum (or unfinished), far above the trained
#: model's objective and still a real outcome of retraining: only a blow-up this far above it
#: counts as diverged; the others are kept, with a note.
SCRATCH_DIVERGED = 10.0
#: A scratch retrain ending this far above the trained objective (relative, plus 1e-3) is noted.
WORSE_MINIMUM_REL = 0.1


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


def diverged_mask(objectives: torch.Tensor, reference: float,
                  scale: float = 1.0) -> torch.Tensor:
    """Which final objectives are non-finite or far above ``reference`` (see ``DIVERGED_*``;
    ``scale`` widens the margin: :data:`SCRATCH_DIVERGED` for retrains from scratch)."""
    limit = reference + scale * max(DIVERGED_ABS, DIVERGED_REL * abs(reference))
    return ~torch.isfinite(objectives) | (objectives > limit)


def check_retrains(problem: Problem, jobs: Sequence[Job], objectives: torch.Tensor,
                   grad_norms: torch.Tensor, controls: Mapping[str, float],
                   source: str = "retraining") -> Health:
    """Findings about the retrains ``jobs`` of one sweep (``objectives``/``grad_norms`` per
    job); ``controls`` maps the key of every control they are compared with to its final
    objective. A job whose own retrain or whose control diverged is marked diverged."""
    ref = trained_objective(problem)
    findings: list[Finding] = []
    scale = SCRATCH_DIVERGED if problem.mode == "scratch" else 1.0
    own = diverged_mask(objectives.double(), ref, scale)
    keys = list(controls)
    bad_controls = (diverged_mask(torch.tensor([controls[k] for k in keys], dtype=torch.float64),
                                  ref, scale) if keys else torch.zeros(0, dtype=torch.bool))
    bad = {k for k, b in zip(keys, bad_controls.tolist()) if b}
    via_control = torch.tensor([j.reference is not None and j.reference.key in bad for j in jobs],
                               dtype=torch.bool)
    diverged = own | via_control
    how = (f"{problem.config.optimizer}, lr {problem.config.lr:g}, {problem.steps} steps, "
           f"mode {problem.mode}")
    if bad:
        worst = max(controls[k] for k in bad)
        every = len(bad) == len(keys)
        findings.append(Finding(
            "error" if every else "warning", source, "control-diverged",
            ("the control retrain (nothing removed) diverged" if len(keys) == 1 else
             f"{len(bad)} of {len(keys)} control retrains (nothing removed) diverged")
            + f": final objective {worst:.4g} against {ref:.4g} for the trained model ({how})",
            "every change in test loss is measured against its control, so none of those "
            "means anything: " + ("all values are NaN" if every else
                                  f"the {int(via_control.sum())} values measured against them "
                                  "are NaN"),
            "lower the learning rate (or the steps) of the retraining config", None))
    if bool((own & ~via_control).any()):
        hit = own & ~via_control
        k, n = int(hit.sum()), hit.numel()
        worst = float(objectives[hit].nan_to_num(float("inf")).max())
        findings.append(Finding(
            "warning", source, "retrain-diverged",
            f"{k} of {n} retrains diverged: final objective up to {worst:.4g} against {ref:.4g} "
            f"for the trained model ({how})",
            "their change in test loss is the optimiser blowing up, not the effect of the "
            "removal: those values are NaN and left out of comparisons",
            "lower the learning rate (or the steps) of the retraining config", None))
    ok = ~diverged
    if problem.mode == "scratch":
        worse = ok & (objectives.double() > ref + WORSE_MINIMUM_REL * abs(ref) + 1e-3)
        if bool(worse.any()):
            k, n = int(worse.sum()), int(ok.sum())
            findings.append(Finding(
                "info", source, "retrain-worse-minimum",
                f"{k} of {n} retrains from scratch ended at a higher objective than the trained "
                f"model (up to {float(objectives[worse].max()):.4g} against {ref:.4g})",
                "retraining from scratch can land in another minimum, or stop short of one: "
                "their values are kept, since that is what retraining does, but they measure "
                "the jump as much as the removal",
                "more steps if training stopped early; a seed-averaged truth (n_seeds) shows "
                "how much such jumps move each value", None))
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
