"""Leave-one-out retraining against problems whose LOO is known exactly, and its invariances."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, hessian

from influence_widgets import models
from influence_widgets.ground_truth import (
    SweepOptions,
    all_points,
    group_estimate,
    leave_group_out,
    leave_one_out,
    pick_test_points,
    random_k,
    retraining_noise,
    top_k,
)
from influence_widgets.ground_truth.problem import prepare
from influence_widgets.ground_truth.retrain import Job, run_chunk
from influence_widgets.models.losses import per_sample_loss
from influence_widgets.models.training import TrainConfig

LAM = 0.1
WD = 0.01


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INFLUENCE_WIDGETS_CACHE", str(tmp_path))


def exact_config(**kw) -> TrainConfig:
    base = dict(optimizer="lbfgs", lr=1.0, steps=500, dtype="float64", grad_tol=1e-10, device="cpu")
    return TrainConfig(**{**base, **kw})


def adam_config(**kw) -> TrainConfig:
    base = dict(optimizer="adam", lr=0.01, steps=60, dtype="float64", weight_decay=WD, device="cpu")
    return TrainConfig(**{**base, **kw})


def blobs(n: int, d: int = 4, k: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    centers = torch.randn(k, d, generator=g, dtype=torch.float64) * 1.5
    return centers[y] + torch.randn(n, d, generator=g, dtype=torch.float64), y


@pytest.fixture(scope="module")
def ridge():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(30, 5, generator=g, dtype=torch.float64)
    y = X @ torch.randn(5, generator=g, dtype=torch.float64) + 0.3 * torch.randn(30, generator=g,
                                                                               dtype=torch.float64)
    Xt = torch.randn(8, 5, generator=g, dtype=torch.float64)
    yt = Xt @ torch.ones(5, dtype=torch.float64)
    cfg = exact_config(loss="mse", weight_decay=LAM)
    torch.manual_seed(0)
    tm = models.train(nn.Linear(5, 1, bias=False).double(), (X, y), cfg)
    return tm, (X, y), (Xt, yt), cfg


def ridge_solution(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    m, d = X.shape
    return torch.linalg.solve(X.T @ X / m + LAM * torch.eye(d, dtype=X.dtype), X.T @ y / m)


def mse_losses(theta: torch.Tensor, Xt: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
    return 0.5 * (Xt @ theta - yt) ** 2


def test_ridge_scratch_matches_closed_form(ridge):
    tm, (X, y), (Xt, yt), cfg = ridge
    idx = [0, 3, 17, 29]
    res = leave_one_out(tm, (X, y), (Xt, yt), idx, config=cfg, mode="scratch",
                        subtract_control=False, store=None, return_result=True)
    full = mse_losses(ridge_solution(X, y), Xt, yt)
    keep = lambda i: torch.arange(30) != i  # noqa: E731
    exact = torch.stack([mse_losses(ridge_solution(X[keep(i)], y[keep(i)]), Xt, yt) - full
                         for i in idx], dim=1)
    assert res.values.shape == (8, 4) and res.values.dtype == torch.float64
    torch.testing.assert_close(res.values, exact, rtol=1e-6, atol=1e-6 * exact.abs().max().item())
    assert res.mode == "scratch" and not res.control_subtracted and res.reference == "trained model"
    assert res.converged.all() and res.dtype == "float64"


def test_ridge_warm_start_converges_to_same_answer(ridge):
    tm, train, test, cfg = ridge
    scratch = leave_one_out(tm, train, test, [2, 5], config=cfg, mode="scratch", store=None)
    warm = leave_one_out(tm, train, test, [2, 5], config=cfg, mode="warm_start", store=None)
    torch.testing.assert_close(warm, scratch, rtol=1e-6, atol=1e-6 * scratch.abs().max().item())


def test_ridge_groups_match_closed_form_and_group_estimate_sums(ridge):
    tm, (X, y), (Xt, yt), cfg = ridge
    groups = [[1, 4, 9], [20]]
    vals = leave_group_out(tm, (X, y), (Xt, yt), groups, config=cfg, mode="scratch",
                           subtract_control=False, store=None)
    full = mse_losses(ridge_solution(X, y), Xt, yt)
    cols = []
    for g in groups:
        keep = torch.ones(30, dtype=torch.bool)
        keep[g] = False
        cols.append(mse_losses(ridge_solution(X[keep], y[keep]), Xt, yt) - full)
    exact = torch.stack(cols, dim=1)
    torch.testing.assert_close(vals, exact, rtol=1e-6, atol=1e-6 * exact.abs().max().item())
    est = torch.arange(30, dtype=torch.float64).expand(2, 30)
    torch.testing.assert_close(group_estimate(est, groups),
                               torch.tensor([[14.0, 20.0], [14.0, 20.0]], dtype=torch.float64))
    assert group_estimate(est[0], groups).tolist() == [14.0, 20.0]


def test_pbrf_linear_mse_matches_closed_form(ridge):
    """For a linear model with mse the PBRF objective is quadratic: solve it directly."""
    tm, (X, y), (Xt, yt), cfg = ridge
    damping = 0.05
    res = leave_one_out(tm, (X, y), (Xt, yt), [0, 11], config=cfg, mode="pbrf",
                        pbrf_damping=damping, store=None, return_result=True)
    theta_s = tm.model.weight.detach()[0]
    n = X.shape[0]
    G = X.T @ X / n + (damping + LAM) * torch.eye(5, dtype=torch.float64)
    cols = []
    for i in (0, 11):
        A = G - torch.outer(X[i], X[i]) / n
        delta = torch.linalg.solve(A, X[i] * (X[i] @ theta_s - y[i]) / n)
        cols.append(mse_losses(theta_s + delta, Xt, yt) - mse_losses(theta_s, Xt, yt))
    exact = torch.stack(cols, dim=1)
    torch.testing.assert_close(res.values, exact, rtol=1e-6, atol=1e-6 * exact.abs().max().item())
    assert res.mode == "pbrf" and not res.control_subtracted and res.pbrf_damping == damping


# ----------------------------------------------------------------------------- logistic regression


@pytest.fixture(scope="module")
def logistic():
    X, y = blobs(40, seed=2)
    Xt, yt = blobs(6, seed=3)
    cfg = exact_config(weight_decay=WD, grad_tol=1e-12, steps=1000)
    tm = models.train(models.mlp_spec((4,), 3, depth=0), (X, y), cfg)
    return tm, (X, y), (Xt, yt), cfg


def flat_params(module: nn.Module):
    """The module's parameters as one flat vector, and the function that splits one back."""
    named = {k: p.detach() for k, p in module.named_parameters()}
    sizes = [v.numel() for v in named.values()]

    def unflat(t: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v.reshape(ref.shape)
                for (k, ref), v in zip(named.items(), t.split(sizes), strict=True)}

    return torch.cat([v.flatten() for v in named.values()]), unflat


