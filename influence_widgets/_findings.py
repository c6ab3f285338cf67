"""Findings: why a number may not be trusted, in one structured form every layer shares.

A :class:`Finding` says what was seen (with the numbers), what it means for the influence
estimates, what to do, and optionally a one-click fix as control settings (``{"damping": 0.12}``,
``{"curvature": "ggn"}``, ``{"scale": 3.1}``). A :class:`TrustReport` collects the findings of
one computation (training, the estimate, the retrains, the noise floor, the comparison) and
shows them as text (notebooks, the CLI), HTML (the explorer) or ``RuntimeWarning``s (scripts).

The detection rules are pure functions (numbers in, findings out), so that training, the
influence engine, the ground truth and the explorer judge the same numbers the same way:

* :func:`stationarity_findings` - the trained parameters are far from a stationary point;
* :func:`degenerate_findings` - separable data without weight decay (no finite minimiser), or a
  damping that swamps the curvature;
* :func:`solver_findings` - an indefinite ``H`` that the damping does not fix, CG stopped by its
  iteration limit, LiSSA that had to restart with a larger scale.

This module is private and top-level (like ``_devices``), so every layer may import it.
"""

from __future__ import annotations

import html
import math
import textwrap
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

SEVERITIES = ("info", "warning", "error")  # least to most severe
SOURCES = ("training", "estimate", "retraining", "noise floor", "comparison")

# --- thresholds of the rules (the reasons are in the docstrings of the functions using them)
STATIONARY_REL = 1e-3  # gradient norm / objective above which a model is "far from stationary"
DEFAULT_GRAD_TOL = 1e-5  # TrainConfig's default, for objectives that come without a grad_tol
DEGENERATE_OBJECTIVE = 1e-3  # cross-entropy objective under which separated data count as "-> 0"
VANISHING_EIGENVALUE = 1e-4  # top Hessian eigenvalue under which the curvature counts as gone
DAMPING_MARGIN = 1.1  # a suggested damping is this times the most negative eigenvalue's size

_COLOURS = {  # border, background, text
    "error": ("#d9534f", "#fdf2f2", "#7a1f1f"),
    "warning": ("#f0ad4e", "#fff8ec", "#6b4a10"),
    "info": ("#5bc0de", "#f0f8fb", "#1f4e5f"),
}


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"Finding.{name} must be one of {', '.join(map(repr, choices))}, "
                         f"got {value!r}")


