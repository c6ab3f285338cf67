"""Hessian-vector-product routes of ``Objective``: warm time per call, first call in a fresh process, bits.

    python benchmarks/bench_hvp_routes.py [--quick] [--threads N] [--device cpu|cuda]

For each model (built with the package at its seeded initial weights: HVP cost does not depend on
training), each number of vectors ``k`` (1, 8, 64 and the block ``Objective.hessian()`` would use)
and each route of ``Objective(hvp_mode=...)`` ("rev": vmap of torch.func's vjp of grad; "fwd": vmap
of jvp of grad; "graph": one batched backward, ``is_grads_batched=True``, through a graph of the
gradient built once at theta; "graph_loop": the same graph, one backward per vector):

- warm: the best of several calls after a warm-up call (which builds the cached graph), in process
  CPU time on a one-thread CPU run (steadier than wall time while other jobs share the cores), else
  wall time; every route's one-time imports are paid before any timing. A call predicted (from
  the smaller ``k``) to take longer than the cap is not run: its time is that linear estimate, "~".
- cached: ``Objective.caches_graph`` (the data fit in one chunk, so graph routes keep the graph
  between calls); two cases pass ``chunk_size`` < n, so graph routes rebuild it on every call.
- cold: in a fresh process per route, the first call and the second, at k = 1 then k = 8, and
  whether ``sympy`` (autograd's batched shape checks) and ``torch._dynamo`` (torch.func) got imported.
- bits: ``H V`` for the same 8 vectors by every route: bitwise equal across routes or not (and
  the largest relative difference), and bitwise equal for each route across two fresh processes.

Candidate rules for choosing a route without timing are scored by their worst ratio to the fastest
route over every case measured. Prints a markdown section and writes
``benchmarks/results/hvp_routes.md`` (``hvp_routes-quick.md`` with ``--quick``). About 2 minutes
on 2 idle CPU cores (3 while others share them); ``--quick`` under one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _report import date_line, machine  # noqa: E402  (benchmarks/ is on sys.path)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "hvp_routes.md"
ROUTES = ("rev", "fwd", "graph", "graph_loop")
WD = 0.005
BITS_K = 8


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    key: str  # model key (see build)
    dtype: str  # "float64" or "float32"
    chunk_size: int | None = None  # passed to Objective (None: from memory)

    @property
    def name(self) -> str:
        return self.key + (f" chunk {self.chunk_size}" if self.chunk_size else "")


MODELS = {
    "iris MLP 4-5-3": "Iris (120 rows), tanh MLP depth 1 width 5",
    "iris MLP 4-5x4-3": "Iris (120 rows), tanh MLP depth 4 width 5",
    "iris MLP 4-50-3": "Iris (120 rows), tanh MLP depth 1 width 50",
    "digits MLP 64-32-10": "digits (all training rows), tanh MLP 64-32-10",
    "digits CNN c8": "digits 1x8x8 images (first {cnn_rows} training rows), small_cnn, 8 channels, tanh",
    "digits MLP 64-512-512-10": "digits (first {big_rows} training rows), tanh MLP 64-512-512-10",
}


def cases(quick: bool) -> list[Case]:
    if quick:
        return [Case("iris MLP 4-5-3", "float64"), Case("digits MLP 64-32-10", "float64"),
                Case("digits MLP 64-32-10", "float64", 500), Case("digits MLP 64-512-512-10", "float64")]
    out = []
    for key in MODELS:
        out += [Case(key, "float64"), Case(key, "float32")]
        if key == "digits MLP 64-32-10":
            out.append(Case(key, "float64", 500))  # three chunks: graphs are rebuilt per call
        if key == "digits MLP 64-512-512-10":
            out.append(Case(key, "float64", 50))  # two chunks
    return out


def sizes(quick: bool) -> dict[str, int]:
    return {"cnn_rows": 120, "big_rows": 100}


def build(case: Case, device: torch.device, quick: bool):
    """``(model, X, y)`` for ``case``: the same bits in every process (seeded initial weights)."""
    from influence_widgets.datasets import digits, iris
    from influence_widgets.models.architectures import ModelSpec, mlp_spec

    sz = sizes(quick)
    k = case.key
    if k.startswith("iris"):
        data = iris()
        depth, width = {"iris MLP 4-5-3": (1, 5), "iris MLP 4-5x4-3": (4, 5), "iris MLP 4-50-3": (1, 50)}[k]
        spec, X, y = mlp_spec((4,), 3, depth=depth, width=width), data.X_train, data.y_train
    elif k == "digits MLP 64-32-10":
        data = digits()
        spec, X, y = mlp_spec((64,), 10, depth=1, width=32), data.X_train, data.y_train
    elif k == "digits CNN c8":
        data = digits(flat=False)
        spec = ModelSpec("small_cnn", (1, 8, 8), 10, {"channels": 8, "activation": "tanh"})
        X, y = data.X_train[: sz["cnn_rows"]], data.y_train[: sz["cnn_rows"]]
    elif k == "digits MLP 64-512-512-10":
        data = digits()
        spec = mlp_spec((64,), 10, depth=2, width=512)
        X, y = data.X_train[: sz["big_rows"]], data.y_train[: sz["big_rows"]]
    else:
        raise KeyError(k)
    dtype = getattr(torch, case.dtype)
    model = spec.build(seed=0).to(device, dtype).eval()
    return model, X.to(device, dtype), y.to(device)


def objective(case: Case, route: str, device: torch.device, quick: bool):
    from influence_widgets.influence.objective import Objective

    model, X, y = build(case, device, quick)
    return Objective(model, X, y, weight_decay=WD, hvp_mode=route, chunk_size=case.chunk_size)


def hessian_block(obj) -> int:
    """The block ``Objective.hessian()`` uses (same formula, read-only)."""
    try:
        from influence_widgets.influence.objective import memory_budget

        mem = memory_budget(obj.device)
    except ImportError:  # the module changed: its CPU default
        mem = 2 * 1024**3
    budget = mem // max(1, obj.p * obj.n * obj.dtype.itemsize)
    return min(max(1, min(obj.p, budget)), 512, obj.p)


def vectors(k: int, p: int, dtype: torch.dtype, device: torch.device, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, p, generator=g, dtype=torch.float64).to(device, dtype)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


# ----------------------------------------------------------------------------- warm timing


def clock(device: torch.device) -> Callable[[], float]:
    """CPU time of this process on the CPU with one thread (time spent waiting for a core while
    other jobs share the machine does not count; with one thread it equals the wall time of an
    idle machine), else wall time."""
    return time.process_time if device.type == "cpu" and torch.get_num_threads() == 1 else time.perf_counter


def best_time(fn: Callable[[], Any], device: torch.device, repeats: int = 5, budget: float = 0.5) -> float:
    """Warm-up call, then the best of ``repeats`` calls, or of fewer once they took ``budget`` s (at
    least two; one when the warm-up alone took that long), or of up to 50 while they take under
    0.05 s together (sub-millisecond calls): on a shared machine other jobs only add time, so the
    minimum is the most repeatable."""
    now = clock(device)
    t = now()
    fn()
    sync(device)
    need = 1 if now() - t > budget else 2
    times: list[float] = []
    while len(times) < 50:
        t = now()
        fn()
        sync(device)
        times.append(now() - t)
        if len(times) >= need and sum(times) > budget:
            break
        if len(times) >= repeats and sum(times) > 0.05:
            break
    return min(times)


@dataclass
class Cell:
    seconds: float | None
    estimated: bool = False
    error: str = ""


def time_case(case: Case, ks_fixed: tuple[int, ...], device: torch.device, quick: bool,
              cap: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    probe = objective(case, "rev", device, quick)
    block = hessian_block(probe)
    ks = sorted(set(ks_fixed) | ({block} if probe.p <= 10_000 else set()))
    chunk = getattr(probe, "_hvp_chunk_size", lambda: probe.chunk_size)()
    row: dict[str, Any] = {"case": case, "p": probe.p, "n": probe.n, "cached": probe.caches_graph,
                           "chunk": chunk, "block": block, "ks": ks, "cells": {}}
    for route in ROUTES:
        obj = objective(case, route, device, quick)
        last: tuple[int, float] | None = None
        failed = ""
        for k in ks:
            if failed:
                row["cells"][(route, k)] = Cell(None, error=failed)
                continue
            if last is not None and last[1] * k / last[0] > cap:
                row["cells"][(route, k)] = Cell(last[1] * k / last[0], estimated=True)
                continue
            V = vectors(k, obj.p, obj.dtype, device)
            try:
                sec = best_time(lambda V=V, obj=obj: obj.hvp(V), device)
            except (RuntimeError, NotImplementedError) as e:
                failed = f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"
                row["cells"][(route, k)] = Cell(None, error=failed)
                continue
            row["cells"][(route, k)] = Cell(sec)
            last = (k, sec)
        del obj
    log(f"   {case.name} {case.dtype} ({time.perf_counter() - t0:.1f} s): p={row['p']:,} n={row['n']:,} cached={row['cached']} "
        + " ".join(f"{r}@{k}={c.seconds * 1e3:.1f}ms" for (r, k), c in row["cells"].items() if c.seconds))
    return row


# ----------------------------------------------------------------------------- bits


def route_outputs(case: Case, device: torch.device, quick: bool) -> dict[str, torch.Tensor | str]:
    out: dict[str, torch.Tensor | str] = {}
    for route in ROUTES:
        obj = objective(case, route, device, quick)
        try:
            out[route] = obj.hvp(vectors(BITS_K, obj.p, obj.dtype, device)).detach().cpu()
        except (RuntimeError, NotImplementedError) as e:
            out[route] = f"{type(e).__name__}"
    return out


def worker_bits(args) -> dict[str, Any]:
    res = {}
    for case in cases(args.quick):
        outs = route_outputs(case, args.device, args.quick)
        res[f"{case.name}|{case.dtype}"] = {r: (o if isinstance(o, str) else digest(o)) for r, o in outs.items()}
    return res


# ----------------------------------------------------------------------------- cold first call


def worker_cold(args) -> dict[str, Any]:
    """First and second calls of one route in this (fresh) process, at k = 1 then k = 8."""
    t = time.perf_counter()
    import influence_widgets  # noqa: F401
    from influence_widgets.influence.objective import Objective  # noqa: F401

    res: dict[str, Any] = {"import": time.perf_counter() - t}
    case = Case("iris MLP 4-5-3", "float64")
    obj = objective(case, args.route, args.device, args.quick)
    res["modules_before"] = {m: m in sys.modules for m in ("sympy", "torch._dynamo")}
    now = clock(args.device)
    for k in (1, BITS_K):
        V = vectors(k, obj.p, obj.dtype, args.device)
        for which in ("first", "second"):
            t, w = now(), time.perf_counter()
            obj.hvp(V)
            sync(args.device)
            res[f"k{k}_{which}"] = now() - t  # the clock of the warm table
            res[f"k{k}_{which}_wall"] = time.perf_counter() - w
        res[f"k{k}_modules"] = {m: m in sys.modules for m in ("sympy", "torch._dynamo")}
    return res


def run_worker(kind: str, args, extra: list[str] = ()) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--threads", str(args.threads),
           "--device", str(args.device)] + (["--quick"] if args.quick else []) + list(extra)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} {extra} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- rules


SMALL_WORK = 100_000  # p * n below which one batched backward beats a loop of backwards
BIG_K = 128  # on small models, above this many vectors torch.func's vjp beats the batched backward


def rule_size(large: str, small_big_k: str = "graph") -> Callable[[str, int, int, int, bool], str]:
    """k = 1: the single backward (graph_loop; graph runs the same code at k = 1); k > 1: one batched
    backward while p * n is small (``small_big_k`` above ``BIG_K`` vectors), else ``large``."""
    def rule(device: str, p: int, n: int, k: int, cached: bool) -> str:
        if k == 1:
            return "graph_loop"
        if p * n < SMALL_WORK:
            return "graph" if k <= BIG_K else small_big_k
        return large
    return rule


RECOMMENDED = f"k = 1: graph_loop; p*n < {SMALL_WORK:.0e}: graph; else graph_loop"
RULES: dict[str, Callable[[str, int, int, int, bool], str]] = {
    "always rev": lambda d, p, n, k, c: "rev",
    "always fwd": lambda d, p, n, k, c: "fwd",
    "always graph": lambda d, p, n, k, c: "graph",
    "always graph_loop": lambda d, p, n, k, c: "graph_loop",
    "k = 1: graph_loop; else rev": lambda d, p, n, k, c: "graph_loop" if k == 1 else "rev",
    RECOMMENDED: rule_size("graph_loop"),
    f"k = 1: graph_loop; p*n < {SMALL_WORK:.0e}: graph; else rev": rule_size("rev"),
    f"k = 1: graph_loop; p*n < {SMALL_WORK:.0e}: graph (rev if k > {BIG_K}); else graph_loop":
        rule_size("graph_loop", "rev"),
    f"k = 1: graph_loop; p*n < {SMALL_WORK:.0e}: graph (rev if k > {BIG_K}); else rev": rule_size("rev", "rev"),
}


def one_time(cold: dict[str, dict[str, Any]], route: str, k: int) -> float:
    """A route's one-time cost in a fresh process (imports, from the Iris cold run) up to a call at k."""
    r = next((v for key, v in cold.items() if key.endswith("|" + route)), None)
    if r is None:
        return 0.0
    cost = max(0.0, r["k1_first"] - r["k1_second"])
    if k > 1:
        cost += max(0.0, r[f"k{BITS_K}_first"] - r[f"k{BITS_K}_second"])
    return cost