def newton(objective, theta: torch.Tensor, iters: int = 30) -> torch.Tensor:
    for _ in range(iters):
        step = torch.linalg.solve(hessian(objective)(theta), grad(objective)(theta))
        theta = theta - step
        if step.abs().max() < 1e-15:
            break
    return theta


def newton_params(tm, X, y, keep) -> dict[str, torch.Tensor]:
    """Minimise mean CE over the kept points + WD/2 ||theta||^2 by Newton's method."""
    theta, unflat = flat_params(tm.model)

    def objective(t):
        out = functional_call(tm.model, unflat(t), (X[keep],))
        return per_sample_loss(out, y[keep]).mean() + 0.5 * WD * (t**2).sum()

    return unflat(newton(objective, theta))


def ce_losses(module, params, Xt, yt):
    return per_sample_loss(functional_call(module, params, (Xt,)), yt)


def test_logistic_scratch_matches_newton(logistic):
    tm, (X, y), (Xt, yt), cfg = logistic
    idx = [0, 7, 21, 39]
    vals = leave_one_out(tm, (X, y), (Xt, yt), idx, config=cfg, mode="scratch",
                         subtract_control=False, store=None)
    full = ce_losses(tm.model, newton_params(tm, X, y, torch.ones(40, dtype=torch.bool)), Xt, yt)
    cols = []
    for i in idx:
        keep = torch.arange(40) != i
        cols.append(ce_losses(tm.model, newton_params(tm, X, y, keep), Xt, yt) - full)
    exact = torch.stack(cols, dim=1).detach()
    torch.testing.assert_close(vals, exact, rtol=1e-6, atol=1e-6 * exact.abs().max().item())


