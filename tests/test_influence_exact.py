"""The engine against closed forms and exact leave-one-out (float64, tiny problems built in tests)."""

from __future__ import annotations

import pytest
import torch
from conftest import rel_err
from torch import nn
from torch.func import functional_call, grad, hessian, vmap

import influence_widgets as iw
from influence_widgets.influence import ExactSolver, InfluenceEngine, Objective

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _blobs(n: int, d: int, k: int, seed: int, spread: float = 1.2):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g, dtype=DT) * 1.5
    y = torch.arange(n) % k
    X = centers[y] + spread * torch.randn(n, d, generator=g, dtype=DT)
    return X, y


def _linear(d: int, k: int, bias: bool = True, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(d, k, bias=bias).to(DT)


# ----------------------------------------------------------------------------- ridge regression


def _ridge(n=30, d=4, lam=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=DT)
    y = X @ torch.randn(d, generator=g, dtype=DT) + 0.3 * torch.randn(n, generator=g, dtype=DT)
    H = X.T @ X / n + lam * torch.eye(d, dtype=DT)
    theta = torch.linalg.solve(H, X.T @ y / n)
    model = _linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(theta[None])
    return model, X, y, H, theta


def test_ridge_hessian_and_inverse_match_closed_form():
    model, X, y, H, theta = _ridge()
    obj = Objective(model, X, y, loss="mse", weight_decay=0.1)
    assert rel_err(obj.hessian(), H) < 1e-8
    solver = ExactSolver().fit(obj)
    V = torch.randn(5, 4, dtype=DT, generator=torch.Generator().manual_seed(1))
    assert rel_err(solver.inverse_hvp(V, damping=0.0), torch.linalg.solve(H, V.T).T) < 1e-8
    # a trained ridge model sits at a stationary point of the objective
    assert float(obj.gradient().norm()) < 1e-12


def test_ridge_influence_matches_hand_formula():
    model, X, y, H, theta = _ridge()
    Xt, yt = X[:6] + 0.5, y[:6] - 0.2
    est = iw.influence(model, (X, y), (Xt, yt), weight_decay=0.1, loss="mse")
    g_train = (X @ theta - y)[:, None] * X  # d/dtheta of 0.5 (x theta - y)^2
    g_test = (Xt @ theta - yt)[:, None] * Xt
    expected = g_test @ torch.linalg.solve(H, g_train.T) / X.shape[0]
    assert est.shape == (6, 30)
    assert rel_err(est, expected) < 1e-8


# ----------------------------------------------------------------------------- logistic regression


def _jacs(X: torch.Tensor, k: int) -> torch.Tensor:
    """d logits / d theta of a linear layer for each row, ``(n, k, p)``, parameters ordered weight
    (row-major, ``W[c, j]`` at ``c * d + j``) then bias."""
    eye = torch.eye(k, dtype=DT)
    JW = torch.einsum("ck,nj->nckj", eye, X).reshape(X.shape[0], k, k * X.shape[1])
    return torch.cat([JW, eye.expand(X.shape[0], k, k)], dim=2)


def _logreg_parts(theta, X, y, k, lam):
    """Objective gradient, Hessian and per-sample gradients of L2 multinomial logistic regression."""
    d = X.shape[1]
    W, b = theta[: k * d].view(k, d), theta[k * d :]
    P = torch.softmax(X @ W.T + b, dim=1)
    E = torch.nn.functional.one_hot(y, k).to(DT)
    J = _jacs(X, k)  # (n, k, p)
    G = torch.einsum("nkp,nk->np", J, P - E)
    A = torch.diag_embed(P) - P[:, :, None] * P[:, None, :]
    H = torch.einsum("nkp,nkl,nlq->pq", J, A, J) / X.shape[0] + lam * torch.eye(theta.numel(), dtype=DT)
    return G.mean(0) + lam * theta, H, G


def _newton(X, y, k, lam, theta0=None):
    theta = torch.zeros(k * X.shape[1] + k, dtype=DT) if theta0 is None else theta0.clone()
    for _ in range(50):
        g, H, _ = _logreg_parts(theta, X, y, k, lam)
        if float(g.norm()) < 1e-14:
            break
        theta = theta - torch.linalg.solve(H, g)
    return theta


def _logreg_model(theta, d, k):
    model = _linear(d, k)
    with torch.no_grad():
        model.weight.copy_(theta[: k * d].view(k, d))
        model.bias.copy_(theta[k * d :])
    return model


def _test_losses(theta, X, y, k):
    d = X.shape[1]
    logits = X @ theta[: k * d].view(k, d).T + theta[k * d :]
    return torch.nn.functional.cross_entropy(logits, y, reduction="none")


def test_logistic_hessian_and_scores_match_hand_formula():
    k, d, lam = 3, 3, 0.02
    X, y = _blobs(36, d, k, seed=2)
    Xt, yt = _blobs(7, d, k, seed=3)
    theta = _newton(X, y, k, lam)
    model = _logreg_model(theta, d, k)
    _, H, G = _logreg_parts(theta, X, y, k, lam)
    obj = Objective(model, X, y, weight_decay=lam)
    assert rel_err(obj.hessian(), H) < 1e-8
    assert rel_err(obj.per_sample_grads(X, y), G) < 1e-10
    _, _, Gt = _logreg_parts(theta, Xt, yt, k, lam)
    expected = Gt @ torch.linalg.solve(H, G.T) / X.shape[0]
    for method in ("eigh", "cholesky"):
        est = iw.influence(model, (X, y), (Xt, yt), weight_decay=lam, method=method)
        assert rel_err(est, expected) < 1e-8, method


def test_influence_predicts_exact_leave_one_out_on_logistic_regression():
    k, d, lam, n = 3, 2, 0.1, 60
    X, y = _blobs(n, d, k, seed=4, spread=1.5)
    Xt, yt = _blobs(8, d, k, seed=5, spread=1.5)
    theta = _newton(X, y, k, lam)
    model = _logreg_model(theta, d, k)
    base = _test_losses(theta, Xt, yt, k)
    actual = torch.empty(8, n, dtype=DT)
    for i in range(n):  # leave-one-out solved to machine precision by Newton's method
        keep = torch.arange(n) != i
        th_i = _newton(X[keep], y[keep], k, lam, theta0=theta)
        assert float(_logreg_parts(th_i, X[keep], y[keep], k, lam)[0].norm()) < 1e-12
        actual[:, i] = _test_losses(th_i, Xt, yt, k) - base
    plain = iw.influence(model, (X, y), (Xt, yt), weight_decay=lam)
    corrected = iw.influence(model, (X, y), (Xt, yt), weight_decay=lam, wd_correction=True)
    for est in (plain, corrected):
        for t in range(8):  # per test point, as the paper measures
            r = torch.corrcoef(torch.stack([est[t], actual[t]]))[0, 1]
            assert r >= 0.99, (t, float(r))
        # sign convention: positive = removing the point increases the test loss, same units
        big = actual.abs() > actual.abs().quantile(0.8)
        assert bool((est[big].sign() == actual[big].sign()).all())
        slope = float((est * actual).sum() / (est * est).sum())
        assert 0.8 < slope < 1.25, slope
    # over all pairs at once, the weight-decay term (the same for every i) must be included
    r_all = torch.corrcoef(torch.stack([corrected.flatten(), actual.flatten()]))[0, 1]
    assert r_all >= 0.99, float(r_all)
    shift = corrected - plain
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-14)
    assert (corrected - actual).abs().mean() < (plain - actual).abs().mean()