def measured(row: dict[str, Any], k: int) -> dict[str, float]:
    """Times of the routes at ``k`` (not failed), estimates included, where at least one was run."""
    cells = {r: row["cells"][(r, k)] for r in ROUTES}
    if all(c.estimated or c.seconds is None for c in cells.values()):
        return {}
    return {r: c.seconds for r, c in cells.items() if c.seconds is not None}


def score_rules(rows: list[dict[str, Any]], device: str, cold: dict[str, dict[str, Any]]):
    """Per rule: the worst ratio of its route's warm time to the fastest route's and where, the
    most time one warm call loses, and the largest one-time import cost it can pull in."""
    out = []
    for name, rule in RULES.items():
        worst, where, lost, imports, all_ratios = 1.0, "", 0.0, 0.0, []
        for row in rows:
            for k in row["ks"]:
                times = measured(row, k)
                if not times:
                    continue
                pick = rule(device, row["p"], row["n"], k, row["cached"])
                ratio = times.get(pick, float("inf")) / min(times.values())
                all_ratios.append(ratio)
                if ratio > worst:
                    worst, where = ratio, f"{row['case'].name} f{row['case'].dtype[5:]} k={k} ({pick})"
                lost = max(lost, times.get(pick, float("inf")) - min(times.values()))
                imports = max(imports, one_time(cold, pick, k))
        out.append((name, worst, where, lost, imports, statistics.median(all_ratios)))
    return out