def test_pbrf_cross_entropy_matches_newton_on_the_defining_objective(logistic):
    """PBRF of logistic regression vs Newton on the Bregman divergence written from its
    definition, D(f, f_s) = L(f) - L(f_s) - dL(f_s)^T (f - f_s) (the y-terms cancel)."""
    tm, (X, y), (Xt, yt), cfg = logistic
    damping, n = 0.02, 40
    module = tm.model
    flat_s, unflat = flat_params(module)
    theta_s = unflat(flat_s)
    f_s = functional_call(module, theta_s, (X,))
    lse_s, p_s = torch.logsumexp(f_s, -1), torch.softmax(f_s, -1)

    def pbrf_params(i):
        def objective(t):
            f = functional_call(module, unflat(t), (X,))
            breg = torch.logsumexp(f, -1) - lse_s - (p_s * (f - f_s)).sum(-1)
            removed = per_sample_loss(f[i : i + 1], y[i : i + 1])[0]
            prox = 0.5 * (damping + WD) * ((t - flat_s) ** 2).sum()
            return breg.mean() - removed / n + prox

        return unflat(newton(objective, flat_s.clone()))

    idx = [0, 13]
    vals = leave_one_out(tm, (X, y), (Xt, yt), idx, config=cfg, mode="pbrf", pbrf_damping=damping,
                         store=None)
    base = ce_losses(module, theta_s, Xt, yt)
    exact = torch.stack([ce_losses(module, pbrf_params(i), Xt, yt) - base for i in idx], 1).detach()
    torch.testing.assert_close(vals, exact, rtol=1e-6, atol=1e-6 * exact.abs().max().item())


def test_warm_start_adam_signs_match_first_order_estimate(logistic):
    """Converged logistic regression: Adam warm-start LOO (control subtracted) has the sign of
    (1/n) g_t^T H^-1 g_i for the points with the largest estimates."""
    tm, (X, y), (Xt, yt), _ = logistic
    module, n = tm.model, 40
    theta, unflat = flat_params(module)

    def loss_at(t, x, label):
        return per_sample_loss(functional_call(module, unflat(t), (x[None],)), label[None])[0]

    def objective(t):
        return per_sample_loss(functional_call(module, unflat(t), (X,)), y).mean() + 0.5 * WD * (
            t**2).sum()

    H = hessian(objective)(theta)
    g_train = torch.stack([grad(loss_at)(theta, X[i], y[i]) for i in range(n)])
    g_test = grad(loss_at)(theta, Xt[0], yt[0])
    est = (g_train @ torch.linalg.solve(H, g_test)) / n
    idx = top_k(est, k=6)
    cfg = adam_config(lr=2e-3, steps=400)
    res = leave_one_out(tm, (X, y), (Xt[:1], yt[:1]), idx, config=cfg, store=None,
                        return_result=True)
    assert res.control_subtracted and res.mode == "warm_start"
    assert (torch.sign(res.values[0]) == torch.sign(est[idx])).all()


# ----------------------------------------------------------------------------- invariances