# ----------------------------------------------------------------------------- invariances


def _tiny_mlp(seed: int = 0, d: int = 3, width: int = 4, k: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, k)).to(DT)


@pytest.fixture
def tiny_problem():
    X, y = _blobs(23, 3, 3, seed=6)
    Xt, yt = _blobs(9, 3, 3, seed=7)
    return _tiny_mlp(), (X, y), (Xt, yt)


def test_scores_do_not_depend_on_chunk_size(tiny_problem):
    model, train, test = tiny_problem
    runs = [iw.influence(model, train, test, weight_decay=0.01, damping=1.0, chunk_size=c)
            for c in (1, 7, None)]
    for other in runs[1:]:
        assert rel_err(other, runs[0]) < 1e-10
    cg = [iw.influence(model, train, test, weight_decay=0.01, damping=1.0, solver="cg", chunk_size=c,
                       tol=1e-12) for c in (1, 7, None)]
    for other in cg:
        assert rel_err(other, runs[0]) < 1e-8


def test_batched_and_single_test_points_agree(tiny_problem):
    model, train, test = tiny_problem
    engine = InfluenceEngine(model, train, weight_decay=0.01)
    full = engine.scores(test, damping=1.0).values
    for t in (0, 4, 8):
        one = engine.scores(test, damping=1.0, test_indices=[t]).values
        assert one.shape == (1, 23)
        assert rel_err(one[0], full[t]) < 1e-12
    some = engine.scores(test, damping=1.0, test_indices=[8, 2]).values
    assert rel_err(some, full[[8, 2]]) < 1e-12


