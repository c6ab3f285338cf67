"""Running a list of retraining jobs: store look-up, chunking, in-process or executor, commits."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import BrokenExecutor, CancelledError, Executor, Future, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from .options import SweepOptions
from .problem import Problem
from .retrain import Job, choose_width, run_chunk
from .store import Record, open_store

Progress = Callable[[int, int, dict[str, Any]], None]


class SweepError(RuntimeError):
    """A chunk failed on the executor (its worker died, or the chunk raised). The message names
    the chunk; ``items`` lists the retrains that failed. Every chunk that finished is in the
    store, so calling again with the same arguments computes only the missing retrains."""

    def __init__(self, message: str, items: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.items = items


class _ChunksFailed(Exception):
    """From the executor path, after every finished chunk was handed over for committing."""

    def __init__(self, failures: list[tuple[int, BaseException]]) -> None:
        super().__init__(f"{len(failures)} chunk(s) failed")
        self.failures = failures


@dataclass
class SweepOutcome:
    records: dict[str, Record]  # job key -> record, every job asked for
    n_computed: int
    n_loaded: int
    width: int


def resolve_width(problem: Problem, options: SweepOptions, n_jobs: int) -> int:
    """``options.batch_width``; ``"auto"``: :func:`choose_width`, and with an executor at least
    one chunk per worker (``options.workers()``)."""
    if options.batch_width != "auto":
        return options.batch_width
    width = choose_width(problem.module, problem.X, max(n_jobs, 1), problem.names,
                         problem.config, problem.device)
    if options.executor is not None:
        width = min(width, max(1, math.ceil(n_jobs / options.workers())))
    return width


def chunk_jobs(jobs: list[Job], width: int) -> list[list[Job]]:
    """Jobs in chunks of at most ``width``, each chunk within one :attr:`Job.group` (the same
    start and batch order); groups in the order they first appear."""
    groups: dict[tuple, list[Job]] = {}
    for j in jobs:
        groups.setdefault(j.group, []).append(j)
    return [g[i : i + width] for g in groups.values() for i in range(0, len(g), width)]


def run_jobs(problem: Problem, jobs: list[Job], options: SweepOptions,
             desc: str = "retraining") -> SweepOutcome:
    """Results of every job: loaded from ``options.store`` when there, else computed (in chunks
    of ``options.batch_width``, in this process or on ``options.executor``) and committed.

    Each finished chunk is committed before the next result is awaited, so an interrupted sweep
    (``should_stop``, an exception, a killed process) resumes where it stopped. When a chunk
    fails on the executor, the chunks not started are cancelled, those already running are
    awaited and committed, and a :class:`SweepError` names the failed chunk. ``progress=True``
    in ``options`` shows a tqdm bar named ``desc``.
    """
    if options.progress is True:
        with progress_bar(desc) as bar:
            return run_jobs(problem, jobs, options.replace(progress=bar), desc)
    store, progress, should_stop = open_store(options.store), options.progress, options.should_stop
    unique = list({j.key: j for j in jobs}.values())
    setting, desc = problem.setting()
    found = store.get(setting, [j.key for j in unique]) if store is not None else {}
    todo = [j for j in unique if j.key not in found]
    n_loaded = len(unique) - len(todo)
    width = resolve_width(problem, options, len(todo))
    chunks = chunk_jobs(todo, width)
    if store is not None and todo:
        store.describe(setting, desc)
    total, done = len(unique), n_loaded
    results = (_in_process(problem, chunks, progress, should_stop, done, total)
               if options.executor is None
               else _with_executor(problem, chunks, options.executor, should_stop))
    try:
        for i, (chunk, out) in enumerate(results):
            records = _records(chunk, out)
            if store is not None:
                store.put(setting, records)
            found.update(records)
            done += len(chunk)
            if progress is not None:
                progress(done, total, {"stage": "chunk", "chunk": i + 1, "n_chunks": len(chunks),
                                       "computed": done - n_loaded, "loaded": n_loaded,
                                       "fraction": done / total})
    except _ChunksFailed as e:
        raise _sweep_error(e.failures, chunks, done, total, store) from e.failures[0][1]
    except InterruptedError as e:
        saved = "saved in the store" if store is not None else "lost (store=None)"
        raise InterruptedError(
            f"retraining stopped after {done} of {total} retrains ({e}); finished chunks are "
            f"{saved}: call again with the same arguments to resume"
        ) from e
    finally:
        results.close()  # cancels chunks not yet started when an executor is used
    return SweepOutcome(found, len(todo), n_loaded, width)


def _sweep_error(failures: list[tuple[int, BaseException]], chunks: list[list[Job]], done: int,
                 total: int, store: Any) -> SweepError:
    i, error = failures[0]
    keys = [j.key for j in chunks[i]]
    shown = ", ".join(map(repr, keys[:5])) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
    died = ("; the worker process running it died (out of memory? a smaller batch_width makes "
            "each chunk smaller)" if _worker_died(error) else "")
    others = f"; {len(failures) - 1} other chunk(s) failed too" if len(failures) > 1 else ""
    saved = (f"finished chunks are saved in {store!r}: call again with the same arguments to "
             f"resume (only the missing retrains are computed)" if store is not None else
             "finished chunks are lost (store=None): pass a store to keep them")
    return SweepError(
        f"chunk {i + 1} of {len(chunks)} (retrains {shown}) failed on the executor: "
        f"{type(error).__name__}: {error}{died}{others}. {done} of {total} retrains are done; "
        f"{saved}", tuple(j.key for k, _ in failures for j in chunks[k]))


def _worker_died(error: BaseException) -> bool:
    """A broken process pool, or Dask's KilledWorker (the task's workers died)."""
    if isinstance(error, BrokenExecutor):
        return True
    distributed = sys.modules.get("distributed")  # imported only if a Dask client was used
    killed = getattr(distributed, "KilledWorker", None)
    return isinstance(killed, type) and isinstance(error, killed)


def _records(chunk: list[Job], out: dict[str, torch.Tensor]) -> dict[str, Record]:
    return {job.key: Record(out["losses"][c].to(torch.float64), float(out["grad_norm"][c]),
                            float(out["objective"][c]))
            for c, job in enumerate(chunk)}


def _in_process(problem: Problem, chunks: list[list[Job]], progress: Progress | None,
                should_stop: Callable[[], bool] | None, done: int,
                total: int) -> Iterator[tuple[list[Job], dict[str, torch.Tensor]]]:
    for i, chunk in enumerate(chunks):
        if should_stop is not None and should_stop():
            raise InterruptedError("should_stop() returned True")
        info = {"stage": "training", "chunk": i + 1, "n_chunks": len(chunks)}
        step_progress = _step_reporter(progress, done, len(chunk), total, info)
        yield chunk, run_chunk(problem.task(chunk, portable=False), progress=step_progress,
                               should_stop=should_stop)
        done += len(chunk)


def _step_reporter(progress: Progress | None, done: int, width: int, total: int,
                   info: dict[str, Any]) -> Progress | None:
    """Forward ``fit_copies`` step progress as progress of the whole sweep."""
    if progress is None:
        return None

    def report(step: int, steps: int, step_info: dict[str, Any]) -> None:
        fraction = (done + width * step / max(steps, 1)) / total
        progress(done, total, {**step_info, **info, "step": step, "steps": steps,
                               "fraction": fraction})

    return report


def _with_executor(problem: Problem, chunks: list[list[Job]], executor: Executor,
                   should_stop: Callable[[], bool] | None
                   ) -> Iterator[tuple[list[Job], dict[str, torch.Tensor]]]:
    """Finished chunks as they come. After a chunk fails, the chunks not started are cancelled
    and those already running are awaited (a process pool finishes them; Dask cancels them too),
    so every chunk that finished is handed over before :class:`_ChunksFailed` is raised."""
    futures = {executor.submit(run_chunk, problem.task(chunk, portable=True)): i
               for i, chunk in enumerate(chunks)}
    failures: list[tuple[int, BaseException]] = []
    waiting = set(futures)
    try:
        for fut in as_completed(futures):
            waiting.discard(fut)
            error = _error_of(fut)
            if error is not None:
                failures.append((futures[fut], error))
                break
            yield chunks[futures[fut]], fut.result()
            if should_stop is not None and should_stop():
                raise InterruptedError("should_stop() returned True")
        if failures:
            for fut in waiting:
                fut.cancel()
            for fut in as_completed([f for f in waiting if not f.cancelled()]):
                if fut.cancelled():
                    continue
                error = _error_of(fut)
                if error is not None:
                    failures.append((futures[fut], error))
                else:
                    yield chunks[futures[fut]], fut.result()
            raise _ChunksFailed(failures)
    finally:
        for fut in futures:
            fut.cancel()


def _error_of(fut: Future) -> BaseException | None:
    if fut.cancelled():  # by the executor (we cancel only after a failure)
        return CancelledError("the executor cancelled this chunk")
    return fut.exception()


@contextmanager
def progress_bar(desc: str) -> Iterator[Progress]:
    """A sweep's ``progress(done, total, info)`` as a tqdm bar: retrains done, moved within a
    chunk by its steps, with tqdm's elapsed and remaining time (from the rate so far)."""
    from tqdm.auto import tqdm

    bar: Any = None

    def update(done: int, total: int, info: dict[str, Any]) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="retrain")
        bar.n = round(float(info.get("fraction", done / max(total, 1))) * total, 2)
        if "steps" in info:
            bar.set_postfix_str(f"chunk {info.get('chunk')}/{info.get('n_chunks')}, step "
                                f"{info['step']}/{info['steps']}", refresh=False)
        bar.refresh()

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()