@pytest.fixture(scope="module")
def small_mlp():
    X, y = blobs(24, seed=4)
    Xt, yt = blobs(5, seed=5)
    tm = models.train(models.mlp_spec((4,), 3, depth=1, width=4), (X, y), adam_config(steps=200))
    return tm, (X, y), (Xt, yt)


@pytest.mark.parametrize("batch_size", [None, 8])
def test_batched_equals_sequential(small_mlp, batch_size):
    tm, train, test = small_mlp
    cfg = adam_config(batch_size=batch_size)
    idx = [0, 3, 5, 11, 23]
    seq = leave_one_out(tm, train, test, idx, config=cfg, batch_width=1, store=None,
                        return_result=True)
    bat = leave_one_out(tm, train, test, idx, config=cfg, batch_width="auto", store=None,
                        return_result=True)
    three = leave_one_out(tm, train, test, idx, config=cfg, batch_width=3, store=None)
    assert seq.batch_width == 1 and bat.batch_width == 6  # 5 removals + the control
    torch.testing.assert_close(bat.values, seq.values, rtol=0, atol=1e-10)
    torch.testing.assert_close(three, seq.values, rtol=0, atol=1e-10)
    torch.testing.assert_close(bat.grad_norms, seq.grad_norms, rtol=1e-6, atol=1e-12)


def test_last_layer_retrain_leaves_other_tensors_bit_identical(small_mlp):
    tm, train, test = small_mlp
    before = {k: v.clone() for k, v in tm.model.state_dict().items()}
    problem = prepare(tm, train, test, config=adam_config(), mode="warm_start",
                      params="last_layer", dtype="float64", subtract_control=True,
                      pbrf_damping=0.0)
    assert problem.names == ["3.weight", "3.bias"]
    jobs = [Job("control"), Job("1", (1,)), Job("4", (4,))]
    out = run_chunk(problem.task(jobs, portable=True, keep_params=True))
    trained = {k: v.double() for k, v in before.items()}
    for k, v in out["params"].items():
        for c in range(3):
            if k in problem.names:
                assert not torch.equal(v[c], trained[k])
            else:
                assert torch.equal(v[c], trained[k]), k
    # the public function gives the same numbers, and the user's model is untouched
    vals = leave_one_out(tm, train, test, [1, 4], config=adam_config(), params="last_layer",
                         store=None)
    torch.testing.assert_close(vals, (out["losses"][1:] - out["losses"][0]).T, rtol=0, atol=0)
    for k, v in tm.model.state_dict().items():
        assert torch.equal(v, before[k])


def test_scratch_replays_the_training_run(small_mlp):
    """Scratch mode reuses the initial parameters, seed and mini-batch order: the control
    retrain (nothing removed) reproduces the trained model."""
    _, train, test = small_mlp
    cfg = adam_config(batch_size=8, steps=50, seed=3)
    tm = models.train(models.mlp_spec((4,), 3, depth=1, width=4), train, cfg)
    res = leave_one_out(tm, train, test, [0], mode="scratch", store=None, return_result=True)
    X, y = test
    trained = per_sample_loss(tm.model(X).detach(), y)
    torch.testing.assert_close(res.reference_losses, trained, rtol=0, atol=1e-10)
    other_seed = leave_one_out(tm, train, test, [0], config=cfg.replace(seed=4), mode="scratch",
                               store=None, return_result=True)
    assert (other_seed.reference_losses - trained).abs().max() > 1e-6
    assert res.steps == 50 and res.info["config"]["batch_size"] == 8


def test_duplicates_and_tensor_indices(small_mlp):
    tm, train, test = small_mlp
    res = leave_one_out(tm, train, test, torch.tensor([3, 3, 1]), config=adam_config(),
                        store=None, return_result=True)
    assert res.values.shape == (5, 3) and res.n_retrains_computed == 3  # control + 2 unique
    torch.testing.assert_close(res.values[:, 0], res.values[:, 1], rtol=0, atol=0)