def conclusions(rows, cold, scores, bits_summary, device: str) -> list[str]:
    """Conclusions written from this run's numbers."""
    def ratios(select, route):
        out = []
        for row in rows:
            for k in row["ks"]:
                t = measured(row, k)
                if t and route in t and select(row, k):
                    out.append((t[route] / min(t.values()), row, k))
        return out

    def worst(select, route) -> str:
        r = ratios(select, route)
        return f"{max(x for x, _, _ in r):.2f}x" if r else "—"

    def span(select, route) -> str:
        r = [x for x, _, _ in ratios(select, route)]
        return f"{min(r):.1f}-{max(r):.1f}x" if r else "—"

    small = lambda row, k: k > 1 and row["p"] * row["n"] < SMALL_WORK  # noqa: E731
    large = lambda row, k: k > 1 and row["p"] * row["n"] >= SMALL_WORK and row["cached"]  # noqa: E731
    uncached = lambda row, k: k > 1 and not row["cached"]  # noqa: E731
    k1 = lambda row, k: k == 1  # noqa: E731
    wins = {r: 0 for r in ROUTES}
    for row in rows:
        for k in row["ks"]:
            t = measured(row, k)
            if t:
                wins[min(t, key=t.get)] += 1
    total = sum(wins.values())
    by = {name: (w, where, lost, imp, med) for name, w, where, lost, imp, med in scores}
    rec = by[RECOMMENDED]
    alt = [v for n, v in by.items() if "rev if k" in n and n.endswith("graph_loop")][0]
    wrong = max(max(measured(row, k).values()) / min(measured(row, k).values())
                for row in rows for k in row["ks"] if measured(row, k))
    sympy = one_time(cold, "graph", BITS_K)
    dynamo = max(one_time(cold, "rev", 1), one_time(cold, "fwd", 1))
    saves = [(t["graph_loop"] - t["graph"], row, k) for row in rows for k in row["ks"]
             if small(row, k) and {"graph", "graph_loop"} <= set(t := measured(row, k))]
    calls = sorted(sympy / s for s, _, _ in saves if s > 0)
    margins = []  # where fwd is fastest: how much slower the next route is
    for row in rows:
        for k in row["ks"]:
            t = measured(row, k)
            if "fwd" in t and len(t) > 1 and t["fwd"] == min(t.values()):
                margins.append(min(v for r, v in t.items() if r != "fwd") / t["fwd"])
    fwd_line = (f"- fwd is fastest in {len(margins)} rows, by at most {max(margins):.2f}x over the next "
                f"route, and up to {worst(lambda row, k: True, 'fwd')} slower elsewhere: a rule never needs it."
                if margins else f"- fwd is never the fastest (up to {worst(lambda row, k: True, 'fwd')} slower).")
    return [
        f"- Fastest route per row ({device}, {total} rows): " + ", ".join(f"{r} {wins[r]}" for r in ROUTES)
        + ". Choosing the wrong route costs up to "
        f"{wrong:.1f}x (slowest / fastest in one row).",
        f"- k = 1: graph and graph_loop run the same single backward through the cached graph: within "
        f"{worst(k1, 'graph_loop')} of the fastest in every row; rev {span(k1, 'rev')} and fwd "
        f"{span(k1, 'fwd')} slower (they redo the forward and gradient on every call).",
        f"- k > 1, small models (p*n < {SMALL_WORK:.0e}): one batched backward (graph) is "
        f"within {worst(small, 'graph')} of the fastest; a loop of backwards is {span(small, 'graph_loop')} "
        f"slower (per-backward overhead dominates); rev is {span(small, 'rev')}.",
        f"- k > 1, larger models (p*n >= {SMALL_WORK:.0e}), graph cached: graph_loop is "
        f"within {worst(large, 'graph_loop')}, graph {span(large, 'graph')}, rev {span(large, 'rev')} "
        "(the vmapped backward no longer beats k plain ones).",
        f"- Graph not cached (chunk_size < n: rebuilt on every call): graph_loop within "
        f"{worst(uncached, 'graph_loop')}, rev {span(uncached, 'rev')}, graph {span(uncached, 'graph')}: "
        "no reason for a different rule there.",
        f"- Rule ({device}): {RECOMMENDED}. Median {rec[4]:.2f}x, worst {rec[0]:.2f}x of the fastest over "
        f"every row (at {rec[1]}), at most {rec[2] * 1e3:.0f} ms lost per call. Sending small models to rev above k = {BIG_K} gives worst "
        f"{alt[0]:.2f}x (median {alt[4]:.2f}x) but pulls in torch._dynamo ({dynamo:.1f} s once) to save at "
        "most tens of ms per call.",
        f"- First call in a fresh process: rev/fwd import torch._dynamo and sympy ({dynamo:.1f} s once); "
        f"graph at k > 1 imports sympy ({sympy:.2f} s once); graph_loop imports nothing. On the small "
        f"models graph repays its import after {calls[0]:.0f}-{calls[-1]:.0f} calls, so an interactive "
        "user making a few exact solves loses less with graph_loop everywhere (always graph_loop: "
        f"worst {by['always graph_loop'][0]:.1f}x warm, at most {by['always graph_loop'][2] * 1e3:.0f} ms "
        "per call), while an iterative solver making hundreds of calls should use the rule above."
        if calls else f"- First call: rev/fwd {dynamo:.1f} s, graph {sympy:.2f} s of one-time imports.",
        fwd_line,
        bits_summary,
    ]


