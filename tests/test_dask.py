"""Sweeps beyond one machine: a local Dask cluster of processes gives the in-process values, and
when a worker process dies the store keeps every finished chunk, so a second call resumes.

One module-scoped cluster (2 worker processes, one thread each) serves every Dask test; the
process-pool test runs without Dask.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor

import pytest
import torch

from influence_widgets import models
from influence_widgets.datasets.tabular import iris
from influence_widgets.ground_truth import LOOStore, leave_group_out, leave_one_out
from influence_widgets.ground_truth import sweep as sweep_module
from influence_widgets.ground_truth.retrain import RetrainTask, run_chunk
from influence_widgets.ground_truth.sweep import SweepError
from influence_widgets.models.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

IDX = list(range(8))  # with the control: 9 retrains
GROUPS = [[0, 1], [2, 3, 4], [5], [6, 7]]


def config(**kw) -> TrainConfig:
    base = dict(optimizer="adam", lr=0.01, steps=40, dtype="float64", device="cpu")
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def iris_mlp():
    data = iris().to(dtype=torch.float64)
    train = data.X_train[:30], data.y_train[:30]
    test = data.X_test[:6], data.y_test[:6]
    spec = models.mlp_spec((4,), 3, depth=1, width=5)
    tm = models.train(spec, train, config(steps=100, weight_decay=0.01))
    return tm, train, test


@pytest.fixture(scope="module")
def in_process(iris_mlp):
    tm, train, test = iris_mlp
    return (leave_one_out(tm, train, test, IDX, config=config(), store=None),
            leave_group_out(tm, train, test, GROUPS, config=config(), store=None))


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("distributed", reason=(
        "dask.distributed is not installed: pip install 'dask[distributed]' (in the dev extra) "
        "to run the Dask tests"))
    import dask
    from distributed import Client, LocalCluster

    # A chunk whose worker died is retried on another worker (here once, by default 3 times),
    # then fails with KilledWorker. Saturation 1: a worker holds no chunk behind the one it runs
    # (when there are more than 4 chunks), so a killed worker takes only its own chunk down.
    with dask.config.set({"distributed.scheduler.allowed-failures": 1,
                          "distributed.scheduler.worker-saturation": 1.0}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
    client = Client(cluster)
    client.run(_warm_up)
    yield client
    client.close()
    cluster.close()


def _warm_up() -> None:
    import influence_widgets.ground_truth  # noqa: F401  (torch and the package, once per worker)


def dies_on(key: str, store_path: str, n_saved: int, marker: str | None,
            task: RetrainTask) -> dict[str, torch.Tensor]:
    """``run_chunk``, except that the worker process running the chunk with retrain ``key``
    exits, once ``n_saved`` retrains are in the store (only the first time if ``marker``)."""
    if any(job.key == key for job in task.jobs):
        deadline = time.monotonic() + 120  # generous: a loaded CI machine is slow
        while n_saved and LOOStore(store_path).count() < n_saved and time.monotonic() < deadline:
            time.sleep(0.05)
        if marker is None or not os.path.exists(marker):
            if marker is not None:
                open(marker, "w").close()
            os._exit(1)
    return run_chunk(task)


@pytest.mark.slow  # a cluster of processes: 40-70 s on 2 cores (make test-slow)
def test_dask_cluster_matches_in_process(client, iris_mlp, in_process):
    tm, train, test = iris_mlp
    ex = client.get_executor()
    loo = leave_one_out(tm, train, test, IDX, config=config(), executor=ex, n_workers=2,
                        store=None, return_result=True)
    groups = leave_group_out(tm, train, test, GROUPS, config=config(), executor=ex,
                             n_workers=2, store=None, return_result=True)
    assert loo.batch_width == 5 and groups.batch_width == 3  # 9 and 5 retrains over 2 workers
    torch.testing.assert_close(loo.values, in_process[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(groups.values, in_process[1], rtol=0, atol=1e-12)


@pytest.mark.slow  # a cluster of processes: 40-70 s on 2 cores (make test-slow)
def test_dask_retries_a_chunk_whose_worker_died_once(client, iris_mlp, in_process, tmp_path,
                                                     monkeypatch):
    tm, train, test = iris_mlp
    store, marker = LOOStore(tmp_path / "loo.sqlite"), tmp_path / "died"
    client.wait_for_workers(2)
    monkeypatch.setattr(sweep_module, "run_chunk",
                        functools.partial(dies_on, "3", str(store.path), 0, str(marker)))
    res = leave_one_out(tm, train, test, IDX, config=config(), executor=client.get_executor(),
                        n_workers=3, store=store, return_result=True)
    assert marker.exists()  # the worker did die, and Dask ran the chunk again elsewhere
    assert res.n_retrains_computed == 9 and store.count() == 9
    torch.testing.assert_close(res.values, in_process[0], rtol=0, atol=1e-12)


@pytest.mark.slow  # a cluster of processes: 40-70 s on 2 cores (make test-slow)
def test_dask_killed_worker_raises_and_a_second_call_resumes(client, iris_mlp, in_process,
                                                             tmp_path, monkeypatch):
    tm, train, test = iris_mlp
    store = LOOStore(tmp_path / "loo.sqlite")
    kw = dict(config=config(), executor=client.get_executor(), batch_width=1, store=store,
              return_result=True)
    # Chunks (control), (0), ..., (7): chunk 5, (3), kills its worker once the 8 others are
    # saved, and is not retried (one worker restarts, not two).
    client.wait_for_workers(2)
    monkeypatch.setattr(client.cluster.scheduler, "allowed_failures", 0)
    monkeypatch.setattr(sweep_module, "run_chunk",
                        functools.partial(dies_on, "3", str(store.path), 8, None))
    with pytest.raises(SweepError, match=r"chunk 5 of 9 \(retrains '3'\) failed on the "
                       r"executor: KilledWorker.*worker process running it died.*8 of 9 "
                       r"retrains are done.*call again with the same arguments") as err:
        leave_one_out(tm, train, test, IDX, **kw)
    assert err.value.items == ("3",) and store.count() == 8
    monkeypatch.undo()
    res = leave_one_out(tm, train, test, IDX, **kw)  # the first error is still referenced
    assert (res.n_retrains_loaded, res.n_retrains_computed) == (8, 1) and store.count() == 9
    torch.testing.assert_close(res.values, in_process[0], rtol=0, atol=1e-12)


def test_process_pool_worker_death_keeps_finished_chunks(iris_mlp, in_process, tmp_path,
                                                         monkeypatch):
    tm, train, test = iris_mlp
    store = LOOStore(tmp_path / "loo.sqlite")
    monkeypatch.setattr(sweep_module, "run_chunk",
                        functools.partial(dies_on, "3", str(store.path), 0, None))
    ctx = multiprocessing.get_context("spawn")  # one torch thread per worker, as Dask's have
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=torch.set_num_threads,
                             initargs=(1,)) as ex:
        # Which chunk is reported first, and whether the chunk before the dying one got its
        # result out before the pool broke, depend on timing (the pool queues a chunk ahead):
        # what must hold is that the error names the broken pool, that the store holds exactly
        # the retrains the message says are done, and that a second call computes the rest.
        with pytest.raises(SweepError, match=r"failed on the executor: BrokenProcessPool.* "
                           r"(\d) of 9 retrains are done; finished chunks are saved in") as err:
            leave_one_out(tm, train, test, IDX, config=config(), executor=ex, batch_width=3,
                          store=store)
    done = int(re.search(r"(\d) of 9 retrains are done", str(err.value)).group(1))
    assert "3" in err.value.items and store.count() == done and done in (0, 3)
    monkeypatch.undo()
    res = leave_one_out(tm, train, test, IDX, config=config(), store=store, return_result=True)
    assert (res.n_retrains_loaded, res.n_retrains_computed) == (done, 9 - done)
    torch.testing.assert_close(res.values, in_process[0], rtol=0, atol=1e-12)