def test_noise_floor_is_real_retraining_randomness_by_default(small_mlp):
    tm, train, test = small_mlp
    real = retraining_noise(tm, train, test, config=adam_config(), n_seeds=3, store=None,
                            return_result=True)
    assert real.values.shape == (5, 3) and real.std.shape == (5,)
    assert real.mode == "scratch" and real.kind == "retraining" and real.is_real
    assert "initialisation" in real.how and real.perturb == 0.0
    assert (real.values.abs() > 1e-6).any() and "noise-perturbation-only" not in [
        f.code for f in real.findings]
    order = retraining_noise(tm, train, test, config=adam_config(batch_size=8), n_seeds=2,
                             new_init=False, store=None, return_result=True)
    assert order.how == "mini-batch order" and order.kind == "retraining"
    assert (order.values.abs() > 0).any()


def test_perturbation_floor_is_labelled_and_never_real(small_mlp):
    tm, train, test = small_mlp
    nudged = retraining_noise(tm, train, test, config=adam_config(), n_seeds=3, mode="warm_start",
                              store=None, return_result=True)
    assert "perturbed" in nudged.how and nudged.perturb == 1e-3
    assert nudged.kind == "perturbation" and not nudged.is_real
    assert "perturbation only" in nudged.describe()
    assert "noise-perturbation-only" in [f.code for f in nudged.findings]
    assert (nudged.values.abs() > 0).all() and (nudged.std > 0).all()
    off = retraining_noise(tm, train, test, config=adam_config(), n_seeds=2, perturb=0,
                           mode="warm_start", store=None, return_result=True)
    assert "deterministic" in off.how and torch.equal(off.values, torch.zeros(5, 2).double())
    mb = retraining_noise(tm, train, test, config=adam_config(batch_size=8), n_seeds=2,
                          mode="warm_start", store=None, return_result=True)
    assert mb.how == "mini-batch order" and (mb.values.abs() > 0).any()


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_give_clear_errors(small_mlp):
    tm, train, test = small_mlp
    cfg = adam_config()
    with pytest.raises(IndexError, match=r"valid indices are 0\.\.23"):
        leave_one_out(tm, train, test, [24], config=cfg, store=None)
    with pytest.raises(IndexError, match="out of range"):
        leave_one_out(tm, train, test, [-1], config=cfg, store=None)
    with pytest.raises(ValueError, match="no training indices"):
        leave_one_out(tm, train, test, [], config=cfg, store=None)
    with pytest.raises(ValueError, match="unknown mode"):
        leave_one_out(tm, train, test, [0], config=cfg, mode="hot", store=None)
    with pytest.raises(ValueError, match="batch_width"):
        leave_one_out(tm, train, test, [0], config=cfg, batch_width=0, store=None)
    with pytest.raises(ValueError, match="TrainedModel returned by iw.train"):
        leave_one_out(tm.model, train, test, [0], config=cfg, mode="scratch", store=None)
    with pytest.raises(TypeError, match="config=TrainConfig"):
        leave_one_out(tm.model, train, test, [0], store=None)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        leave_one_out(tm, train, test, [0], config=adam_config(lr=1e200, optimizer="sgd"),
                      store=None)
    with pytest.raises(ValueError, match="removes all"):
        leave_group_out(tm, train, test, [list(range(24))], config=cfg, store=None)


def test_plain_module_warm_start_and_auto_dtype(small_mlp):
    tm, train, test = small_mlp
    module = tm.model.float()  # a float32 plain module: auto dtype still runs in float64
    try:
        res = leave_one_out(module, train, test, [0], config=adam_config(dtype="float32"),
                            store=None, return_result=True)
    finally:
        tm.model.double()
    assert res.dtype == "float64" and res.values.dtype == torch.float64
    res32 = leave_one_out(tm, train, test, [0], config=adam_config(), dtype="float32",
                          store=None, return_result=True)
    assert res32.dtype == "float32" and res32.values.dtype == torch.float32
    torch.testing.assert_close(res32.values.double(), res.values, rtol=1e-2, atol=1e-5)