# ----------------------------------------------------------------------------- report


def fmt(c: Cell | None, best: float | None) -> str:
    if c is None:
        return "—"
    if c.seconds is None:
        return "fails"
    s = c.seconds
    txt = f"{s * 1e3:.2f}" if s < 0.01 else f"{s * 1e3:.1f}" if s < 1 else f"{s * 1e3:.0f}"
    if c.estimated:
        txt = "~" + txt
    if best is not None and s == best:
        txt = f"**{txt}**"
    return txt


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| model | dtype | p | n | cached | k | rev | fwd | graph | graph_loop | fastest | slowest/fastest |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        c = row["case"]
        for k in row["ks"]:
            cells = {r: row["cells"][(r, k)] for r in ROUTES}
            timed = {r: x.seconds for r, x in cells.items() if x.seconds is not None}
            best = min(timed.values()) if timed else None
            fastest = min(timed, key=timed.get) if timed else "—"
            spread = f"{max(timed.values()) / best:.1f}x" if timed else "—"
            if timed and any(x.estimated for x in cells.values()):
                fastest, spread = f"~{fastest}", f"~{spread}"
            kk = f"{k} (block)" if k == row["block"] and k not in (1, 8, 64) else str(k)
            lines.append(f"| {c.name} | f{c.dtype[5:]} | {row['p']:,} | {row['n']:,} | "
                         f"{'yes' if row['cached'] else 'no (' + str(row['chunk']) + ' rows/chunk)'} | {kk} | "
                         + " | ".join(fmt(cells[r], best) for r in ROUTES) + f" | {fastest} | {spread} |")
    return lines


