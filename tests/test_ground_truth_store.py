"""The LOO store: resume after an interruption, never reuse other settings; executors."""

from __future__ import annotations

import dataclasses
import multiprocessing
import pickle
import sqlite3
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
import torch

from influence_widgets import models
from influence_widgets.ground_truth import LOOStore, leave_group_out, leave_one_out
from influence_widgets.ground_truth import retrain as retrain_module
from influence_widgets.ground_truth.problem import prepare
from influence_widgets.ground_truth.retrain import Job, RetrainTask, run_chunk
from influence_widgets.ground_truth.store import Record, open_store
from influence_widgets.models.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INFLUENCE_WIDGETS_CACHE", str(tmp_path / "cache"))


def config(**kw) -> TrainConfig:
    base = dict(optimizer="adam", lr=0.01, steps=40, dtype="float64", weight_decay=0.01,
                device="cpu")
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(20, 3, generator=g, dtype=torch.float64)
    y = (X[:, 0] > 0).long()
    Xt = torch.randn(4, 3, generator=g, dtype=torch.float64)
    yt = (Xt[:, 0] > 0).long()
    tm = models.train(models.mlp_spec((3,), 2, depth=1, width=3), (X, y), config(steps=100))
    return tm, (X, y), (Xt, yt)


class CountingFit:
    """Wraps fit_copies to count the copies it trains."""

    def __init__(self, monkeypatch):
        self.copies = 0
        self.inner = retrain_module.fit_copies
        monkeypatch.setattr(retrain_module, "fit_copies", self)

    def __call__(self, model, start, X, y, weights, *args, **kwargs):
        self.copies += weights.shape[0]
        return self.inner(model, start, X, y, weights, *args, **kwargs)


