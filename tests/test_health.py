"""Model health (issue 20): one assessment per model - collapsed, degenerate, not stationary,
indefinite - each state checked on a model built to be in it (never on a seed that happens to
land there), the rules' numbers against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import clustered
from torch import nn

import influence_widgets as iw
from influence_widgets.models.health import Health, assess, hessian_extremes


@pytest.fixture(scope="module")
def data(one_thread):
    X, y = clustered(60, d=4, k=3, seed=3)
    Xt, yt = clustered(12, d=4, k=3, seed=4)
    return (X, y), (Xt, yt)


def _logreg(data, **changes) -> iw.TrainedModel:
    (X, y), _ = data
    spec = iw.models.mlp_spec((4,), 3, depth=0)
    cfg = iw.TrainConfig.preset("exact", weight_decay=0.01, grad_tol=1e-8, device="cpu")
    return iw.train(spec, (X, y), cfg.replace(**changes))


def test_a_converged_regularised_logistic_regression_is_healthy(data):
    tm = _logreg(data)
    h = tm.health
    assert h.healthy and h.status == "healthy" and h.stationary and not h.collapsed
    # the Hessian of an L2 logistic regression is positive definite: every eigenvalue >= wd
    assert h.min_eigenvalue >= 0.01 * (1 - 1e-6) and h.top_eigenvalue > h.min_eigenvalue
    assert "healthy" in h.line() and "healthy" in repr(tm)
    assert tm.diagnostics["health"]["problems"] == []  # kept with the model (the zoo's cache)


def test_lanczos_extremes_match_the_exact_hessian(data):
    tm = _logreg(data)
    (X, y), _ = data
    top, lo = hessian_extremes(tm.model, X, y, loss="cross_entropy", weight_decay=0.01,
                               steps=100)
    params = dict(tm.model.named_parameters())
    names = list(params)
    flat = torch.cat([params[k].detach().reshape(-1) for k in names])

    def objective(theta):
        parts, i = {}, 0
        for k in names:
            n = params[k].numel()
            parts[k] = theta[i:i + n].reshape(params[k].shape)
            i += n
        out = torch.func.functional_call(tm.model, parts, (X,))
        return nn.functional.cross_entropy(out, y) + 0.005 * theta.pow(2).sum()

    evals = torch.linalg.eigvalsh(torch.autograd.functional.hessian(objective, flat))
    assert top == pytest.approx(float(evals.max()), rel=1e-8)
    assert lo == pytest.approx(float(evals.min()), rel=1e-6)


def test_the_zero_network_and_a_constant_predictor_are_collapsed(data):
    (X, y), test = data
    zero = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    for p in zero.parameters():
        nn.init.zeros_(p)
    tm = iw.wrap(zero, (X, y), test, weight_decay=0.005)
    h = tm.health
    assert h.collapsed and h.status == "collapsed" and h.max_weight == 0.0
    assert h.train_accuracy == pytest.approx(h.majority)  # no better than one class
    assert "collapsed" in [f.code for f in h.findings] and "COLLAPSED" in h.line()
    # the trust report names the real cause, not "pick another test point"
    report = iw.evaluate.trust_report(model=tm)
    assert report.get("collapsed").severity == "error"
    constant = nn.Linear(4, 3).double()
    with torch.no_grad():
        constant.weight.zero_()
        constant.bias.copy_(torch.tensor([0.3, -0.1, 0.5]))
    assert assess(constant, X, y, weight_decay=0.0).collapsed


def test_separable_data_without_weight_decay_is_degenerate(one_thread):
    g = torch.Generator().manual_seed(5)
    X = torch.randn(40, 2, generator=g, dtype=torch.float64)
    y = (X[:, 0] > 0).long()
    X[:, 0] += 3 * (2 * y - 1)  # a margin of 6 between the classes: separable
    spec = iw.models.mlp_spec((2,), 2, depth=0)
    tm = iw.train(spec, (X, y), iw.TrainConfig(optimizer="adam", lr=1.0, steps=300,
                                                dtype="float64", weight_decay=0.0))
    h = tm.health
    assert "degenerate" in h.problems and h.status == "degenerate" and not h.collapsed
    assert h.train_accuracy == 1.0 and h.objective < 1e-3


def test_a_model_stopped_early_is_not_stationary_and_its_limit_is_relative(data):
    tm = _logreg(data, optimizer="adam", lr=0.01, steps=5)
    h = tm.health
    assert "not stationary" in h.problems and not h.stationary
    # the rule: gradient norm above max(grad_tol, 1e-3 x |objective|)
    assert h.stationary_limit == pytest.approx(max(1e-8, 1e-3 * abs(h.objective)))
    assert h.grad_norm > h.stationary_limit


class _Saddle(nn.Module):
    """A logistic regression plus a product term ``w1 * w2 * c * x0`` on class 0's logit: with
    ``w1 = w2 = 0`` the product's Hessian block is ``[[wd, g], [g, wd]]`` with ``g`` the loss's
    slope along the product, so at the regression's optimum the point is stationary with an
    eigenvalue ``wd - |g| < 0``: a saddle whose outputs vary (not collapsed)."""

    def __init__(self, lin: nn.Linear, c: float) -> None:
        super().__init__()
        self.lin = lin
        self.w1 = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.w2 = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.c = c

    def forward(self, x):
        out = self.lin(x)
        extra = (self.w1 * self.w2 * self.c) * x[:, 0]
        return out + torch.stack([extra, torch.zeros_like(extra), torch.zeros_like(extra)], 1)


def test_a_saddle_point_is_indefinite(data):
    (X, y), test = data
    lr = _logreg(data)
    lin = lr.model[-1] if isinstance(lr.model, nn.Sequential) else lr.model
    saddle = _Saddle(lin, c=200.0)
    tm = iw.wrap(saddle, (X, y), test, weight_decay=0.01)
    h = tm.health
    assert h.stationary and not h.collapsed  # gradient 0 along w1, w2; the rest at its optimum
    assert "indefinite" in h.problems and h.status == "indefinite"
    # closed form: the product block's eigenvalues are wd +- |g|, g = d loss / d(w1 w2)
    out = lin(X)
    p = torch.softmax(out, dim=1)
    g = float(((p[:, 0] - (y == 0).double()) * 200.0 * X[:, 0]).mean())
    assert h.min_eigenvalue == pytest.approx(0.01 - abs(g), rel=1e-6)
    assert "indefinite-at-trained" in [f.code for f in h.findings]


def test_health_round_trips_through_json_and_is_computed_once(data):
    tm = _logreg(data)
    h = tm.health
    back = Health.from_dict(h.to_dict())
    assert back == h and back.findings == h.findings
    tm.diagnostics["health"] = back.to_dict()
    assert tm.health == h
    # an older diagnostics dict without a health entry gets one on first use
    del tm.diagnostics["health"]
    assert tm.health == h and "health" in tm.diagnostics
    assert math.isfinite(h.grad_norm)


def test_the_trust_report_names_a_collapse_as_the_cause(data):
    """All dots on one point: the fix is to retrain the model, not to pick another test point;
    top-k overlap and sign agreement are undefined, not a perfect 1.00."""
    (X, y), test = data
    zero = nn.Sequential(nn.Linear(4, 3)).double()
    for p in zero.parameters():
        nn.init.zeros_(p)
    tm = iw.wrap(zero, (X, y), test, weight_decay=0.0)
    stats = iw.compare([1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5])
    assert math.isnan(stats["topk_overlap"]) and math.isnan(stats["sign_agreement"])
    report = iw.evaluate.trust_report(model=tm, comparison=stats)
    f = report.get("undefined-correlation")
    assert "collapsed" in f.why and "another test point does not help" in f.fix