def test_sweep_options_validate_and_keywords_override_them(small_mlp):
    tm, train, test = small_mlp
    cfg = adam_config(steps=20)
    with pytest.raises(TypeError, match=r"'batchwidth'.*batch_width, n_workers, executor, store"):
        leave_one_out(tm, train, test, [0], config=cfg, batchwidth=2)
    with pytest.raises(TypeError, match="retraining_noise.*'seeds'"):
        retraining_noise(tm, train, test, config=cfg, seeds=2)
    bad = [({"batch_width": 0}, "batch_width must be 'auto' or a positive integer"),
           ({"batch_width": "wide"}, "batch_width must be 'auto'"),
           ({"n_workers": 0}, "n_workers must be None .* or a positive integer"),
           ({"pbrf_damping": float("nan")}, "pbrf_damping must be a finite number >= 0"),
           ({"pbrf_damping": -1.0}, "pbrf_damping must be a finite number >= 0"),
           ({"dtype": "int8"}, "dtype must be 'auto', 'float32' or 'float64'")]
    for kw, message in bad:
        with pytest.raises(ValueError, match=message):
            SweepOptions(**kw)
        with pytest.raises(ValueError, match=message):
            leave_one_out(tm, train, test, [0], config=cfg, **kw)
    for kw in ({"store": 3}, {"executor": object()}, {"progress": 1}, {"subtract_control": "no"}):
        with pytest.raises(TypeError, match=next(iter(kw))):
            SweepOptions(**kw)
    with pytest.raises(TypeError, match="must be a SweepOptions"):
        leave_one_out(tm, train, test, [0], config=cfg, options={"store": None})
    with pytest.raises(ValueError, match="always compares with the control"):
        retraining_noise(tm, train, test, config=cfg, subtract_control=False, store=None)
    assert all(f.metadata.get("help") for f in dataclasses.fields(SweepOptions))

    options = SweepOptions(store=None, batch_width=1)
    res = leave_one_out(tm, train, test, [0, 5], config=cfg, options=options, batch_width=2,
                        return_result=True)
    assert res.batch_width == 2 and options.batch_width == 1  # the keyword wins, options kept
    plain = leave_one_out(tm, train, test, [0, 5], config=cfg, store=None, batch_width=2)
    assert torch.equal(res.values, plain)
    groups = leave_group_out(tm, train, test, [[0], [5]], config=cfg, options=options)
    torch.testing.assert_close(groups, plain, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- selection


def test_selection_helpers():
    est = torch.tensor([0.1, -5.0, 3.0, 0.0, -0.2])
    assert top_k(est, k=2) == [1, 2]
    assert top_k(est.numpy(), k=5)[:3] == [1, 2, 4]
    assert all_points(3) == [0, 1, 2]
    r = random_k(10, 4, seed=1)
    assert r == random_k(10, 4, seed=1) and len(set(r)) == 4 and r == sorted(r)
    losses = torch.tensor([0.5, 3.0, 0.1, 2.0, 1.0])
    assert pick_test_points(losses, "highest", k=2) == [1, 3]
    assert pick_test_points(losses, "median") == [4]
    assert pick_test_points(losses, 2) == [2]
    assert len(pick_test_points(losses, "random", k=3, seed=0)) == 3
    with pytest.raises(ValueError, match=r"k=6 is larger than the number of training points \(5\)"):
        top_k(est, k=6)
    with pytest.raises(ValueError, match="empty"):
        top_k([], k=1)
    with pytest.raises(ValueError, match="1-D"):
        top_k(torch.zeros(2, 3), k=1)
    with pytest.raises(IndexError, match=r"valid indices are 0\.\.4"):
        pick_test_points(losses, 7)
    with pytest.raises(ValueError, match="unknown rule"):
        pick_test_points(losses, "lowest")
    with pytest.raises(ValueError, match="larger than"):
        random_k(3, 4)
