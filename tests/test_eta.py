"""Time estimates before long work: a short probe, extrapolated (ground_truth/eta.py)."""

from __future__ import annotations

import time

import pytest
import torch

import influence_widgets as iw
from influence_widgets.ground_truth.eta import (
    estimate_eta,
    loo_eta,
    noise_eta,
    probe_chunk,
    solver_work,
)

POINTS = list(range(20))
ADAM = iw.TrainConfig(optimizer="adam", lr=1e-3, steps=400)


@pytest.fixture(scope="module")
def iris_model():
    data = iw.datasets.iris()
    spec = iw.models.mlp_spec(data.input_shape, data.n_classes, depth=1, width=5)
    config = iw.TrainConfig(optimizer="lbfgs", lr=1.0, steps=300, dtype="float64",
                            weight_decay=0.005, device="cpu", grad_tol=1e-5)
    return iw.train(spec, data.train, config, name="iris-eta", data=data)


def _cpu_seconds(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def test_loo_eta_lands_within_2x_of_the_real_time(iris_model, one_thread):
    """CPU time (immune to other jobs on a shared machine) of the probe and of the real run:
    the best of two runs of each, so that a one-off hiccup does not decide."""
    tm = iris_model
    kw = {"config": ADAM, "store": None}
    etas = [loo_eta(tm, tm.train, tm.data.test, POINTS, clock=time.process_time, **kw)
            for _ in range(2)]
    real = min(_cpu_seconds(lambda: iw.leave_one_out(tm, tm.train, tm.data.test, POINTS, **kw))
               for _ in range(2))
    eta = min(e.seconds for e in etas)
    assert etas[0].n_computed == len(POINTS) + 1 and etas[0].steps == ADAM.steps
    assert 0.5 <= eta / real <= 2.0, (eta, real, etas[0].describe())
    assert etas[0].probe_seconds < 0.2 * real + 0.5  # the probe is a small part of the work


def test_eta_leaves_out_what_the_store_holds(iris_model, tmp_path, one_thread):
    tm, store = iris_model, tmp_path / "loo.sqlite"
    kw = {"config": iw.TrainConfig(optimizer="adam", lr=1e-3, steps=30), "store": store}
    iw.leave_one_out(tm, tm.train, tm.data.test, POINTS[:5], **kw)
    timings: dict = {}
    eta = loo_eta(tm, tm.train, tm.data.test, POINTS[:8], timings=timings, **kw)
    assert (eta.n_jobs, eta.n_loaded, eta.n_computed) == (9, 6, 3)  # the control is stored too
    assert eta.seconds > 0 and len(timings) == 1
    again = loo_eta(tm, tm.train, tm.data.test, POINTS[:8], timings=timings, **kw)
    assert again.timings == eta.timings  # the measured step is reused, not probed again
    done = loo_eta(tm, tm.train, tm.data.test, POINTS[:5], **kw)
    assert done.seconds == 0.0 and done.chunks == () and done.probe_seconds == 0.0
    assert "all in the store" in done.describe()


def test_noise_eta_knows_the_noise_floor_retrains(iris_model, tmp_path, one_thread):
    """The ETA names the retrains with the keys retraining_noise stores them under."""
    tm, store = iris_model, tmp_path / "loo.sqlite"
    kw = {"config": iw.TrainConfig(optimizer="adam", lr=1e-3, steps=20), "store": store}
    eta = noise_eta(tm, tm.train, tm.data.test, n_seeds=3, **kw)
    assert eta.chunks == (1, 1, 1, 1)  # the control and each seed alone (other starts)
    iw.ground_truth.retraining_noise(tm, tm.train, tm.data.test, n_seeds=3, **kw)
    done = noise_eta(tm, tm.train, tm.data.test, n_seeds=3, **kw)
    assert done.n_loaded == done.n_jobs == 4 and done.seconds == 0.0


def test_extrapolation_is_linear_in_points_and_steps(iris_model, one_thread):
    tm = iris_model
    eta = loo_eta(tm, tm.train, tm.data.test, POINTS, config=ADAM, store=None, batch_width=4)
    assert eta.chunks == (4, 4, 4, 4, 4, 1)
    t = eta.timings[0]
    assert eta.seconds == pytest.approx(5 * t.chunk(4, ADAM.steps) + t.chunk(1, ADAM.steps))
    assert eta.seconds_for(n_jobs=8) == pytest.approx(2 * t.chunk(4, ADAM.steps))
    longer = eta.seconds_for(steps=2 * ADAM.steps)
    assert eta.seconds < longer < 2 * eta.seconds + 1e-9
    assert "21 retrains" in eta.describe() and "400 steps" in eta.describe()


def test_probe_stops_at_its_budget(iris_model, monkeypatch):
    from influence_widgets.ground_truth import eta as eta_module
    from influence_widgets.ground_truth.problem import prepare
    from influence_widgets.ground_truth.retrain import Job

    tm = iris_model
    problem = prepare(tm, tm.train, tm.data.test, config=ADAM, mode="warm_start", params="all",
                      dtype="auto", subtract_control=True, pbrf_damping=1e-3)
    timing = probe_chunk(problem, [Job("control")], steps=100, budget=0.0)
    assert timing.probe_steps == 1 and timing.step > 0 and timing.fixed > 0  # a slow first step
    monkeypatch.setattr(eta_module, "SLOW_FIRST_STEP", 1e12)
    timing = probe_chunk(problem, [Job("control")], steps=100, budget=1e-9)
    assert timing.probe_steps == 2  # else two: the first one's extra cost is set-up
    full = probe_chunk(problem, [Job("control")], steps=3)
    assert full.probe_steps == 3


def test_estimate_eta_counts_the_solver_work(iris_model, one_thread):
    from influence_widgets.ground_truth import eta as eta_module
    from influence_widgets.influence import make_settings

    engine = iw.InfluenceEngine(iris_model, iris_model.train)
    obj = engine.objective
    exact = estimate_eta(obj, "exact")
    assert exact.hvps == obj.p and exact.grad_rows == obj.n and exact.seconds > 0
    assert estimate_eta(obj, "exact", fitted=True).hvps == 0
    cg = estimate_eta(obj, "cg", extra_hvps=7)
    assert cg.hvps == -(-min(1000, obj.p) // eta_module.CG_SHARE) + 7 and "CG stops" in cg.note
    assert solver_work("arnoldi", make_settings("arnoldi"), obj.p, obj.n)[0] == 40
    # a real estimate takes about what was estimated (generous: tiny times are noisy)
    t = time.perf_counter()
    iw.InfluenceEngine(iris_model, iris_model.train).scores(iris_model.data.test, solver="exact",
                                                           test_indices=[0])
    assert exact.seconds < 20 * (time.perf_counter() - t) + 0.5


def test_leave_one_out_progress_true_shows_a_bar(iris_model, capsys, one_thread):
    tm = iris_model
    kw = {"config": iw.TrainConfig(optimizer="adam", lr=1e-3, steps=20), "store": None}
    with_bar = iw.leave_one_out(tm, tm.train, tm.data.test, POINTS[:3], progress=True, **kw)
    plain = iw.leave_one_out(tm, tm.train, tm.data.test, POINTS[:3], **kw)
    assert torch.equal(with_bar, plain)
    assert "LOO warm start" in capsys.readouterr().err  # the bar names the ground truth