def describe_action(action: Mapping[str, Any]) -> str:
    """``{"damping": 0.12, "curvature": "ggn"}`` -> ``"damping = 0.12, curvature = ggn"``."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return format(v, ".4g")
        return "blank" if v is None else str(v)

    return ", ".join(f"{k} = {fmt(v)}" for k, v in action.items())


@dataclass(frozen=True)
class Finding:
    """One reason to doubt (or a note on) a computed number.

    Attributes:
        severity: "error" (the number is wrong or missing), "warning" (suspicious: read it with
            the reason in mind) or "info" (a note: a setting that was picked, a weak signal).
        source: where it was seen: "training", "estimate", "retraining", "noise floor" or
            "comparison".
        code: a stable identifier ("indefinite-hessian", "not-stationary", ...): tests, filters
            and the explorer's buttons key on it, never on the wording.
        what: what was seen, with the numbers.
        why: what it means for the estimates.
        fix: what to do about it.
        action: a one-click fix as control settings (``{"damping": 0.12}``), or None.
        alternatives: further one-click fixes, in order of preference (``({"curvature": "ggn"},)``).
    """

    severity: str
    source: str
    code: str
    what: str
    why: str
    fix: str
    action: dict[str, Any] | None = field(default=None, hash=False)
    alternatives: tuple[dict[str, Any], ...] = field(default=(), hash=False)

    def __post_init__(self) -> None:
        _check_choice("severity", self.severity, SEVERITIES)
        _check_choice("source", self.source, SOURCES)
        if not self.code:
            raise ValueError("Finding.code must be a non-empty string")
        if self.action is not None and not isinstance(self.action, Mapping):
            raise TypeError(f"Finding.action must be a dict or None, got {type(self.action).__name__}")
        object.__setattr__(self, "alternatives", tuple(dict(a) for a in self.alternatives))

    @property
    def rank(self) -> int:
        """0 for info, 1 for warning, 2 for error."""
        return SEVERITIES.index(self.severity)

    @property
    def actions(self) -> tuple[dict[str, Any], ...]:
        """Every one-click fix: ``action`` first, then the ``alternatives``."""
        return ((dict(self.action),) if self.action else ()) + self.alternatives

    @property
    def message(self) -> str:
        """One line: what; why (fix). The text of its ``RuntimeWarning``."""
        return f"{self.what}; {self.why} ({self.fix})"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (a TrainedModel's diagnostics keep findings in this form)."""
        return {"severity": self.severity, "source": self.source, "code": self.code,
                "what": self.what, "why": self.why, "fix": self.fix,
                "action": None if self.action is None else dict(self.action),
                "alternatives": [dict(a) for a in self.alternatives]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finding:
        d = dict(d)
        d["alternatives"] = tuple(d.get("alternatives") or ())
        return cls(**d)

    def to_text(self, width: int = 100, source: bool = True) -> str:
        """Severity, (source and) code on the first line, then what / why / fix, wrapped."""
        def block(label: str, text: str) -> str:
            return textwrap.fill(text, width, initial_indent=f"    {label:<5}",
                                 subsequent_indent=" " * 9)

        where = f"{self.source}: " if source else ""
        lines = [f"  [{self.severity}] {where}{self.code}", block("what", self.what),
                 block("why", self.why), block("fix", self.fix)]
        if self.actions:
            lines.append(block("try", " | ".join(describe_action(a) for a in self.actions)))
        return "\n".join(lines)

    def to_html(self, source: bool = True) -> str:
        """A box coloured by severity (every text escaped); class ``iw-finding iw-<severity>``.
        A note ("info") keeps its why and fix folded (a ``<details>`` element)."""
        border, bg, fg = _COLOURS[self.severity]
        e = html.escape
        where = f" · {e(self.source)}" if source else ""
        head = f"<b>{e(self.severity)}</b>{where} · <code>{e(self.code)}</code>: {e(self.what)}"
        more = f"<i>why:</i> {e(self.why)}<br><i>fix:</i> {e(self.fix)}"
        body = (f"<details><summary>{head}</summary>{more}</details>" if self.severity == "info"
                else f"{head}<br>{more}")
        return (
            f'<div class="iw-finding iw-{self.severity}" data-code="{e(self.code)}" '
            f'style="border-left:4px solid {border};background:{bg};color:{fg};'
            f'padding:4px 8px;margin:3px 0;line-height:1.4">{body}</div>'
        )


def _as_finding(f: Finding | Mapping[str, Any]) -> Finding:
    if isinstance(f, Finding):
        return f
    if isinstance(f, Mapping):
        return Finding.from_dict(f)
    raise TypeError(f"expected a Finding or its dict, got {type(f).__name__}")


def _dedupe(findings: Iterable[Finding | Mapping[str, Any]]) -> tuple[Finding, ...]:
    """One finding per (source, code): the first, unless a later one is more severe (it then
    takes the first one's place)."""
    out: list[Finding] = []
    where: dict[tuple[str, str], int] = {}
    for f in map(_as_finding, findings):
        key = (f.source, f.code)
        if key not in where:
            where[key] = len(out)
            out.append(f)
        elif f.rank > out[where[key]].rank:
            out[where[key]] = f
    return tuple(out)


@dataclass(frozen=True)
class TrustReport:
    """The findings of one computation (training, estimate, retrains, noise floor, comparison).

    Findings may be given as :class:`Finding` or as their dicts. A source says one thing per
    code: of two findings with the same (source, code), the first is kept unless the later one is
    more severe. ``a + b`` and ``a.merge(b, c)`` combine reports (or finding sequences).
    """

    findings: tuple[Finding, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "findings", _dedupe(self.findings))

    def __len__(self) -> int:
        return len(self.findings)

    def __iter__(self) -> Iterator[Finding]:
        return iter(self.findings)

    def __add__(self, other: TrustReport | Iterable[Finding]) -> TrustReport:
        if not isinstance(other, TrustReport | tuple | list):
            return NotImplemented
        return self.merge(other)

    def merge(self, *others: TrustReport | Iterable[Finding | Mapping[str, Any]]) -> TrustReport:
        found = list(self.findings)
        for o in others:
            found.extend(o.findings if isinstance(o, TrustReport) else o)
        return TrustReport(tuple(found))

    @property
    def worst(self) -> str | None:
        """The most severe severity present ("error", "warning", "info"), None when empty."""
        return max(self.findings, key=lambda f: f.rank).severity if self.findings else None

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(f.code for f in self.findings)

    def get(self, code: str) -> Finding | None:
        """The first finding with this code, or None."""
        return next((f for f in self.findings if f.code == code), None)

    def by_source(self) -> dict[str, tuple[Finding, ...]]:
        """Findings grouped by source, in pipeline order (training first), most severe first
        within a source; sources without findings are left out."""
        groups = {s: tuple(sorted((f for f in self.findings if f.source == s),
                                  key=lambda f: -f.rank)) for s in SOURCES}
        return {s: fs for s, fs in groups.items() if fs}

    def counts(self) -> dict[str, int]:
        return {s: sum(f.severity == s for f in self.findings) for s in reversed(SEVERITIES)}

    def summary(self) -> str:
        """One line: "2 warnings, 1 note" or "no warnings"."""
        c = self.counts()
        parts = [f"{c['error']} error{'s' * (c['error'] != 1)}" if c["error"] else "",
                 f"{c['warning']} warning{'s' * (c['warning'] != 1)}" if c["warning"] else "",
                 f"{c['info']} note{'s' * (c['info'] != 1)}" if c["info"] else ""]
        parts = [p for p in parts if p]
        return ", ".join(parts) if parts else "no warnings: none of the checks fired"

    def to_text(self, width: int = 100) -> str:
        """A plain-text report for notebooks and the command line (``print(report.to_text())``)."""
        lines = [f"Trust report: {self.summary()}"]
        for source, fs in self.by_source().items():
            lines.append(f"{source}:")
            lines.extend(f.to_text(width, source=False) for f in fs)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def to_html(self) -> str:
        """The report as HTML (every text escaped), grouped by source; class ``iw-report``."""
        head = f"<b>Trust report</b>: {html.escape(self.summary())}"
        body = "".join(
            f"<div style='margin-top:4px'><b>{html.escape(source)}</b>"
            + "".join(f.to_html(source=False) for f in fs) + "</div>"
            for source, fs in self.by_source().items()
        )
        return f"<div class='iw-report'>{head}{body}</div>"

    def _repr_html_(self) -> str:
        return self.to_html()

    def warn(self, stacklevel: int = 2) -> None:
        """Emit every warning- and error-level finding once, as a ``RuntimeWarning`` (scripts)."""
        seen: set[str] = set()
        for f in self.findings:
            if f.rank >= 1 and f.message not in seen:
                seen.add(f.message)
                warnings.warn(f.message, RuntimeWarning, stacklevel=stacklevel + 1)


# ----------------------------------------------------------------------------- helpers


def round_up(x: float, digits: int = 2) -> float:
    """``x > 0`` rounded up to ``digits`` significant figures (0.1234 -> 0.13)."""
    if not (x > 0 and math.isfinite(x)):
        raise ValueError(f"round_up needs a finite positive number, got {x}")
    e = math.floor(math.log10(x)) - digits + 1
    r = math.ceil(x / 10.0**e - 1e-9) * 10.0**e
    return float(f"{r:.{digits}g}")


def suggest_damping(min_eigenvalue: float) -> float:
    """A damping just above ``-min_eigenvalue`` (``DAMPING_MARGIN`` times it, rounded up to two
    significant figures), so that ``H + damping I`` is positive definite."""
    return round_up(DAMPING_MARGIN * abs(min_eigenvalue))


@torch.no_grad()
def logit_stats(outputs: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Training accuracy and the mean logit margin (the true class's logit minus the largest
    other one) of classifier ``outputs (N, K)`` against class indices ``y (N,)``. A margin m
    gives a cross-entropy of about ``exp(-m)``: margins that keep growing say the data are
    separated and the objective has no finite minimiser."""
    out = outputs.detach().double().reshape(outputs.shape[0], -1)
    y = y.reshape(-1).long().to(out.device)
    acc = float((out.argmax(dim=1) == y).double().mean())
    if out.shape[1] < 2:
        return acc, float("nan")
    true = out.gather(1, y[:, None])[:, 0]
    other = out.scatter(1, y[:, None], float("-inf")).max(dim=1).values
    return acc, float((true - other).mean())


def _g(x: float) -> str:
    return format(x, ".3g")


# ----------------------------------------------------------------------------- rules


def stationarity_findings(objective: float, grad_norm: float, grad_tol: float = DEFAULT_GRAD_TOL,
                          *, source: str = "training", params: str = "all",
                          rel: float = STATIONARY_REL) -> tuple[Finding, ...]:
    """Is the model at a stationary point, as first-order influence assumes?

    Rule: a warning ("not-stationary") when ``grad_norm > max(grad_tol, rel * |objective|)``
    with ``rel = 1e-3``: the gradient is large both against the tolerance the model was trained
    to and against the objective's own scale (a unit step along it would change the objective
    by more than 0.1 %). A model that missed ``grad_tol`` but stays under the relative bound gets
    an "info" note ("not-converged") instead; a NaN/inf gradient is an error.
    """
    if not (math.isfinite(grad_norm) and math.isfinite(objective)):
        return (Finding(
            "error", source, "non-finite-gradient",
            f"the objective ({objective}) or its gradient norm ({grad_norm}) is NaN/inf at the "
            "trained parameters",
            "no estimate or retraining from these parameters means anything",
            "lower the learning rate, add weight decay, or check the inputs for NaN"),)
    limit = max(grad_tol, rel * abs(objective))
    where = "" if params == "all" else f" (parameters: {params})"
    if grad_norm > limit:
        return (Finding(
            "warning", source, "not-stationary",
            f"gradient norm {grad_norm:.2e} at the trained parameters{where}, above "
            f"max(grad_tol {grad_tol:.0e}, {rel:g} x objective {_g(objective)}) = {limit:.2e}: "
            "far from a stationary point",
            "first-order influence assumes a minimum: here each estimate also contains the "
            "drift the optimiser would continue (about H^-1 g, the same for every removed "
            "point), and warm-started LOO retrains move even with nothing removed, so part of "
            "every 'actual' effect is that drift, not the removal",
            "train to a smaller gradient (more steps, an L-BFGS polish: TrainConfig(polish_steps="
            "...)), prefer a smooth activation (tanh) where ReLU/SELU stall on a kink, or add "
            "weight decay"),)
    if grad_norm > grad_tol:
        return (Finding(
            "info", source, "not-converged",
            f"gradient norm {grad_norm:.2e}{where} is above grad_tol {grad_tol:.0e} but small "
            f"against the objective {_g(objective)} (under {rel:g} x objective)",
            "close to stationary: the drift the estimate assumes away is small",
            "train a little longer to reach grad_tol if the estimates look off"),)
    return ()


def degenerate_findings(objective: float, train_accuracy: float | None,
                        top_eigenvalue: float | None, damping: float = 0.0,
                        logit_scale: float | None = None, *, weight_decay: float = 0.0,
                        loss: str = "cross_entropy", source: str = "training",
                        obj_tol: float = DEGENERATE_OBJECTIVE,
                        eig_tol: float = VANISHING_EIGENVALUE) -> tuple[Finding, ...]:
    """The separable regime, and a damping that swamps the curvature.

    "degenerate" (warning) when the loss is cross-entropy, there is no weight decay, the
    training accuracy is 1.0 (or unknown), and the curvature has gone: the objective is under
    ``obj_tol = 1e-3`` (separated data: it keeps falling as the logits grow, and the Hessian
    shrinks with it, since the cross-entropy's curvature in the logits is at most about the
    loss), or the top Hessian eigenvalue (when known) is under ``eig_tol = 1e-4`` or under the
    damping. ``logit_scale`` (the mean logit margin) is reported as evidence, not required.

    "damping-dominates" (warning) when, outside that regime, the damping is at least the top
    eigenvalue: ``(H + damping I)^-1`` is then within a factor 2 of ``I / damping`` over the
    whole spectrum, and the estimate is a scaled gradient dot product.
    """
    out: list[Finding] = []
    known_top = top_eigenvalue is not None and math.isfinite(top_eigenvalue)
    flat = known_top and (top_eigenvalue < eig_tol or (damping > 0 and top_eigenvalue <= damping))
    separated = (loss == "cross_entropy" and not weight_decay
                 and (train_accuracy is None or train_accuracy >= 1.0))
    if separated and (objective < obj_tol or flat):
        seen = [f"training objective {objective:.2g} with no weight decay"]
        if train_accuracy is not None:
            seen.append(f"training accuracy {train_accuracy:.0%}")
        if known_top:
            seen.append(f"top Hessian eigenvalue {top_eigenvalue:.2g}"
                        + (f" (damping {damping:.3g})" if damping else ""))
        if logit_scale is not None and math.isfinite(logit_scale):
            seen.append(f"mean logit margin {logit_scale:.3g}")
        out.append(Finding(
            "warning", source, "degenerate",
            "degenerate: " + ", ".join(seen) + ": the data are separated and the objective has "
            "no finite minimiser",
            "the objective keeps falling as the logits grow, so the Hessian vanishes and "
            "(H + damping I)^-1 ~ I/damping (or blows up without damping): the estimate reduces "
            "to a scaled gradient dot product, and LOO retraining only rescales the logits",
            "add weight decay or stop training earlier"))
    elif known_top and damping > 0 and top_eigenvalue <= damping:
        out.append(Finding(
            "warning", "estimate", "damping-dominates",
            f"damping {damping:.3g} is at least the top eigenvalue {top_eigenvalue:.3g} of H",
            "(H + damping I)^-1 is within a factor 2 of I/damping over the whole spectrum: the "
            "curvature barely matters, and the estimate is a scaled gradient dot product "
            "g_t . g_i / (n damping)",
            f"lower the damping well below {top_eigenvalue:.3g} (if H + damping I stays "
            "positive definite), or read the scores as gradient similarity"))
    return tuple(out)


def indefinite_finding(lo: float, damping: float) -> Finding:
    """"indefinite-hessian" (warning): ``min_eigenvalue + damping <= 0``; action: a damping just
    above ``-min_eigenvalue`` (:func:`suggest_damping`), alternative: the GGN curvature."""
    return Finding(
        "warning", "estimate", "indefinite-hessian",
        f"H is indefinite: its most negative eigenvalue is {lo:.4g} and damping {damping:.3g} "
        "does not make H + damping I positive definite",
        "the estimate solves with a matrix that is not positive definite: along directions "
        "of negative curvature it flips sign, and near zero eigenvalues it blows up; "
        "first-order influence assumes a minimum, where H is positive definite",
        f"use damping > {-lo:.3g} (the estimate then shrinks along low-curvature directions), "
        "or the Gauss-Newton curvature (positive semi-definite)",
        action={"damping": suggest_damping(lo)}, alternatives=({"curvature": "ggn"},))


def not_converged_finding(name: str, it: int | None, res: float | None, tol: float | None
                          ) -> Finding:
    """"cg-not-converged" (warning): an iterative solve hit ``max_iter`` before its tolerance;
    action: 4x ``max_iter``."""
    return Finding(
        "warning", "estimate", "cg-not-converged",
        f"{name} stopped at its iteration limit (max_iter = {it}) with relative residual "
        f"{_g(res) if res is not None else '?'}, above its tolerance "
        f"{_g(tol) if tol is not None else '?'}",
        "the solve is inexact: each estimate carries an error of about the residual's "
        "relative size, more when H + damping I is ill-conditioned",
        "raise max_iter or damping",
        action={"max_iter": 4 * int(it)} if it else None)


def lissa_restarted_finding(restarts: int, scale: float | None) -> Finding:
    """"lissa-restarted" (warning): LiSSA diverged with its automatic scale and was restarted
    with a doubled one; action: the scale that worked."""
    scale = float("nan") if scale is None else float(scale)
    return Finding(
        "warning", "estimate", "lissa-restarted",
        f"LiSSA diverged with its automatic scale and restarted {restarts} time(s) with a "
        f"doubled scale; it converged with scale {_g(scale)}",
        "the top eigenvalue behind the automatic scale was underestimated, and the solve "
        f"took {restarts + 1} runs; a larger scale also converges more slowly, so the "
        "series may be cut short",
        f"set the scale to {_g(scale)} (no failed runs), and check the steps are enough",
        action={"scale": round_up(scale, 3)} if math.isfinite(scale) and scale > 0 else None)


def lissa_inexact_finding(res: float | None, tol: float | None, steps: int | None,
                          scale: float | None, scale_source: str | None) -> Finding:
    """"lissa-inexact" (warning): the relative residual ``||v - (H + damping I) x|| / ||v||``
    of LiSSA's answer, measured with one full-batch product, is above ``residual_tol``: too
    few steps or too large a scale; action: an automatic scale (when it was given), else 4x
    the steps."""
    return Finding(
        "warning", "estimate", "lissa-inexact",
        f"LiSSA's answer has relative residual {_g(res) if res is not None else '?'} "
        f"(||v - (H + damping I) x|| / ||v||), above residual_tol "
        f"{_g(tol) if tol is not None else '?'}, after {steps} steps with scale "
        f"{_g(scale) if scale is not None else '?'}",
        "the Neumann series was cut short (too few steps) or converges too slowly (a scale "
        "far above the top eigenvalue): the estimates carry an error of about the "
        "residual's relative size, and can be off by far more in low-curvature directions",
        "raise steps, or leave scale blank (automatic, from the top eigenvalue), or use "
        "solver='cg' or 'exact'",
        action={"scale": None} if scale_source == "given" else
        ({"steps": 4 * int(steps)} if steps else None))


def solver_findings(diagnostics: Mapping[str, Any], damping: float, solver: str
                    ) -> tuple[Finding, ...]:
    """What a solve's diagnostics say about its answer: the solver's typed diagnostics
    (:class:`~influence_widgets.influence.diagnostics.Diagnostics`) say it themselves
    (``diagnostics.findings(damping)``); a plain dict (results saved before) is read with the
    same rules:

    * "indefinite-hessian" (:func:`indefinite_finding`);
    * "cg-not-converged" (:func:`not_converged_finding`);
    * "lissa-restarted" (:func:`lissa_restarted_finding`);
    * "lissa-inexact" (:func:`lissa_inexact_finding`).

    A diverged LiSSA or CG raises an error, so it never reaches here.
    """
    own = getattr(diagnostics, "findings", None)
    if callable(own):
        return tuple(own(damping))
    d = diagnostics
    out: list[Finding] = []
    lo = d.get("min_eigenvalue")
    if lo is not None and math.isfinite(lo) and lo + damping <= 0:
        out.append(indefinite_finding(lo, damping))
    if d.get("converged") is False and solver == "lissa":
        out.append(lissa_inexact_finding(d.get("residual"), d.get("residual_tol"), d.get("steps"),
                                         d.get("scale"), d.get("scale_source")))
    elif d.get("converged") is False:
        out.append(not_converged_finding({"cg": "CG"}.get(solver, solver), d.get("iterations"),
                                         d.get("residual"), d.get("tol")))
    restarts = d.get("restarts") or 0
    if restarts > 0:
        out.append(lissa_restarted_finding(restarts, d.get("scale")))
    return tuple(out)