@pytest.mark.parametrize("mode", ["fwd", "graph", "graph_loop", "auto"])
def test_hvp_modes_agree(tiny_problem, mode):
    model, (X, y), _ = tiny_problem
    ref = Objective(model, X, y, weight_decay=0.01, hvp_mode="rev")
    other = Objective(model, X, y, weight_decay=0.01, hvp_mode=mode)
    V = torch.randn(5, ref.p, dtype=DT, generator=torch.Generator().manual_seed(0))
    assert rel_err(other.hvp(V), ref.hvp(V)) < 1e-12
    assert rel_err(other.hvp(V[1]), ref.hvp(V[1])) < 1e-12
    assert rel_err(other.hessian(), ref.hessian()) < 1e-12


def test_per_sample_grads_match_torch_func(tiny_problem):
    model, (X, y), _ = tiny_problem
    obj = Objective(model, X, y)
    ref = vmap(grad(obj._sample_loss), in_dims=(None, 0, 0))(obj.theta, X, y)
    assert rel_err(obj.per_sample_grads(X, y), ref) < 1e-12
    assert rel_err(obj.per_sample_grads(X, y, chunk_size=5), ref) < 1e-12


# ----------------------------------------------------------------------------- parameter subsets


def test_last_layer_equals_exact_restricted_computation(tiny_problem):
    model, (X, y), (Xt, yt) = tiny_problem
    lam = 0.01
    est = iw.influence(model, (X, y), (Xt, yt), weight_decay=lam, params="last_layer")
    last = {k: v.detach() for k, v in model.named_parameters() if k.startswith("2.")}
    rest = {k: v.detach() for k, v in model.named_parameters() if not k.startswith("2.")}
    shapes = {k: v.shape for k, v in last.items()}
    flat = torch.cat([last["2.weight"].flatten(), last["2.bias"]])
    nw = last["2.weight"].numel()

    def loss(theta, X, y):
        params = {**rest, "2.weight": theta[:nw].view(shapes["2.weight"]), "2.bias": theta[nw:]}
        out = functional_call(model, params, (X,))
        return torch.nn.functional.cross_entropy(out, y, reduction="sum") / X.shape[0]

    H = hessian(loss)(flat, X, y) + lam * torch.eye(flat.numel(), dtype=DT)
    one = lambda t, x, yy: loss(t, x[None], yy[None])  # noqa: E731
    G = vmap(grad(one), in_dims=(None, 0, 0))(flat, X, y)
    Gt = vmap(grad(one), in_dims=(None, 0, 0))(flat, Xt, yt)
    expected = Gt @ torch.linalg.solve(H, G.T) / X.shape[0]
    assert rel_err(est, expected) < 1e-8
    res = iw.influence(model, (X, y), (Xt, yt), weight_decay=lam, params="last_layer", return_result=True)
    assert res.params == "last_layer" and res.diagnostics["n_params"] == flat.numel()


# ----------------------------------------------------------------------------- exact-solver reuse


@pytest.mark.parametrize("method", ["eigh", "cholesky"])
def test_new_damping_reuses_the_exact_hessian(tiny_problem, method):
    model, train, test = tiny_problem
    engine = InfluenceEngine(model, train, weight_decay=0.01)
    obj = engine.objective
    engine.scores(test, damping=1.0, method=method)
    calls, fits = obj.hvp_calls, engine.fits
    assert fits == 1 and calls > 0
    H = obj.hessian()
    obj.hvp_calls = calls
    b = 1.6
    s = engine.solver("exact", method=method)
    assert obj.hvp_calls == calls and engine.fits == fits
    V = torch.randn(4, obj.p, dtype=DT, generator=torch.Generator().manual_seed(2))
    expected = torch.linalg.solve(H + b * torch.eye(obj.p, dtype=DT), V.T).T
    assert rel_err(s.inverse_hvp(V, damping=b), expected) < 1e-8
    res = engine.scores(test, damping=b, method=method)
    assert obj.hvp_calls == calls and engine.fits == fits
    G = obj.per_sample_grads(*train)
    Gt = obj.per_sample_grads(*test)
    assert rel_err(res.values, Gt @ torch.linalg.solve(H + b * torch.eye(obj.p, dtype=DT), G.T) / 23) < 1e-8


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_cuda_and_cpu_scores_agree(tiny_problem):
    model, train, test = tiny_problem
    cpu = iw.influence(model, train, test, weight_decay=0.01, damping=1.0, device="cpu")
    for solver, opts in (("exact", {}), ("cg", {"tol": 1e-12})):
        gpu = iw.influence(model, train, test, weight_decay=0.01, damping=1.0, device="cuda",
                           solver=solver, **opts)
        assert gpu.device.type == "cuda"
        assert rel_err(gpu.cpu(), cpu) < 1e-8, solver