def test_store_round_trip_and_isolation(tmp_path):
    store = LOOStore(tmp_path / "s.sqlite")
    store.put("a", {"1": Record(torch.tensor([1.0, 2.0]), 1e-3, 0.5)})
    store.put("b", {"1": Record(torch.tensor([3.0]), 2e-3)})
    got = store.get("a", ["1", "2"])
    assert list(got) == ["1"] and got["1"].losses.tolist() == [1.0, 2.0]
    assert got["1"].grad_norm == 1e-3 and got["1"].objective == 0.5
    assert store.get("b", ["1"])["1"].losses.tolist() == [3.0]
    assert store.get("c", ["1"]) == {}
    assert store.count() == 2 and store.count("a") == 1 and sorted(store.settings()) == ["a", "b"]
    with sqlite3.connect(store.path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.clear("a") == 1 and store.count() == 1
    assert open_store(None) is None and open_store(store) is store
    assert open_store(str(tmp_path / "t.sqlite")).path.name == "t.sqlite"
    with pytest.raises(TypeError, match="store must be"):
        open_store(3)


def test_default_store_lives_in_cache_dir(problem, tmp_path):
    tm, train, test = problem
    leave_one_out(tm, train, test, [0, 1], config=config())
    store = LOOStore()
    assert store.path == tmp_path / "cache" / "loo.sqlite" and store.count() == 3
    (setting,) = store.settings()
    assert store.description(setting)["mode"] == "warm_start"


def test_interrupted_sweep_resumes_without_recomputing(problem, tmp_path, monkeypatch):
    tm, train, test = problem
    store = LOOStore(tmp_path / "loo.sqlite")
    counter = CountingFit(monkeypatch)
    idx = list(range(10))

    def stop_after_first_chunk(done, total, info):
        if info["stage"] == "chunk":
            raise KeyboardInterrupt("user pressed stop")

    with pytest.raises(KeyboardInterrupt):
        leave_one_out(tm, train, test, idx, config=config(), batch_width=4, store=store,
                      progress=stop_after_first_chunk)
    assert counter.copies == 4 and store.count() == 4  # the control and points 0, 1, 2
    res = leave_one_out(tm, train, test, idx, config=config(), batch_width=4, store=store,
                        return_result=True)
    assert counter.copies == 4 + 7 and res.n_retrains_computed == 7
    assert res.n_retrains_loaded == 4
    fresh = leave_one_out(tm, train, test, idx, config=config(), batch_width=4, store=None)
    torch.testing.assert_close(res.values, fresh, rtol=0, atol=0)
    again = leave_one_out(tm, train, test, idx, config=config(), store=store, return_result=True)
    assert again.n_retrains_computed == 0 and torch.equal(again.values, res.values)


def test_should_stop_interrupts_and_says_how_to_resume(problem, tmp_path, monkeypatch):
    tm, train, test = problem
    store = LOOStore(tmp_path / "loo.sqlite")
    counter = CountingFit(monkeypatch)
    chunks = []

    with pytest.raises(InterruptedError, match="call again with the same arguments to resume"):
        leave_one_out(tm, train, test, range(6), config=config(), batch_width=3, store=store,
                      progress=lambda d, t, i: chunks.append(i["stage"]),
                      should_stop=lambda: "chunk" in chunks)
    assert store.count() == 3 and counter.copies == 3  # stopped before the second chunk
    res = leave_one_out(tm, train, test, range(6), config=config(), batch_width=3, store=store,
                        return_result=True)
    assert res.n_retrains_computed == 4 and counter.copies == 3 + 4


@pytest.mark.parametrize("change", [
    {"config": config(steps=41)},
    {"config": config(lr=0.02)},
    {"mode": "scratch"},
    {"params": "last_layer"},
    {"subtract_control": False},
    {"dtype": "float32"},
    {"mode": "pbrf"},
])
def test_changed_setting_recomputes(problem, tmp_path, change):
    tm, train, test = problem
    store = LOOStore(tmp_path / "loo.sqlite")
    kw = {"config": config(), "store": store, "return_result": True}
    first = leave_one_out(tm, train, test, [0, 1], **kw)
    assert first.n_retrains_computed == 3
    other = leave_one_out(tm, train, test, [0, 1], **{**kw, **change})
    assert other.n_retrains_loaded == 0 and other.setting != first.setting


def test_changed_data_or_damping_recomputes(problem, tmp_path):
    tm, (X, y), (Xt, yt) = problem
    store = LOOStore(tmp_path / "loo.sqlite")
    kw = {"config": config(), "store": store, "return_result": True}
    base = leave_one_out(tm, (X, y), (Xt, yt), [0], **kw)
    assert leave_one_out(tm, (X, y), (Xt[:3], yt[:3]), [0], **kw).n_retrains_loaded == 0
    X2 = X.clone()
    X2[5, 0] += 1e-9
    assert leave_one_out(tm, (X2, y), (Xt, yt), [0], **kw).n_retrains_loaded == 0
    p1 = leave_one_out(tm, (X, y), (Xt, yt), [0], mode="pbrf", **kw)
    p2 = leave_one_out(tm, (X, y), (Xt, yt), [0], mode="pbrf", pbrf_damping=0.1, **kw)
    assert p1.n_retrains_computed == 1 and p2.n_retrains_computed == 1
    assert leave_one_out(tm, (X, y), (Xt, yt), [0], **kw).n_retrains_computed == 0
    assert base.n_retrains_computed == 2


def test_groups_and_noise_share_the_store(problem, tmp_path):
    tm, train, test = problem
    store = LOOStore(tmp_path / "loo.sqlite")
    g = leave_group_out(tm, train, test, [[3, 1], [2]], config=config(), store=store,
                        return_result=True)
    assert g.indices == [(1, 3), (2,)] and g.n_retrains_computed == 3
    single = leave_one_out(tm, train, test, [2], config=config(), store=store, return_result=True)
    assert single.n_retrains_computed == 0  # the group (2,) is the single point 2
    torch.testing.assert_close(single.values[:, 0], g.values[:, 1], rtol=0, atol=0)


def test_thread_pool_matches_in_process(problem):
    tm, train, test = problem
    idx = list(range(8))
    local = leave_one_out(tm, train, test, idx, config=config(), batch_width=3, store=None)
    with ThreadPoolExecutor(max_workers=2) as ex:
        pooled = leave_one_out(tm, train, test, idx, config=config(), batch_width=3,
                               executor=ex, store=None, return_result=True)
        auto = leave_one_out(tm, train, test, idx, config=config(), executor=ex, store=None,
                             n_workers=2, return_result=True)
        three = leave_one_out(tm, train, test, idx, config=config(), executor=ex, store=None,
                              n_workers=3, return_result=True)
    torch.testing.assert_close(pooled.values, local, rtol=0, atol=1e-12)
    assert pooled.n_retrains_computed == 9
    assert auto.batch_width == 5  # 9 retrains spread over the 2 workers
    assert three.batch_width == 3
    torch.testing.assert_close(auto.values, local, rtol=0, atol=1e-12)


def test_process_pool_matches_in_process(problem, tmp_path):
    tm, train, test = problem
    idx = [0, 4, 9]
    local = leave_one_out(tm, train, test, idx, config=config(), batch_width=2, store=None)
    store = LOOStore(tmp_path / "loo.sqlite")
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
        pooled = leave_one_out(tm, train, test, idx, config=config(), batch_width=2,
                               executor=ex, store=store)
    torch.testing.assert_close(pooled, local, rtol=0, atol=1e-12)
    assert store.count() == 4


def test_retrain_task_pickles_and_runs(problem):
    tm, train, test = problem
    prob = prepare(tm, train, test, config=config(), mode="pbrf", params="all", dtype="float64",
                   subtract_control=True, pbrf_damping=0.01)
    task = prob.task([Job("0", (0,)), Job("3", (3,))], portable=True, keep_params=True)
    assert isinstance(task, RetrainTask) and task.jobs == (Job("0", (0,)), Job("3", (3,)))
    assert task.config == prob.config and task.pbrf_damping == 0.01 and task.dtype == "float64"
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.steps = 3
    copy = pickle.loads(pickle.dumps(task))
    assert isinstance(copy, RetrainTask) and copy.jobs == task.jobs and copy.config == task.config
    a, b = run_chunk(task), run_chunk(copy)
    assert a["losses"].shape == (2, 4)
    for k in ("losses", "grad_norm", "objective"):
        assert torch.equal(a[k], b[k]), k
    for k, v in a["params"].items():
        assert torch.equal(v, b["params"][k]), k
