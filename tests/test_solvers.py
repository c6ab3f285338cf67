"""Each inverse-HVP solver against the exact answer, with its own tolerance (float64)."""

from __future__ import annotations

import pytest
import torch
from conftest import clustered, rel_err, small_mlp
from torch import nn

from influence_widgets.influence import (
    SOLVERS,
    ArnoldiSettings,
    ArnoldiSolver,
    CGSettings,
    CGSolver,
    InfluenceEngine,
    LiSSASettings,
    Objective,
    make_solver,
)
from influence_widgets.influence.solvers import top_eigenvalue

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n: int = 30, d: int = 3, k: int = 3, seed: int = 0):
    return clustered(n, d, k, seed)


def _mlp(seed: int = 0, d: int = 3, width: int = 5, k: int = 3, act=nn.Tanh) -> nn.Module:
    return small_mlp(seed, d, width, k, act())


def _rhs(obj: Objective, k: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.randn(k, obj.p, dtype=DT, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def pd_objective():
    """An MLP objective whose H + damping I is positive definite for damping >= 1."""
    X, y = _data()
    obj = Objective(_mlp(), X, y, weight_decay=0.01)
    lo = float(torch.linalg.eigvalsh(obj.hessian())[0])
    assert lo + 1.0 > 0.05, lo
    return obj


def _exact(obj: Objective, V: torch.Tensor, damping: float) -> torch.Tensor:
    H = obj.hessian() + damping * torch.eye(obj.p, dtype=DT)
    return torch.linalg.solve(H, V.T).T


@pytest.mark.parametrize("block", [True, False])
def test_cg_matches_exact(pd_objective, block):
    V = _rhs(pd_objective)
    s = make_solver("cg", tol=1e-10, block=block).fit(pd_objective)
    assert rel_err(s.inverse_hvp(V, 1.0), _exact(pd_objective, V, 1.0)) < 1e-6
    assert s.diagnostics["converged"] and s.diagnostics["block"] == block
    assert rel_err(s.inverse_hvp(V[2], 1.0), _exact(pd_objective, V[2:3], 1.0)[0]) < 1e-6


@pytest.mark.parametrize("block", [True, False])
def test_preconditioned_cg_matches_exact(pd_objective, block):
    V = _rhs(pd_objective)
    plain = make_solver("cg", tol=1e-10, block=block).fit(pd_objective)
    s = make_solver("cg", tol=1e-10, block=block, precondition=8).fit(pd_objective)
    assert rel_err(s.inverse_hvp(V, 1.0), _exact(pd_objective, V, 1.0)) < 1e-6
    plain.inverse_hvp(V, 1.0)
    assert s.diagnostics["precondition"] == 8
    assert s.diagnostics["iterations"] < plain.diagnostics["iterations"]


def test_block_cg_with_more_vectors_than_parameters(pd_objective):
    V = _rhs(pd_objective, k=pd_objective.p + 7)
    s = CGSolver(CGSettings(tol=1e-10)).fit(pd_objective)
    assert rel_err(s.inverse_hvp(V, damping=1.0), _exact(pd_objective, V, 1.0)) < 1e-6
    assert s.diagnostics["iterations"] <= 3


def test_cg_reports_progress(pd_objective):
    seen = []
    s = CGSolver().fit(pd_objective)
    s.inverse_hvp(_rhs(pd_objective), 1.0, progress=lambda i, n, info: seen.append(info["residual"]))
    assert seen and seen[-1] <= 1e-8 and len(seen) == s.diagnostics["iterations"]


def test_lissa_with_automatic_scale_matches_exact(pd_objective):
    V = _rhs(pd_objective)
    s = make_solver("lissa", steps=80).fit(pd_objective)
    assert rel_err(s.inverse_hvp(V, 1.0), _exact(pd_objective, V, 1.0)) < 2e-2
    lam = float(torch.linalg.eigvalsh(pd_objective.hessian())[-1]) + 1.0
    # automatic: just above half the top eigenvalue of H + damping I (the fastest safe scale)
    assert 0.5 * lam < s.diagnostics["scale"] < 0.6 * lam
    assert s.diagnostics["restarts"] == 0 and s.diagnostics["steps"] == 80


def test_lissa_stops_early_at_its_estimated_error(pd_objective):
    V = _rhs(pd_objective, k=3)
    s = make_solver("lissa", steps=5000, error_tol=1e-4).fit(pd_objective)
    out = s.inverse_hvp(V, 1.0)
    assert s.diagnostics["steps"] < 500 and s.diagnostics["estimated_error"] <= 1e-4
    assert rel_err(out, _exact(pd_objective, V, 1.0)) < 1e-4


def test_lissa_recovers_when_its_automatic_scale_is_too_small(pd_objective):
    V = _rhs(pd_objective, k=2)
    s = make_solver("lissa", steps=80).fit(pd_objective)
    s._top = (0.2 * s._top[0], 0.0)  # a badly underestimated top eigenvalue
    out = s.inverse_hvp(V, 1.0)
    assert s.diagnostics["restarts"] >= 1
    assert rel_err(out, _exact(pd_objective, V, 1.0)) < 5e-2


def test_lissa_minibatches_average_to_the_answer(pd_objective):
    V = _rhs(pd_objective, k=2)
    s = make_solver("lissa", steps=100, repeats=2, batch_size=15, seed=3).fit(pd_objective)
    out = s.inverse_hvp(V, 1.0)
    assert "1.1 x" in s.diagnostics["scale_source"]
    assert rel_err(out, _exact(pd_objective, V, 1.0)) < 0.3


def test_top_eigenvalue_by_lanczos(pd_objective):
    lam, err = top_eigenvalue(pd_objective)
    ev = torch.linalg.eigvalsh(pd_objective.hessian())
    assert abs(lam - float(ev[-1])) <= max(err, 1e-10) + 1e-9


def test_arnoldi_with_full_rank_equals_exact(pd_objective):
    V = _rhs(pd_objective)
    s = ArnoldiSolver(ArnoldiSettings(rank=pd_objective.p)).fit(pd_objective)
    assert rel_err(s.inverse_hvp(V, 1.0), _exact(pd_objective, V, 1.0)) < 1e-8


def test_arnoldi_is_exact_once_its_rank_covers_the_data_term():
    """Least squares on 3 rows of 5 features and 2 outputs: the data term's Hessian has rank 6
    of 12 parameters. Rank 6 plus the weight decay outside their span is the exact inverse; the
    span alone (the complement dropped) is not."""
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(3, 5, dtype=DT, generator=g), torch.randn(3, 2, dtype=DT, generator=g)
    obj = Objective(nn.Linear(5, 2).to(DT), X, Y, loss="mse", weight_decay=0.1)
    V = _rhs(obj, k=4)
    s = ArnoldiSolver(ArnoldiSettings(rank=6)).fit(obj)
    for damping in (0.0, 0.5):
        assert rel_err(s.inverse_hvp(V, damping), _exact(obj, V, damping)) < 1e-10
    span = s.evecs @ (s.evecs.T @ _exact(obj, V, 0.5).T)
    assert rel_err(span.T, _exact(obj, V, 0.5)) > 0.1


def test_exact_methods_agree_and_handle_indefinite_matrices():
    X, y = _data()
    obj = Objective(_mlp(), X, y)
    V = _rhs(obj)
    eig = make_solver("exact", method="eigh").fit(obj)
    chol = make_solver("exact", method="cholesky").fit(obj)
    assert eig.diagnostics["min_eigenvalue"] + 0.2 < 0  # indefinite: cholesky falls back to LU
    assert rel_err(chol.inverse_hvp(V, 0.2), eig.inverse_hvp(V, 0.2)) < 1e-8
    assert chol.diagnostics["factorization"] == "lu"
    assert chol.diagnostics["top_eigenvalue"] == pytest.approx(eig.diagnostics["top_eigenvalue"], rel=1e-6)
    assert abs(chol.diagnostics["min_eigenvalue"] - eig.diagnostics["min_eigenvalue"]) < 1e-8
    assert rel_err(chol.inverse_hvp(V, 5.0), eig.inverse_hvp(V, 5.0)) < 1e-8
    assert chol.diagnostics["factorization"] == "cholesky"
    # auto (small p): the spectrum at fit, a Cholesky factor where H + damping I is positive
    # definite, the eigendecomposition (pseudo-inverse) where it is not
    auto = make_solver("exact").fit(obj)
    for key in ("top_eigenvalue", "min_eigenvalue", "n_negative"):
        assert auto.diagnostics[key] == pytest.approx(eig.diagnostics[key], rel=1e-10, abs=1e-12)
    assert rel_err(auto.inverse_hvp(V, 5.0), eig.inverse_hvp(V, 5.0)) < 1e-10
    assert auto.diagnostics["factorization"] == "cholesky"
    assert rel_err(auto.inverse_hvp(V, 0.2), eig.inverse_hvp(V, 0.2)) < 1e-10
    assert auto.diagnostics["factorization"] == "eigh"


def test_ggn_equals_hessian_for_linear_least_squares():
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(25, 4, dtype=DT, generator=g), torch.randn(25, 2, dtype=DT, generator=g)
    model = nn.Linear(4, 2).to(DT)
    hess = Objective(model, X, Y, loss="mse", weight_decay=0.1)
    ggn = Objective(model, X, Y, loss="mse", weight_decay=0.1, curvature="ggn")
    assert rel_err(ggn.hessian(), hess.hessian()) < 1e-12
    V = _rhs(hess, k=3)
    assert rel_err(ggn.hvp(V), hess.hvp(V)) < 1e-12
    assert rel_err(ggn.hvp(V[0]), hess.hvp(V[0])) < 1e-12


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_ggn_is_positive_semidefinite_on_an_mlp(loss):
    X, y = _data(n=20)
    target = y if loss == "cross_entropy" else torch.randn(20, 3, dtype=DT)
    obj = Objective(_mlp(act=nn.ReLU), X, target, loss=loss, curvature="ggn")
    G = obj.hessian()
    ev = torch.linalg.eigvalsh(G)
    assert float(ev[0]) >= -1e-10 * float(ev[-1])
    full = Objective(_mlp(act=nn.ReLU), X, target, loss=loss)
    assert float(torch.linalg.eigvalsh(full.hessian())[0]) < -1e-6 or loss == "mse"
    # the GGN's products match its matrix, batched or not
    V = _rhs(obj, k=4)
    assert rel_err(obj.hvp(V), V @ G) < 1e-12 and rel_err(obj.hvp(V[0]), G @ V[0]) < 1e-12


def test_make_solver_builds_every_solver_with_its_options():
    assert isinstance(make_solver("cg", tol=1e-4, block=False), CGSolver)
    assert make_solver("lissa", steps=5, scale=2.0).settings == LiSSASettings(scale=2.0, steps=5)
    assert isinstance(make_solver("arnoldi", rank=3), ArnoldiSolver)
    assert make_solver("exact", method="cholesky").settings.method == "cholesky"
    # LiSSA's old option names still work, with a warning naming the new one
    with pytest.warns(FutureWarning, match="'depth' is now called 'steps'"):
        assert make_solver("lissa", depth=7).settings.steps == 7
    with pytest.warns(FutureWarning, match="'tol' is now called 'error_tol'"):
        assert make_solver("lissa", tol=1e-3).settings.error_tol == 1e-3


def test_engine_shares_fits_across_test_points_and_reports_diagnostics():
    X, y = _data()
    engine = InfluenceEngine(_mlp(), (X, y), weight_decay=0.01)
    Xt, yt = _data(n=6, seed=9)
    a = engine.scores((Xt, yt), solver="cg", damping=1.0)
    b = engine.scores((Xt, yt), solver="cg", damping=1.0, test_indices=[3])
    assert engine.fits == 1
    assert rel_err(b.values[0], a.values[3]) < 1e-8
    assert a.diagnostics["solver"] == "cg" and "grad_norm" in a.diagnostics and a.seconds > 0


# ----------------------------------------------------------------------------- damping per solve


@pytest.mark.parametrize("name", ["exact", "cg", "lissa", "arnoldi"])
def test_one_fit_serves_every_damping_and_bad_damping_is_refused(pd_objective, name):
    """Damping is an argument of each solve, validated there, also after a first fit."""
    options = {"lissa": {"steps": 400}, "arnoldi": {"rank": pd_objective.p}}.get(name, {})
    s = make_solver(name, **options).fit(pd_objective)
    V = _rhs(pd_objective, k=2)
    expected = {d: _exact(pd_objective, V, d) for d in (1.0, 3.0)}
    calls = pd_objective.hvp_calls
    for damping in (1.0, 3.0):
        tol = {"lissa": 5e-2}.get(name, 1e-6)
        assert rel_err(s.inverse_hvp(V, damping), expected[damping]) < tol
        assert s.diagnostics["damping"] == damping
    if name in ("exact", "arnoldi"):  # the fit holds the whole answer: no product after it
        assert pd_objective.hvp_calls == calls
    for bad in (float("nan"), -0.5, float("inf"), "1"):
        with pytest.raises(ValueError, match="damping must be a finite number >= 0"):
            s.inverse_hvp(V, bad)
    assert not hasattr(s, "damping")  # nothing to set from outside


def test_engine_reuses_each_fit_across_dampings_and_checks_damping():
    X, y = _data()
    engine = InfluenceEngine(_mlp(), (X, y), weight_decay=0.01)
    test = _data(n=4, seed=9)
    for name in SOLVERS:
        first = engine.scores(test, solver=name, damping=2.0)
        fits = engine.fits
        engine.scores(test, solver=name, damping=3.0)
        assert engine.fits == fits, name
        assert first.damping == 2.0 and first.diagnostics["settings"] == engine.solver(name).settings.options()
        with pytest.raises(ValueError, match="damping"):
            engine.scores(test, solver=name, damping=float("nan"))
        with pytest.raises(ValueError, match="damping"):
            engine.scores(test, solver=name, damping=-1.0)