def bits_lines(main_bits: dict[str, dict[str, Any]], workers: list[dict[str, Any]]) -> tuple[list[str], str]:
    lines = ["| model | dtype | routes bitwise equal to each other | largest relative difference between routes "
             "| each route bitwise equal across 2 fresh processes and this one |", "|---|---|---|---|---|"]
    n_all_equal = n_repeat = 0
    pairs: list[str] = []
    worst: dict[str, float] = {}
    for key, info in main_bits.items():
        name, dtype = key.split("|")
        outs = info["outputs"]
        tens = {r: o for r, o in outs.items() if not isinstance(o, str)}
        groups: dict[str, list[str]] = {}
        for r, o in tens.items():
            groups.setdefault(digest(o), []).append(r)
        eq = "all equal" if len(groups) == 1 else " / ".join("=".join(g) for g in groups.values())
        ref = tens.get("rev", next(iter(tens.values()))) if tens else None
        diff = max((float((o - ref).abs().max() / ref.abs().max()) for o in tens.values()), default=0.0)
        rep = []
        for r in ROUTES:
            hs = {w[key][r] for w in workers} | {outs[r] if isinstance(outs[r], str) else digest(outs[r])}
            rep.append(f"{r} {'yes' if len(hs) == 1 else 'NO'}")
        lines.append(f"| {name} | f{dtype[5:]} | {eq} | {diff:.1e} | {', '.join(rep)} |")
        n_all_equal += len(groups) == 1
        n_repeat += all(x.endswith("yes") for x in rep)
        pairs += ["=".join(g) for g in groups.values() if len(g) > 1]
        worst[dtype] = max(worst.get(dtype, 0.0), diff)
    n = len(main_bits)
    common = sorted(set(pairs), key=pairs.count, reverse=True)
    summary = (f"- Bits: the four routes give bitwise-identical H V in {n_all_equal} of {n} cases (some pairs "
               f"coincide: {', '.join(f'{c} in {pairs.count(c)}' for c in common) or 'none'}); they differ by "
               f"at most " + ", ".join(f"{v:.1e} relative in {d}" for d, v in sorted(worst.items()))
               + ". Each route is bitwise identical across two fresh processes and this one in "
               f"{n_repeat} of {n} cases (same thread count), so a fixed rule gives reproducible bits; "
               "choosing by timing does not.")
    return lines, summary


