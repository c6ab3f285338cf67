"""The linear datamodeling score: exact scores of a convex model rank half-removals, random scores
do not; the prediction sums the removed points, the actual is a group removal, the store
resumes, and the objective and divergence contracts of LOO hold."""

from __future__ import annotations

import math

import pytest
import torch

import influence_widgets as iw
from influence_widgets.ground_truth import LDSResult, ObjectiveMismatchError, lds
from influence_widgets.ground_truth.lds import random_subsets, spearman_rows

DT = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def iris_logreg():
    """The Iris L2 logistic regression (depth 0, weight decay 0.01, float64 L-BFGS)."""
    data = iw.datasets.iris()
    spec = iw.models.architectures.mlp_spec(data.input_shape, data.n_classes, depth=0)
    tm = iw.train(spec, data.train, iw.TrainConfig.preset("exact", weight_decay=0.01))
    return tm, data.train, data.test


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return tmp_path_factory.mktemp("lds") / "lds.sqlite"


@pytest.fixture(scope="module")
def tiny():
    """A 16-point logistic regression on blobs with 3 test points (retrains take milliseconds)."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(19) % 2
    X = torch.randn(2, 3, generator=g, dtype=DT)[y] + torch.randn(19, 3, generator=g, dtype=DT)
    train, test = (X[:16], y[:16]), (X[16:], y[16:])
    spec = iw.models.architectures.mlp_spec((3,), 2, depth=0)
    tm = iw.train(spec, train, iw.TrainConfig.preset("exact", weight_decay=0.05))
    return tm, train, test


def test_exact_scores_rank_half_removals_and_random_ones_do_not(iris_logreg, store_path):
    tm, train, test = iris_logreg
    est = iw.influence(tm, train, test, solver="exact", return_result=True)
    res = lds(tm, train, test, est, n_subsets=24, store=store_path)
    print(f"\nIris logistic regression, exact scores, 24 half-subsets: LDS {res.mean:.3f} "
          f"(min {float(res.per_test.min()):.3f} over {res.per_test.numel()} test points), "
          f"{res.seconds:.2f} s")
    assert isinstance(res, LDSResult) and res.per_test.shape == (30,)
    assert res.mean >= 0.6 and bool((res.per_test > 0.3).all())
    assert res.predicted.shape == res.actual.shape == (30, 24)
    assert res.subsets.shape == (24, 120) and bool((res.subsets.sum(1) == 60).all())
    assert res.mode == "scratch" and res.reference == "control retrain"
    assert res.objective.source == "model" and res.objective.weight_decay == 0.01
    assert res.n_retrains_computed == 25 and res.n_retrains_loaded == 0
    assert not res.findings and "subsets=24 x 1 repeat(s) keeping 60 of 120" in repr(res)
    means = []
    for s in range(3):  # same subsets: every retrain comes from the store
        g = torch.Generator().manual_seed(s)
        rnd = lds(tm, train, test, torch.randn(30, 120, generator=g, dtype=DT), n_subsets=24,
                  store=store_path)
        assert rnd.n_retrains_computed == 0 and rnd.n_retrains_loaded == 25
        torch.testing.assert_close(rnd.actual, res.actual, rtol=0, atol=0)
        means.append(rnd.mean)
    print(f"random scores: LDS {', '.join(f'{m:+.3f}' for m in means)}")
    assert abs(sum(means) / 3) < 0.25 and all(abs(m) < 0.25 for m in means)


def test_prediction_sums_the_removed_points_and_actual_is_a_group_removal(tiny):
    tm, train, test = tiny
    scores = torch.arange(3 * 16, dtype=DT).reshape(3, 16) ** 1.5
    res = lds(tm, train, test, scores, fraction=0.25, n_subsets=5, seed=7, store=None)
    assert bool((res.subsets.sum(1) == 4).all())  # round(0.25 * 16) points kept
    groups = []
    for s in range(5):
        removed = [i for i in range(16) if not res.subsets[s, i]]
        groups.append(removed)
        for t in range(3):
            by_hand = sum(float(scores[t, i]) for i in removed)
            assert float(res.predicted[t, s]) == pytest.approx(by_hand, rel=1e-14)
    act = iw.leave_group_out(tm, train, test, groups, mode="scratch", store=None)
    torch.testing.assert_close(res.actual, act, rtol=0, atol=1e-12)
    by_hand = [spearman_rows(res.predicted[t : t + 1], act[t : t + 1])[0] for t in range(3)]
    torch.testing.assert_close(res.per_test, torch.cat(by_hand), rtol=0, atol=0)
    assert torch.equal(random_subsets(16, 0.25, 5, 7), res.subsets)  # the seed fixes the subsets
    assert not torch.equal(random_subsets(16, 0.25, 5, 8), res.subsets)
    # an InfluenceResult, a numpy array and the tensor give the same; return_result=False
    again = lds(tm, train, test, scores.numpy(), fraction=0.25, n_subsets=5, seed=7, store=None,
                return_result=False)
    torch.testing.assert_close(again, res.per_test, rtol=0, atol=0)


def test_the_store_resumes_an_interrupted_call_and_a_repeat_retrains_nothing(tiny, tmp_path):
    tm, train, test = tiny
    scores = iw.influence(tm, train, test)
    store = tmp_path / "resume.sqlite"
    stop = {"now": False}

    def progress(done, total, info):
        stop["now"] = stop["now"] or info["stage"] == "chunk"

    with pytest.raises(InterruptedError, match="resume"):
        lds(tm, train, test, scores, n_subsets=6, store=store, batch_width=2, progress=progress,
            should_stop=lambda: stop["now"])
    rest = lds(tm, train, test, scores, n_subsets=6, store=store, batch_width=2)
    assert 0 < rest.n_retrains_loaded < 7 and rest.n_retrains_computed == 7 - rest.n_retrains_loaded
    full = lds(tm, train, test, scores, n_subsets=6, store=store)
    assert full.n_retrains_computed == 0 and full.n_retrains_loaded == 7
    torch.testing.assert_close(full.per_test, rest.per_test, rtol=0, atol=0)
    fresh = lds(tm, train, test, scores, n_subsets=6, store=None)
    torch.testing.assert_close(fresh.actual, full.actual, rtol=0, atol=1e-12)
    # more subsets with the same seed extend the same draw: only the new ones are retrained
    more = lds(tm, train, test, scores, n_subsets=8, store=store)
    assert more.n_retrains_computed == 2 and torch.equal(more.subsets[:6], full.subsets)


def test_repeats_average_retrains_under_other_seeds(tiny, tmp_path):
    tm, train, test = tiny
    scores = iw.influence(tm, train, test)
    store = tmp_path / "repeats.sqlite"
    one = lds(tm, train, test, scores, n_subsets=4, store=store)
    two = lds(tm, train, test, scores, n_subsets=4, n_repeats=2, store=store)
    # only the new seed retrains: its 4 subsets and its own paired control
    assert two.n_retrains_computed == 5 and two.n_repeats == 2
    assert "initialisation" in two.repeats and two.diverged.shape == (4, 2)
    other = 2 * two.actual - one.actual  # the repeat under seed config.seed + 1
    assert (other - one.actual).abs().max() > 1e-9
    # L2 logistic regression is convex: another initialisation finds the same minimum
    torch.testing.assert_close(other, one.actual, rtol=1e-4, atol=1e-6)


def test_a_different_objective_is_an_error_unless_asked_for(tiny):
    tm, train, test = tiny
    scores = iw.influence(tm, train, test)
    other = tm.config.replace(weight_decay=0.0)
    with pytest.raises(ObjectiveMismatchError, match=r"weight_decay=0\.0 but the model was "
                       r"trained with weight_decay=0\.05"):
        lds(tm, train, test, scores, n_subsets=3, config=other, store=None)
    with pytest.warns(RuntimeWarning, match="DIFFERENT from the model's"):
        res = lds(tm, train, test, scores, n_subsets=3, config=other, store=None,
                  options=iw.ground_truth.SweepOptions(allow_different_objective=True))
    assert res.objective.differs and "objective-mismatch" in res.report.codes
    last = iw.influence(tm, train, test, params="last_layer", weight_decay=0.0, damping=0.1,
                        return_result=True)
    with pytest.warns(RuntimeWarning, match=r"parameters 'last_layer' vs 'all'; weight decay 0"):
        res = lds(tm, train, test, last, n_subsets=3, store=None)
    assert "lds-scores-mismatch" in res.report.codes


def test_a_diverged_schedule_gives_nan_and_a_finding(tiny):
    tm, train, test = tiny
    scores = iw.influence(tm, train, test)
    blow_up = iw.TrainConfig(optimizer="adam", lr=1e6, steps=50)
    with pytest.warns(RuntimeWarning, match="diverged"):
        res = lds(tm, train, test, scores, n_subsets=4, config=blow_up, mode="warm_start",
                  store=None)
    assert bool(res.diverged.all()) and bool(torch.isnan(res.actual).all())
    assert bool(torch.isnan(res.per_test).all()) and math.isnan(res.mean)
    assert {"control-diverged", "lds-undefined"} <= set(res.report.codes)
    assert (res.n_used == 0).all()


def test_diverged_subsets_are_left_out_of_the_correlation():
    pred = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0]], dtype=DT)
    nan = float("nan")
    act = torch.tensor([[nan, 2.0, 1.0, 4.0, 5.0], [nan, nan, nan, 4.0, 5.0]], dtype=DT)
    rho, used = spearman_rows(pred, act)
    assert used.tolist() == [4, 2] and rho[0] == pytest.approx(0.8) and math.isnan(rho[1])
    assert math.isnan(spearman_rows(pred, torch.ones_like(pred))[0][0])  # constant outcome


def test_bad_arguments_are_clear_errors(tiny):
    tm, train, test = tiny
    scores = torch.zeros(3, 16, dtype=DT)
    for fraction in (0, 1, 1.5, -0.2, float("nan")):
        with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
            lds(tm, train, test, scores, fraction=fraction, store=None)
    with pytest.raises(TypeError, match="fraction must be a number"):
        lds(tm, train, test, scores, fraction=True, store=None)
    with pytest.raises(ValueError, match="keeps 0: a subset must keep at least 1 point"):
        lds(tm, train, test, scores, fraction=0.01, store=None)
    with pytest.raises(ValueError, match="n_subsets must be at least 3"):
        lds(tm, train, test, scores, n_subsets=2, store=None)
    with pytest.raises(TypeError, match="n_subsets must be an integer"):
        lds(tm, train, test, scores, n_subsets=10.0, store=None)
    with pytest.raises(ValueError, match="n_repeats must be at least 1"):
        lds(tm, train, test, scores, n_repeats=0, store=None)
    with pytest.raises(ValueError, match=r"shape \(n_test, n_train\) = \(3, 16\), got \(16, 3\)"):
        lds(tm, train, test, scores.T, store=None)
    with pytest.raises(ValueError, match=r"2-D.*scores\[None\]"):
        lds(tm, train, test, scores[0], store=None)
    with pytest.raises(ValueError, match="NaN or inf"):
        lds(tm, train, test, torch.full((3, 16), float("nan")), store=None)
    with pytest.raises(TypeError, match="InfluenceResult"):
        lds(tm, train, test, "scores", store=None)
    with pytest.raises(TypeError, match=r"lds\(\) got unexpected keyword.*'n_subset'"):
        lds(tm, train, test, scores, n_subset=5)
    with pytest.raises(ValueError, match="unknown mode"):
        lds(tm, train, test, scores, mode="hot", store=None)


def test_lds_is_reachable_from_the_package():
    assert iw.ground_truth.lds is lds and iw.ground_truth.LDSResult is LDSResult
