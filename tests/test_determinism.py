"""Same inputs, same bits, in every process: no route, chunk or choice depends on timing or on
what else the process did before (e.g. which models it trained, which imports it paid)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    import torch
    import influence_widgets as iw
    from influence_widgets.influence import Objective

    torch.set_num_threads(1)  # the same thread count in both (reductions may split by thread)
    first = sys.argv[1] == "first"
    if first:
        # Unrelated work first: another model's products through every route (imports sympy and
        # torch._dynamo, fills any cache a route choice could keep), as a notebook would.
        torch.manual_seed(1)
        other = torch.nn.Sequential(torch.nn.Linear(4, 30), torch.nn.Tanh(), torch.nn.Linear(30, 3))
        X, y = torch.randn(50, 4), torch.arange(50) % 3
        for mode in ("graph", "graph_loop", "rev", "fwd", "tune"):
            Objective(other, X, y, hvp_mode=mode).hvp(torch.randn(7, 243))
    tm = iw.zoo.load("iris-mlp-d2-w5")  # the first process trains it, the second loads it
    out = {"trained_here": first}
    for solver, options in (("exact", {}), ("cg", {}), ("lissa", {"steps": 300}),
                            ("arnoldi", {"rank": 15})):
        res = iw.influence(tm, tm.data.train, tm.data.test, solver=solver, damping=1e-3,
                           return_result=True, **options)
        out[solver] = hashlib.sha256(res.values.contiguous().numpy().tobytes()).hexdigest()
    print(json.dumps(out))
""")


def test_two_fresh_processes_give_the_same_bits(tmp_path):
    env = {**os.environ, "INFLUENCE_WIDGETS_CACHE": str(tmp_path / "cache")}
    runs = []
    for which in ("first", "second"):
        proc = subprocess.run([sys.executable, "-c", SCRIPT, which], capture_output=True, text=True,
                              env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first.pop("trained_here") and not second.pop("trained_here")
    assert set(first) == {"exact", "cg", "lissa", "arnoldi"}
    for solver in first:
        assert first[solver] == second[solver], f"{solver}: different bits in another process"