def cold_lines(cold: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| case | route | import (wall) | first k=1 | 2nd k=1 | first k=8 | 2nd k=8 | one-time cost | "
             "same, wall | imports pulled in |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in cold.items():
        case, route = key.split("|")
        once = (r["k1_first"] - r["k1_second"]) + (r["k8_first"] - r["k8_second"])
        wall = (r["k1_first_wall"] - r["k1_second_wall"]) + (r["k8_first_wall"] - r["k8_second_wall"])
        pulled = [m for m in ("sympy", "torch._dynamo") if r[f"k{BITS_K}_modules"][m] and not r["modules_before"][m]]
        ms = [f"{r[x] * 1e3:.0f} ms" for x in ("import", "k1_first", "k1_second", "k8_first", "k8_second")]
        lines.append(f"| {case} | {route} | " + " | ".join(ms) + f" | {once:.2f} s | {wall:.2f} s | {', '.join(pulled) or 'none'} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="four cases, float64, k in {1, 8} (smoke run)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared machine more threads stall each other)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--cap", type=float, default=None, help="seconds a call may take (else estimated)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--worker", choices=("bits", "cold"), help=argparse.SUPPRESS)
    ap.add_argument("--route", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.device = torch.device(args.device)
    if args.worker:
        res = worker_bits(args) if args.worker == "bits" else worker_cold(args)
        print(json.dumps(res))
        return 0
    # not in a worker: a cold worker times this import itself
    from influence_widgets.influence.objective import HVP_MODES

    missing = [r for r in ROUTES if r not in HVP_MODES]
    if missing:
        raise SystemExit(f"Objective no longer has hvp_mode {missing}: {HVP_MODES}")
    if args.out is None:
        args.out = RESULTS.with_name("hvp_routes-quick.md") if args.quick else RESULTS
    cap = args.cap or (0.5 if args.quick else 1.6)
    started = dt.datetime.now().astimezone()
    load0 = os.getloadavg()
    t_start = time.perf_counter()

    # Cold first: nothing this process does can warm a fresh process, but run them before the
    # timing loop all the same so the order is fixed.
    log("== cold first calls (fresh processes)")
    cold = {}
    for route in ROUTES:
        cold[f"Iris 4-5-3 f64|{route}"] = run_worker("cold", args, ["--route", route])
    log(f"== bits in two fresh processes ({time.perf_counter() - t_start:.0f} s)")
    workers = [run_worker("bits", args) for _ in range(2)]

    log("== paying every route's one-time imports")
    warm_case = Case("iris MLP 4-5-3", "float64")
    for route in ROUTES:
        obj = objective(warm_case, route, args.device, args.quick)
        for k in (1, BITS_K):
            obj.hvp(vectors(k, obj.p, obj.dtype, args.device))

    log(f"== warm timing ({time.perf_counter() - t_start:.0f} s)")
    ks = (1, 8) if args.quick else (1, 8, 64)
    rows = [time_case(c, ks, args.device, args.quick, cap) for c in cases(args.quick)]
    log(f"== bits in this process ({time.perf_counter() - t_start:.0f} s)")
    main_bits = {f"{c.name}|{c.dtype}": {"outputs": route_outputs(c, args.device, args.quick)}
                 for c in cases(args.quick)}
    load1 = os.getloadavg()

    sz = sizes(args.quick)
    clock_name = ("process CPU time (one thread: time waiting for a core while others share the machine "
                  "does not count)" if clock(args.device) is time.process_time else "wall time")
    cmd = " ".join(["python benchmarks/bench_hvp_routes.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [
        "## Hessian-vector-product routes",
        "",
        date_line(started, args.quick),
        f"- machine: {machine()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} thread(s)), device {args.device.type}"
        + (f" ({torch.cuda.get_device_name(args.device)})" if args.device.type == "cuda" else "")
        + f"; load average {load0[0]:.1f} at start, {load1[0]:.1f} at end",
        f"- command: `{cmd}`",
        "- models at their seeded initial weights (HVP cost does not depend on training), weight decay "
        f"{WD}: " + "; ".join(f"{k}: {v.format(**sz)}" for k, v in MODELS.items()),
        f"- warm: ms per call of `Objective.hvp(V)`, `V` of shape (k, p), in {clock_name}; best of 5 calls "
        "(up to 50 for sub-millisecond calls; 2, or 1 when the warm-up took over 0.5 s, for slow ones) "
        "after a warm-up call (which builds the cached graph), every route's one-time imports paid first; "
        f"'~': not run, linear estimate from the smaller k (the call would exceed {cap:g} s; the scores "
        "below use them in rows where at least one route was run); bold: fastest. "
        "cached = `Objective.caches_graph`; 'block' = the block `Objective.hessian()` uses.",
        "",
    ]
    lines += table(rows)
    scores = score_rules(rows, args.device.type, cold)
    lines += ["", "Rules that choose a route without timing (graph and graph_loop run the same single "
              "backward at k = 1), scored over every row above: worst ratio of the warm time of the "
              "route they pick to the fastest route's; lost: the most time one warm call loses; imports: "
              "the largest one-time cost in a fresh process of a route it picks (cold table below).", "",
              "| rule | median ratio | worst ratio | where | lost | imports |", "|---|---|---|---|---|---|"]
    lines += [f"| {n} | {med:.2f}x | {w:.2f}x | {where} | {lost * 1e3:.0f} ms | {imp:.2f} s |"
              for n, w, where, lost, imp, med in scores]
    lines += ["", "### First call in a fresh process (one route per process, k = 1 then k = 8)", ""]
    lines += cold_lines(cold)
    lines += ["", "Calls timed in the clock of the warm table, the one-time cost also in wall time; one-time "
              "cost = (first - second) at k = 1 plus at k = 8: imports and the graph build.", ""]
    lines += ["### Bits (H V for the same 8 vectors)", ""]
    blines, bsummary = bits_lines(main_bits, workers)
    lines += blines
    lines += ["", "### Conclusions", ""] + conclusions(rows, cold, scores, bsummary, args.device.type) + [""]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
