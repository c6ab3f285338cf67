"""Issue 21 (8): two visitors asking for the same retrains at once compute them once."""

from __future__ import annotations

import threading

from test_explorer_view import MODEL, iris_model  # noqa: F401  (a module fixture)

from influence_widgets.widgets.session import ExplorerSession, Request, one_at_a_time


def test_identical_concurrent_computes_retrain_once(iris_model):  # noqa: F811
    req = Request(model=MODEL, test_index=3, k=10, gt_steps=150)
    sessions = [ExplorerSession({MODEL: iris_model}) for _ in range(2)]
    waited: list[str] = []
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def visit(session: ExplorerSession) -> None:
        try:
            start.wait()
            session.run(req, progress=lambda stage: lambda step, total, info: (
                waited.append(info["note"]) if "note" in info else None))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=visit, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    counts = sorted(s.retrain_count for s in sessions)
    assert counts[0] == 0 and counts[1] > 0, counts  # the second reused the first's retrains
    assert waited and "waiting to reuse them" in waited[0]


def test_a_waiting_job_can_be_cancelled():
    first = one_at_a_time("the same job")
    first.__enter__()
    try:
        import pytest

        with pytest.raises(InterruptedError, match="waiting for the same computation"):
            with one_at_a_time("the same job", should_stop=lambda: True):
                pass
        with one_at_a_time("another job"):
            pass  # other jobs do not wait
    finally:
        first.__exit__(None, None, None)
