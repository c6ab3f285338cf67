"""Indefinite curvature and bad inputs: each a warning or an error that says what to do."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import clustered, small_mlp
from torch import nn

import influence_widgets as iw
from influence_widgets.influence import (
    DivergenceError,
    HessianTooLargeError,
    InfluenceEngine,
    NegativeCurvatureError,
    Objective,
    make_solver,
)

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n: int = 20, d: int = 3, k: int = 3, seed: int = 0):
    return clustered(n, d, k, seed)


def _mlp(seed: int = 0, d: int = 3, width: int = 4, k: int = 3) -> nn.Module:
    return small_mlp(seed, d, width, k)


@pytest.fixture
def indefinite():
    """An MLP at its random initialisation (not a minimum): H has negative eigenvalues."""
    X, y = _data()
    model = _mlp()
    obj = Objective(model, X, y)
    evals, evecs = torch.linalg.eigh(obj.hessian())
    assert float(evals[0]) < -0.05
    return model, (X, y), _data(n=5, seed=1), obj, evals, evecs


# ----------------------------------------------------------------------------- indefinite curvature


@pytest.mark.parametrize("method", ["eigh", "cholesky"])
def test_influence_warns_with_the_most_negative_eigenvalue(indefinite, method):
    model, train, test, _, evals, _ = indefinite
    with pytest.warns(RuntimeWarning, match="indefinite") as rec:
        res = iw.influence(model, train, test, method=method, return_result=True)
    msg = str(rec[0].message)
    assert f"{float(evals[0]):.4g}" in msg
    assert "damping" in msg and "ggn" in msg
    assert res.diagnostics["min_eigenvalue"] == pytest.approx(float(evals[0]), rel=1e-8)
    # enough damping: no warning about the curvature (this random model is also far from a
    # stationary point, which iw.influence says in a warning of its own)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        warnings.filterwarnings("ignore", message=".*far from a stationary point",
                                category=RuntimeWarning)
        iw.influence(model, train, test, damping=-float(evals[0]) + 0.1, method=method)


def test_cg_raises_on_negative_curvature(indefinite):
    _, _, _, obj, evals, evecs = indefinite
    for block, V in ((False, evecs[:, 0]), (True, torch.eye(obj.p, dtype=DT))):
        with pytest.raises(NegativeCurvatureError, match="negative curvature") as err:
            make_solver("cg", block=block).fit(obj).inverse_hvp(V)
        msg = str(err.value)
        assert "damping" in msg and "curvature='ggn'" in msg
    # the same through the public function
    model, train, test, *_ = indefinite
    with pytest.raises(NegativeCurvatureError):
        iw.influence(model, train, test, solver="cg")
    # damping past the most negative eigenvalue makes CG work
    iw.influence(model, train, test, solver="cg", damping=-float(evals[0]) + 0.1)


def test_lissa_diverges_with_a_clear_error_when_h_is_indefinite(indefinite):
    _, _, _, obj, _, evecs = indefinite
    with pytest.raises(DivergenceError, match="LiSSA diverged") as err:
        make_solver("lissa", steps=3000).fit(obj).inverse_hvp(evecs[:, 0])
    assert "damping" in str(err.value) and "scale" in str(err.value)


# ----------------------------------------------------------------------------- bad inputs


@pytest.fixture
def problem():
    X, y = _data()
    return _mlp(), (X, y), _data(n=5, seed=1)


def test_test_index_out_of_range(problem):
    model, train, test = problem
    with pytest.raises(IndexError, match=r"test index 5 is out of range.*5 points.*0\.\.4"):
        iw.influence(model, train, test, damping=2.0, test_indices=[0, 5])
    with pytest.raises(IndexError, match="out of range"):
        iw.influence(model, train, test, damping=2.0, test_indices=[-1])
    with pytest.raises(ValueError, match="empty"):
        iw.influence(model, train, test, damping=2.0, test_indices=[])


def test_input_shape_mismatch(problem):
    model, (X, y), (Xt, yt) = problem
    with pytest.raises(ValueError, match="shape"):
        iw.influence(model, (X[:, :2], y), (Xt, yt))
    with pytest.raises(ValueError, match=r"test inputs have shape \(2,\).*training inputs have \(3,\)"):
        iw.influence(model, (X, y), (Xt[:, :2], yt), damping=2.0)


def test_nan_in_an_input_row_names_the_row(problem):
    model, (X, y), test = problem
    X = X.clone()
    X[7, 1] = float("nan")
    with pytest.raises(FloatingPointError, match=r"rows \[7\].*NaN"):
        iw.influence(model, (X, y), test, damping=2.0)


def test_lissa_divergence_with_a_tiny_scale(problem):
    model, train, test = problem
    with pytest.raises(DivergenceError, match=r"scale 1e-05.*increase scale"):
        iw.influence(model, train, test, solver="lissa", damping=2.0, scale=1e-5, steps=100)


def test_too_large_exact_hessian(problem):
    model, train, test = problem
    with pytest.raises(HessianTooLargeError) as err:
        iw.influence(model, train, test, max_bytes=1000)
    msg = str(err.value)
    p = sum(q.numel() for q in model.parameters())
    assert f"{3 * p * p * 8:,} bytes" in msg and "1,000 bytes" in msg
    for hint in ("'cg'", "'lissa'", "'arnoldi'", "last_layer"):
        assert hint in msg
    assert isinstance(err.value, MemoryError)
    # the limit is not hit with a larger budget
    make_solver("exact", max_bytes=10**6).fit(Objective(model, *train))


def test_unknown_solver_name_and_option(problem):
    model, train, test = problem
    with pytest.raises(ValueError, match="unknown solver 'newton'; valid names: exact, cg, lissa, arnoldi"):
        iw.influence(model, train, test, solver="newton")
    with pytest.raises(TypeError, match=r"solver 'cg' has no option 'steps'; its options are: tol, max_iter"):
        iw.influence(model, train, test, solver="cg", steps=3)
    with pytest.raises(ValueError, match="ExactSettings.method must be one of 'auto', 'eigh', 'cholesky'"):
        iw.influence(model, train, test, method="qr")
    with pytest.raises(ValueError, match="hvp_mode"):
        InfluenceEngine(model, train, hvp_mode="sideways")
    with pytest.raises(ValueError, match="curvature"):
        iw.influence(model, train, test, curvature="fisher")
    with pytest.raises(ValueError, match="damping"):
        iw.influence(model, train, test, damping=-1.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_asked_for_without_cuda(problem):
    model, train, test = problem
    with pytest.raises(RuntimeError, match=r"CUDA is not available.*device='cpu'"):
        iw.influence(model, train, test, device="cuda")


def test_exact_solver_on_a_singular_hessian_gives_the_pseudo_inverse_not_an_error():
    """Issue 22: a degenerate model (here: H exactly singular, no damping) made the Cholesky
    path's LU fallback raise a raw division-by-zero error; it now answers like the eigh path."""
    from influence_widgets.influence.solvers import ExactSettings, ExactSolver

    class Flat:  # a 3-parameter objective with H = diag(2, 1, 0)
        p, dtype, device = 3, torch.float64, torch.device("cpu")

        def hessian(self, progress=None):
            return torch.diag(torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64))

    s = ExactSolver(ExactSettings(method="cholesky")).fit(Flat())
    x = s.solve(torch.tensor([[2.0, 1.0, 5.0]], dtype=torch.float64), damping=0.0)
    torch.testing.assert_close(x.X, torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64))
    assert "singular" in x.diagnostics["factorization"]
