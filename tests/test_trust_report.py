"""Findings and the trust report: each rule on constructed numbers, each producer on a tiny model."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import influence_widgets as iw
from influence_widgets._findings import (
    Finding,
    TrustReport,
    degenerate_findings,
    logit_stats,
    round_up,
    solver_findings,
    stationarity_findings,
    suggest_damping,
)
from influence_widgets.evaluate import comparison_findings, trust_report
from influence_widgets.influence import LiSSASolver
from influence_widgets.models.training import summarize

pytestmark = pytest.mark.usefixtures("one_thread")

DT = torch.float64


def codes(findings) -> list[str]:
    return [f.code for f in findings]


# ----------------------------------------------------------------------------- rules


def test_stationarity_rule():
    # far: above both grad_tol and 1e-3 x objective
    [f] = stationarity_findings(0.5, 1e-2, 1e-5)
    assert (f.severity, f.source, f.code) == ("warning", "training", "not-stationary")
    assert "1.00e-02" in f.what and "drift" in f.why
    # the relative bound: 5e-4 is far for an objective of 0.1, close for an objective of 1
    assert codes(stationarity_findings(0.1, 5e-4, 1e-5)) == ["not-stationary"]
    [note] = stationarity_findings(1.0, 5e-4, 1e-5)
    assert (note.severity, note.code) == ("info", "not-converged")
    # at a stationary point: nothing
    assert stationarity_findings(0.5, 1e-6, 1e-5) == ()
    # a near-zero objective (separable data) falls back to grad_tol
    assert stationarity_findings(1e-9, 1e-8, 1e-5) == ()
    [err] = stationarity_findings(float("nan"), 1.0)
    assert (err.severity, err.code) == ("error", "non-finite-gradient")
    [f] = stationarity_findings(0.5, 1e-2, params="last_layer")
    assert "last_layer" in f.what


def test_degenerate_rule():
    # separable, no weight decay, objective -> 0
    [f] = degenerate_findings(1e-9, 1.0, None, 0.0, 60.0)
    assert (f.severity, f.code) == ("warning", "degenerate")
    assert f.what.startswith("degenerate:") and "margin 60" in f.what
    assert "scaled gradient dot product" in f.why and "weight decay" in f.fix
    # accuracy unknown still counts; a vanishing top eigenvalue alone too
    assert codes(degenerate_findings(1e-6, None, None)) == ["degenerate"]
    assert codes(degenerate_findings(0.05, 1.0, 1e-6)) == ["degenerate"]
    assert codes(degenerate_findings(0.05, 1.0, 0.005, damping=0.01)) == ["degenerate"]
    # not separable, weight decay, MSE, or healthy curvature: nothing
    assert degenerate_findings(1e-9, 0.97, None) == ()
    assert degenerate_findings(1e-9, 1.0, None, weight_decay=5e-3) == ()
    assert degenerate_findings(1e-9, 1.0, None, loss="mse") == ()
    assert degenerate_findings(0.05, 1.0, 2.3) == ()
    # a damping above the top eigenvalue swamps the curvature, whatever the regime
    [d] = degenerate_findings(0.3, 0.9, 1.29, damping=2.0, weight_decay=5e-3)
    assert (d.code, d.source) == ("damping-dominates", "estimate")
    assert degenerate_findings(0.3, 0.9, 1.29, damping=0.5, weight_decay=5e-3) == ()


def test_solver_rules():
    [f] = solver_findings({"min_eigenvalue": -0.123, "top_eigenvalue": 2.0}, 0.0, "exact")
    assert (f.severity, f.source, f.code) == ("warning", "estimate", "indefinite-hessian")
    assert "-0.123" in f.what and f.action == {"damping": 0.14}
    assert f.alternatives == ({"curvature": "ggn"},)
    assert f.actions == ({"damping": 0.14}, {"curvature": "ggn"})
    assert solver_findings({"min_eigenvalue": -0.123}, 0.14, "exact") == ()
    assert solver_findings({"min_eigenvalue": 0.01}, 0.0, "exact") == ()

    [cg] = solver_findings({"converged": False, "iterations": 7, "residual": 0.3, "tol": 1e-8},
                           0.0, "cg")
    assert cg.code == "cg-not-converged" and "0.3" in cg.what and cg.fix == "raise max_iter or damping"
    assert cg.action == {"max_iter": 28}
    assert solver_findings({"converged": True, "iterations": 7}, 0.0, "cg") == ()

    [li] = solver_findings({"restarts": 2, "scale": 3.0712}, 0.0, "lissa")
    assert li.code == "lissa-restarted" and li.action == {"scale": 3.08}
    assert solver_findings({"restarts": 0, "scale": 3.0}, 0.0, "lissa") == ()


def test_suggested_damping_is_just_above():
    assert round_up(0.1234) == 0.13 and round_up(0.13) == 0.13 and round_up(123.4, 3) == 124.0
    for lo in (-0.123, -1e-5, -4.2, -0.0386):
        d = suggest_damping(lo)
        assert -lo < d <= 1.25 * -lo


def test_logit_stats():
    out = torch.tensor([[5.0, 1.0, 0.0], [0.0, 3.0, 2.0], [1.0, 0.0, 4.0]])
    acc, margin = logit_stats(out, torch.tensor([0, 1, 1]))
    assert acc == pytest.approx(2 / 3)
    assert margin == pytest.approx((4.0 + 1.0 - 4.0) / 3)


def test_comparison_rules():
    assert comparison_findings({"n": 40, "pearson": 0.8, "spearman_ci": (0.5, 0.9)}) == ()
    [noise] = comparison_findings({"n": 40, "frac_within_noise": 0.8}, noise_std=0.01)
    assert (noise.severity, noise.code) == ("warning", "ground-truth-noise")
    assert "80%" in noise.what and "mostly noise" in noise.why
    [part] = comparison_findings({"n": 40, "frac_within_noise": 0.3})
    assert part.severity == "info"
    # computed from the values when compare had no noise floor
    found = comparison_findings({"n": 4}, actual=[1e-4, -2e-4, 1.0, 3e-4], noise_std=1e-3)
    assert codes(found) == ["ground-truth-noise", "few-points"] and "75%" in found[0].what
    assert found[1].action == {"k": 20}
    # one point decides Pearson
    est = np.array([0.01, 0.02, 0.015, 0.012, 0.018, 0.011, 1.0])
    act = np.array([0.3, -0.2, 0.1, -0.4, 0.25, -0.1, 2.0])
    [one] = comparison_findings({"n": 7}, estimated=est, actual=act, indices=[5, 9, 2, 8, 1, 3, 77])
    assert one.code == "one-point-pearson" and "#77" in one.what
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    assert comparison_findings({"n": 40}, estimated=x, actual=x + 0.1 * rng.normal(size=40)) == ()
    [zero] = comparison_findings({"n": 40, "spearman_ci": (-0.2, 0.4)})
    assert (zero.code, zero.severity) == ("ci-includes-zero", "info")
    [undef] = comparison_findings({"n": 40, "pearson": float("nan"), "note": "actual is constant"})
    assert undef.code == "undefined-correlation"


# ----------------------------------------------------------------------------- the report


def _f(severity="warning", source="estimate", code="x", what="w", **kw) -> Finding:
    return Finding(severity, source, code, what, "because", "do this", **kw)


def test_finding_validates_and_round_trips_through_json():
    with pytest.raises(ValueError, match="severity"):
        _f(severity="fatal")
    with pytest.raises(ValueError, match="source"):
        _f(source="solver")
    f = _f(action={"damping": 0.1}, alternatives=({"curvature": "ggn"},))
    assert Finding.from_dict(json.loads(json.dumps(f.to_dict()))) == f
    assert f.message == "w; because (do this)"


def test_report_merges_orders_and_dedupes():
    a = TrustReport((_f("info", "comparison", "c"), _f("warning", "training", "t")))
    b = TrustReport((_f("error", "retraining", "r"), _f("error", "training", "t", "worse")))
    both = a + b
    assert both.worst == "error" and TrustReport().worst is None
    assert list(both.by_source()) == ["training", "retraining", "comparison"]
    assert both.get("t").what == "worse"  # the more severe of the same (source, code) wins
    assert len(both) == 3 and len(a.merge(b, [_f(code="new")])) == 4
    assert TrustReport(({"severity": "info", "source": "training", "code": "d", "what": "",
                         "why": "", "fix": ""},)).codes == ("d",)
    assert (a + [_f(code="y")]).codes[-1] == "y"
    assert both.counts() == {"error": 2, "warning": 0, "info": 1}


def test_report_text_and_html():
    rep = TrustReport((_f("warning", "estimate", "indefinite-hessian", "H <b>is</b> indefinite",
                          action={"damping": 0.14}),
                       _f("info", "training", "not-converged", "gradient 2e-5")))
    text = rep.to_text()
    assert text.startswith("Trust report: 1 warning, 1 note")
    assert text.index("training:") < text.index("estimate:")
    for piece in ("[warning] indefinite-hessian", "why  because", "fix  do this",
                  "try  damping = 0.14", "gradient 2e-5"):
        assert piece in text
    page = rep.to_html()
    assert "H &lt;b&gt;is&lt;/b&gt; indefinite" in page and "<b>is</b>" not in page
    assert "iw-finding iw-warning" in page and 'data-code="indefinite-hessian"' in page
    assert "no warnings" in TrustReport().to_text()


def test_warn_emits_each_warning_once():
    rep = TrustReport((_f("warning", code="a", what="first"), _f("info", code="b"),
                       _f("error", "training", "c", what="second")))
    with pytest.warns(RuntimeWarning) as rec:
        rep.warn()
        rep.warn()
    msgs = [str(w.message) for w in rec]
    assert msgs.count("first; because (do this)") == 2 and len(msgs) == 4  # once per call


# ----------------------------------------------------------------------------- producers


@pytest.fixture(scope="module")
def iris():
    return iw.datasets.iris()


def _train(iris, weight_decay=0.0, width=16, **kw):
    spec = iw.models.mlp_spec(iris.input_shape, iris.n_classes, depth=1, width=width,
                              activation="tanh")
    cfg = iw.TrainConfig.preset("exact", weight_decay=weight_decay, device="cpu", steps=300, **kw)
    return iw.train(spec, iris.train, cfg, data=iris)


@pytest.fixture(scope="module")
def separable(iris):
    """An Iris MLP without weight decay, trained to separability (objective ~1e-9)."""
    return _train(iris)


def test_training_summary_flags_the_separable_regime(separable, iris):
    d = separable.diagnostics
    assert d["objective"] < 1e-6 and d["converged"]  # "converged" by grad_tol, yet degenerate
    assert [f["code"] for f in d["findings"]] == ["degenerate"]
    json.dumps(d)  # the zoo caches diagnostics as JSON
    # with the model and its data, summarize adds accuracy and margins
    diag = {"objective": torch.tensor([d["objective"]]), "grad_norm": torch.tensor([d["grad_norm"]]),
            "steps": 1, "seconds": 0.0}
    full = summarize(diag, separable.config, params="all", dtype=DT, device=torch.device("cpu"),
                     model=separable.model, X=separable.X_train, y=separable.y_train, chunk_size=50)
    assert full["train_accuracy"] == 1.0 and full["logit_margin"] > 10
    assert "training accuracy 100%" in full["findings"][0]["what"]
    assert trust_report(model=separable).codes == ("degenerate",)


def test_training_summary_with_weight_decay_is_clean(iris):
    tm = _train(iris, weight_decay=5e-3, width=5)
    assert tm.diagnostics["findings"] == []
    stalled = _train(iris, weight_decay=5e-3, width=5, optimizer="adam", lr=0.01)
    stalled_codes = [f["code"] for f in stalled.diagnostics["findings"]]
    # stopped short of a minimum: not stationary (and its Hessian may still be indefinite there)
    assert stalled_codes[0] == "not-stationary", stalled.diagnostics
    assert set(stalled_codes) <= {"not-stationary", "indefinite-at-trained"}


def test_old_diagnostics_without_findings_get_the_stationarity_check(separable):
    class Old:
        diagnostics = {"objective": 0.5, "grad_norm": 0.01, "grad_tol": 1e-5}

    assert trust_report(model=Old()).codes == ("not-stationary",)


def test_estimate_of_the_separable_model_is_degenerate(separable, iris):
    with pytest.warns(RuntimeWarning, match="indefinite"):
        res = iw.influence(separable, iris.train, iris.test, test_indices=[0], return_result=True)
    f = res.report.get("degenerate")
    assert f is not None and f.source == "training" and "top Hessian eigenvalue" in f.what
    assert "training accuracy 100%" in f.what


def test_cg_at_its_iteration_limit(iris):
    tm = _train(iris, weight_decay=5e-3, width=5)
    with pytest.warns(RuntimeWarning, match="raise max_iter or damping"):
        res = iw.influence(tm, iris.train, iris.test, solver="cg", max_iter=1, test_indices=[0],
                           return_result=True)
    f = res.report.get("cg-not-converged")
    assert f.action == {"max_iter": 4}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        ok = iw.influence(tm, iris.train, iris.test, solver="cg", test_indices=[0],
                          return_result=True)
    assert ok.findings == ()


def _indefinite():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(20) % 3
    X = torch.randn(3, 3, generator=g, dtype=DT)[y] + torch.randn(20, 3, generator=g, dtype=DT)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).to(DT)
    return model, (X, y), (X[:5], y[:5])


def test_indefinite_hessian_action_removes_the_finding():
    model, train, test = _indefinite()
    with pytest.warns(RuntimeWarning, match="indefinite"):
        res = iw.influence(model, train, test, return_result=True)
    f = res.report.get("indefinite-hessian")
    lo = res.diagnostics["min_eigenvalue"]
    assert f.action["damping"] > -lo and f.alternatives == ({"curvature": "ggn"},)
    assert res.report.get("not-stationary") is not None  # a random initialisation
    fixed = iw.influence(model, train, test, return_result=True, **f.action)
    assert fixed.report.get("indefinite-hessian") is None
    ggn = iw.influence(model, train, test, return_result=True, damping=1e-3, curvature="ggn")
    assert ggn.report.get("indefinite-hessian") is None


def test_lissa_restart_action_skips_the_failed_runs(iris, monkeypatch):
    tm = _train(iris, weight_decay=5e-3, width=5)
    real = LiSSASolver._auto_scale

    def too_small(self, damping):  # as if Lanczos had underestimated the top eigenvalue 3x
        scale, _ = real(self, damping)
        return scale / 3, "patched"

    monkeypatch.setattr(LiSSASolver, "_auto_scale", too_small)
    kw = {"solver": "lissa", "steps": 300, "test_indices": [0], "return_result": True}
    with pytest.warns(RuntimeWarning, match="restarted"):
        res = iw.influence(tm, iris.train, iris.test, **kw)
    f = res.report.get("lissa-restarted")
    assert res.diagnostics["restarts"] >= 1 and f.action["scale"] >= res.diagnostics["scale"]
    again = iw.influence(tm, iris.train, iris.test, **{**kw, **f.action})
    assert again.diagnostics["restarts"] == 0 and again.report.get("lissa-restarted") is None


def test_trust_report_collects_every_part(separable, iris):
    with pytest.warns(RuntimeWarning, match="indefinite"):  # the separable model's H: ~0 and < 0
        est = iw.influence(separable, iris.train, iris.test, test_indices=[0], return_result=True)

    class LOO:  # what ground truth results carry
        findings = (Finding("warning", "retraining", "retrain-diverged", "2 of 5 diverged",
                            "not effects", "lower lr"),)

    class Noise:
        findings = ({"severity": "info", "source": "noise floor", "code": "retrain-not-stationary",
                     "what": "3 of 3", "why": "", "fix": ""},)
        std = torch.tensor([0.5, 0.01])

    actual = np.array([0.1, -0.2, 0.05, 0.3])
    rep = trust_report(model=separable, estimate=est, loo=LOO(), noise=Noise(),
                       comparison={"n": 4}, actual=actual, test_index=0)
    assert rep.codes.count("degenerate") == 1  # measured twice, reported once
    assert list(rep.by_source()) == ["training", "estimate", "retraining", "noise floor",
                                     "comparison"]
    assert {"retrain-diverged", "retrain-not-stationary", "few-points",
            "ground-truth-noise"} <= set(rep.codes)
    assert "±0.5" in rep.get("ground-truth-noise").what
    assert trust_report() == TrustReport()
