"""Scores stream the training set: memory grows with (n_test + chunk) x p, never n_train x p."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import clustered, rel_err, small_mlp
from torch import nn

import influence_widgets as iw
from influence_widgets.influence import InfluenceEngine

DT = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n: int, d: int = 3, k: int = 3, seed: int = 0):
    return clustered(n, d, k, seed)


def _mlp(seed: int = 0, d: int = 3, width: int = 4, k: int = 3) -> nn.Module:
    return small_mlp(seed, d, width, k)


def _tensors(obj, seen=None):
    """Every tensor reachable from ``obj``'s attributes (dicts, lists, tuples, solver objects)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v, seen)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _tensors(v, seen)
    elif hasattr(obj, "__dict__") and not isinstance(obj, nn.Module | type):
        yield from _tensors(vars(obj), seen)


def test_streamed_scores_equal_one_chunk():
    model, train, test = _mlp(), _data(37), _data(6, seed=1)
    one = InfluenceEngine(model, train, weight_decay=0.01)
    many = InfluenceEngine(model, train, weight_decay=0.01, chunk_size=4)
    assert one.objective.psg_chunk_size() == 37 and many.objective.psg_chunk_size() == 4
    for solver, opts in (("exact", {}), ("cg", {"tol": 1e-12})):
        a = one.scores(test, solver=solver, damping=1.0, **opts).values
        b = many.scores(test, solver=solver, damping=1.0, **opts).values
        assert rel_err(b, a) < 1e-12, solver
    # the streamed dot products themselves, against the whole matrix
    V = torch.randn(5, many.objective.p, dtype=DT, generator=torch.Generator().manual_seed(3))
    G = many.train_grads
    assert G.shape == (37, many.objective.p)
    assert rel_err(many._train_dots(V), V @ G.T / 37) < 1e-12
    assert many.grad_norm == pytest.approx(float(many.objective.gradient().norm()), rel=1e-12)


def test_engine_keeps_nothing_n_train_by_p():
    X, y = _data(90)
    model = _mlp()
    engine = InfluenceEngine(model, (X, y), weight_decay=0.01, chunk_size=8)
    obj = engine.objective
    for solver in ("exact", "cg", "lissa", "arnoldi"):
        opts = {"lissa": {"steps": 20}, "arnoldi": {"rank": 5}}.get(solver, {})
        res = engine.scores(_data(4, seed=1), solver=solver, damping=0.5, **opts)
        assert res.values.shape == (4, 90)
        big = [tuple(t.shape) for t in _tensors(engine) if t.numel() >= obj.n * obj.p]
        assert not big, f"{solver}: the engine holds {big} (n_train x p = {obj.n} x {obj.p})"


def test_one_chunk_training_set_is_kept_and_test_gradients_reused():
    engine = InfluenceEngine(_mlp(), _data(30), weight_decay=0.01)
    obj = engine.objective
    calls = []
    plain = obj.iter_per_sample_grads

    def counted(*a, **k):
        calls.append(k.get("what", ""))
        return plain(*a, **k)

    obj.iter_per_sample_grads = counted
    test = _data(5, seed=1)
    first = engine.scores(test, damping=0.5).values
    again = engine.scores(test, damping=1.0).values
    # one pass for the training rows (one chunk, kept) and the test rows together
    assert calls == [""]
    assert not torch.equal(first, again)
    engine.scores(test, damping=0.5, test_indices=[1, 3])
    assert calls == ["", ""]  # other rows: new test gradients, the same training ones
    Xt, yt = test
    engine.scores((Xt, yt), damping=0.5, test_indices=[1, 3])
    assert len(calls) == 2
    Xt[3, 0] += 1.0  # edited in place: the kept gradients are stale
    edited = engine.scores((Xt, yt), damping=0.5, test_indices=[1, 3]).values
    assert len(calls) == 3
    assert rel_err(edited, InfluenceEngine(_mlp(), _data(30), weight_decay=0.01).scores(
        (Xt[[1, 3]], yt[[1, 3]]), damping=0.5).values) < 1e-12


def test_progress_hears_of_each_training_chunk():
    seen = []
    res = InfluenceEngine(_mlp(), _data(23), weight_decay=0.01, chunk_size=5).scores(
        _data(4, seed=1), damping=1.0, progress=lambda i, n, info: seen.append((i, n, info)))
    assert res.values.shape == (4, 23)
    streamed = [(i, n) for i, n, info in seen if info.get("stage") == "training gradients"]
    assert streamed == [(5, 23), (10, 23), (15, 23), (20, 23), (23, 23)]


@pytest.mark.parametrize("where", ["training", "test"])
def test_nan_row_in_a_later_chunk_is_named(where):
    train, test = _data(23), _data(9, seed=1)
    (X, _), row = (train, 17) if where == "training" else (test, 6)
    X[row, 1] = float("nan")
    with pytest.raises(FloatingPointError, match=rf"{where} rows \[{row}\].*NaN"):
        iw.influence(_mlp(), train, test, damping=2.0, chunk_size=5)


# ----------------------------------------------------------------------------- peak memory

CHILD = """
import json, resource, sys, torch
from torch import nn
import influence_widgets as iw
torch.set_num_threads(1)
n = int(sys.argv[1])
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(20, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh(),
                      nn.Linear(200, 10)).double()
g = torch.Generator().manual_seed(0)
X, y = torch.randn(n, 20, generator=g, dtype=torch.float64), torch.randint(0, 10, (n,), generator=g)
test = (X[:5].clone(), y[:5].clone())
engine = iw.InfluenceEngine(model, (X, y), curvature="ggn", chunk_size=25)
setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
res = engine.scores(test, solver="cg", damping=0.1, max_iter=1)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with open("/proc/self/statm") as f:  # resident now (the peak above may be a passing one)
    now = int(f.read().split()[1]) * resource.getpagesize()
G = engine.train_grads  # then the n x p matrix the engine used to keep
held = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - now
print(json.dumps({"setup": setup, "peak": peak, "held": held, "p": engine.objective.p}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads ru_maxrss in KiB and /proc/self/statm")
def test_peak_memory_grows_with_the_chunk_not_with_n_train():
    """Tripling n_train (chunk fixed at 25 rows) leaves the peak where it was; holding the
    ``n_train x p`` gradients (what the engine did before streaming) shows up plainly."""
    runs = {"small": 400, "large": 1200}
    procs = {k: subprocess.Popen([sys.executable, "-c", CHILD, str(n)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for k, n in runs.items()}
    out = {}
    for k, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-2000:]
        out[k] = json.loads(stdout.strip().splitlines()[-1])
    p = out["small"]["p"]
    assert 40_000 < p < 60_000
    old_growth = (1200 - 400) * p * 8  # what the old path added going to 1200 rows (283 MiB)
    # the streamed scores add nothing that grows with n_train (one-time costs cancel)...
    growth = (out["large"]["peak"] - out["large"]["setup"]) - (out["small"]["peak"] - out["small"]["setup"])
    assert growth < 0.15 * old_growth, f"peak grew by {growth / 2**20:.1f} MiB when n_train tripled"
    # ...while the same measurement sees the whole matrix when it is held
    held = out["large"]["held"]
    whole = 1200 * p * 8
    assert held > 0.8 * whole, f"holding the {whole / 2**20:.0f} MiB matrix showed as {held / 2**20:.1f} MiB"
