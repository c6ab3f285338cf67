"""Memory benchmark: peak RSS and time of ``iw.influence`` where ``n_train x p`` gradients do not fit.

    python benchmarks/bench_memory.py [--quick] [--threads N] [--baseline DIR] [--cases a,b]

Each case runs in its own fresh process (so peaks are separate); its peak is that process's
``ru_maxrss`` (what ``/usr/bin/time -v`` calls the maximum resident set size), torch's import
included, and its time is the wall and CPU time of the ``iw.influence`` call alone. Cases:

- ``mlp1m``: a tanh MLP 64-1000-1000-10 (1,076,010 parameters, float32, seeded initial weights)
  on the first 1,400 digits training rows, 30 test rows: CG on the Gauss-Newton curvature
  (``curvature="ggn"``), ``max_iter=3``, damping 0.01 (issue 11: 16.4 GiB and 210 s before
  streaming; its gradient matrix alone is 5.6 GiB). With ``--baseline DIR`` the same case also
  runs on the code in ``DIR`` (a checkout from before streaming; ``PYTHONPATH=DIR``), and the
  two score matrices are compared.
- ``resnet_cg``, ``resnet_lissa``, ``resnet_arnoldi``: ResNet-18 for small images with GroupNorm
  (``ModelSpec("resnet18", (3, 32, 32), 10, {"norm": "group"})``, 11,173,962 parameters, float32,
  seeded initial weights) on 1,000 synthetic CIFAR-shaped images (3x32x32 standard normal, 10
  random classes), 2 test images, every parameter, curvature "ggn", damping 0.01: CG
  ``max_iter=3``; LiSSA ``steps=3`` with a given ``scale`` (an automatic one costs a 30-step
  Lanczos first); Arnoldi ``rank=5, n_iter=6``. The Hessian route works too (double backward
  through GroupNorm and ReLU, about the cost of a Gauss-Newton product), but at initial weights
  the Hessian is in general indefinite (CG would stop at negative curvature) and the
  Gauss-Newton one is not.
- ``resnet_exact_last``: the same ResNet, ``solver="exact"`` over ``params="last_layer"`` (the
  5,130 weights of the final linear layer), Hessian curvature, damping 0.01.

About an hour on 2 shared CPU cores (the ResNet rows take 2 to 25 minutes each, the MLP before
streaming 2 minutes and 17 GiB). ``--quick``: 200 digits rows with a 64-200-200-10 MLP, and 40
images for the ResNet: a smoke check of the script, not a measurement. Prints a markdown section
and writes ``benchmarks/results/memory.md`` (``memory-quick.md`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _report import date_line, machine  # noqa: E402  (benchmarks/ is on sys.path)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "memory.md"
GIB = 2**30
RESNET_OPTIONS = {"norm": "group"}


@dataclass(frozen=True)
class Case:
    name: str
    label: str
    model: str  # "mlp1m" or "resnet"
    options: dict[str, Any] = field(default_factory=dict)  # passed to iw.influence


CASES = {
    "mlp1m": Case("mlp1m", "MLP 64-1000-1000-10, CG (GGN), max_iter=3", "mlp1m",
                  {"solver": "cg", "curvature": "ggn", "max_iter": 3, "damping": 0.01}),
    "resnet_cg": Case("resnet_cg", "ResNet-18 (GroupNorm), CG (GGN), max_iter=3", "resnet",
                      {"solver": "cg", "curvature": "ggn", "max_iter": 3, "damping": 0.01}),
    "resnet_lissa": Case("resnet_lissa", "ResNet-18 (GroupNorm), LiSSA (GGN), steps=3, scale=100",
                         "resnet", {"solver": "lissa", "curvature": "ggn", "steps": 3,
                                    "scale": 100.0, "damping": 0.01}),
    "resnet_arnoldi": Case("resnet_arnoldi", "ResNet-18 (GroupNorm), Arnoldi (GGN), rank=5, n_iter=6",
                           "resnet", {"solver": "arnoldi", "curvature": "ggn", "rank": 5, "n_iter": 6,
                                      "damping": 0.01}),
    "resnet_exact_last": Case("resnet_exact_last", "ResNet-18 (GroupNorm), exact, last layer (Hessian)",
                              "resnet", {"solver": "exact", "params": "last_layer", "damping": 0.01}),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the child process


def _problem(kind: str, quick: bool):
    """Model, train and test sets of a case (the model at its seeded initial weights)."""
    import torch

    from influence_widgets.models.architectures import ModelSpec, mlp_spec

    if kind == "mlp1m":
        from influence_widgets.datasets.tabular import digits

        data = digits()
        n, width = (200, 200) if quick else (1400, 1000)
        model = mlp_spec((64,), 10, depth=2, width=width, activation="tanh").build(seed=0).float().eval()
        train = (data.X_train[:n].float(), data.y_train[:n])
        test = (data.X_test[:30].float(), data.y_test[:30])
        return model, train, test
    g = torch.Generator().manual_seed(0)
    n = 40 if quick else 1000
    X = torch.randn(n + 2, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n + 2,), generator=g)
    model = ModelSpec("resnet18", (3, 32, 32), 10, RESNET_OPTIONS).build(seed=0).float().eval()
    return model, (X[:n], y[:n]), (X[n:], y[n:])


def child(case: Case, quick: bool, threads: int, save: str | None) -> dict[str, Any]:
    import resource
    import warnings

    import torch

    import influence_widgets as iw

    torch.set_num_threads(threads)
    model, train, test = _problem(case.model, quick)
    p = sum(q.numel() for q in model.parameters())
    setup_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trust findings (initial weights: not stationary)
        res = iw.influence(model, train, test, return_result=True, **case.options)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    values = res.values
    if save:
        torch.save(values, save)
    diag = res.diagnostics
    keep = ("iterations", "steps", "rank", "n_params", "factorization", "scale")
    return {"case": case.name, "seconds": seconds, "cpu_seconds": cpu, "peak_bytes": peak,
            "setup_bytes": setup_rss, "p": p, "n_params": int(diag.get("n_params", p)),
            "n_train": int(train[0].shape[0]), "n_test": int(test[0].shape[0]),
            "itemsize": 4, "shape": list(values.shape),
            "finite": bool(torch.isfinite(values).all()),
            "diagnostics": {k: diag[k] for k in keep if k in diag},
            "code": str(Path(iw.__file__).resolve().parent.parent)}


# ----------------------------------------------------------------------------- the parent


def run_case(case: Case, args, pythonpath: str | None = None, save: str | None = None) -> dict[str, Any]:
    """One case in a fresh process (cwd and ``PYTHONPATH`` at ``pythonpath`` when given)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", case.name,
           "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
    if save:
        cmd += ["--save", save]
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    log(f"== {case.name}" + (f" (code in {pythonpath})" if pythonpath else "") + " ...")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=pythonpath or None)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"case": case.name, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}"}
    out = json.loads(lines[-1][len("RESULT "):])
    log(f"   {out['seconds']:.1f} s, peak RSS {out['peak_bytes'] / GIB:.2f} GiB")
    return out


def fmt_row(label: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"| {label} | — | — | — | — | — | failed: {r['error'][-200:]} |"
    matrix = r["n_train"] * r["n_params"] * r["itemsize"]
    d = ", ".join(f"{k} {v}" for k, v in r["diagnostics"].items() if k != "n_params")
    return (f"| {label} | {r['n_params']:,} | {r['n_train']:,} x {r['n_test']} | "
            f"{r['seconds']:.1f} s ({r['cpu_seconds']:.0f} s CPU) | {r['peak_bytes'] / GIB:.2f} GiB "
            f"({r['setup_bytes'] / GIB:.2f} after set-up) | {matrix / GIB:.2f} GiB | {d} |")


NOTES = [
    "Notes:",
    "",
    "- MLP: seeded initial weights (seed 0), float32; digits standardised, the first 1,400 training "
    "and 30 test rows; damping 0.01. ResNet-18: torchvision's for small images (3x3 stem, no "
    "max-pool) with GroupNorm (2 groups), seeded initial weights, float32; 1,000 synthetic 3x32x32 "
    "images (standard normal, random labels) and 2 test images; Gauss-Newton curvature, damping 0.01.",
    "- Layers: nothing needed care. Per-sample gradients (a vmapped forward over per-row parameter "
    "copies) and Gauss-Newton products (a double backward) go through GroupNorm, ReLU and the "
    "residual adds as they are; BatchNorm in eval mode works the same way (checked: per-sample "
    "gradients, Hessian and Gauss-Newton products). The Hessian route works too and a product costs "
    "about the same as a Gauss-Newton one here (2.6 s of CPU for 2 vectors over 12 images, both), "
    "but at initial weights the Hessian is in general indefinite (CG would stop at negative "
    "curvature), so the full-parameter rows use the Gauss-Newton curvature (positive semi-definite).",
    "- Where the memory goes: about 0.9 GiB is torch, the model and the data ('after set-up'). "
    "Full-parameter rows: one chunk of per-sample gradients (6 images: 6 x 11.2M x 4 B = 0.27 GB, "
    "about 2.4 times that at its peak) or one Gauss-Newton product's graph (12 images), plus the "
    "solver's n_test x p vectors (Arnoldi: its 6 Lanczos vectors). MLP: 62 rows per chunk "
    "(0.27 GB of gradients) and the CG block of 30 vectors. The last-layer row: chunks are sized "
    "from p (5,130) alone, so all 1,000 images go through the network in one forward; its "
    "1.5 GiB above set-up are mostly those activations (a plain forward of the 1,000 images: "
    "1.2 GiB), not gradients.",
    "- Where the time goes (ResNet): per-sample gradients of all 1,000 images (about 0.25 s of CPU "
    "each, paid once per call), and each Gauss-Newton product over 1,000 images (about 0.2 s of "
    "CPU per image with 2 vectors, its graph rebuilt chunk by chunk: CG and LiSSA take 3 products "
    "with 2 vectors, Arnoldi 6 with one).",
]


def report(rows: list[tuple[str, dict[str, Any]]], args, started, load0, load1, extra: list[str]) -> str:
    cmd = "python benchmarks/bench_memory.py" + (" --quick" if args.quick else "") + (
        " --baseline DIR" if args.baseline else "") + (f" --cases {args.cases}" if args.cases else "")
    lines = [
        "## Memory: streamed training gradients",
        "",
        date_line(started, args.quick),
        f"- machine: {machine()}, "
        f"{_total_memory()}, torch {_torch_version()} ({args.threads} thread(s)), "
        f"device cpu; load average {load0[0]:.1f} at start, {load1[0]:.1f} at end (a shared machine: "
        "wall times stretch with the load, CPU times less)",
        f"- command: `{cmd}`" + (f"; DIR = {args.baseline} (the code before streaming)" if args.baseline else ""),
        "- each row is a fresh process: peak = its `ru_maxrss` (torch's import, the model and the data "
        "included; 'after set-up' is the peak before `iw.influence` is called); time = the "
        "`iw.influence` call alone; 'n x p matrix' = what the per-sample training gradients would "
        "take if held at once (the code before streaming held them, twice over while joining chunks)",
        "",
        "| case | parameters | train x test | time | peak RSS | n x p matrix | solver |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [fmt_row(label, r) for label, r in rows]
    return "\n".join(lines + [""] + extra + ([""] if extra else []) + NOTES) + "\n"


def _torch_version() -> str:
    import torch

    return torch.__version__


def _total_memory() -> str:
    try:
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        return f"{kb / 2**20:.0f} GiB memory"
    except (OSError, IndexError, ValueError):
        return "memory unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small models and data: a smoke check")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads in each case's process (default 1: on a shared machine more "
                    "threads stall each other)")
    ap.add_argument("--baseline", default=None,
                    help="a checkout of the code before streaming: also run mlp1m on it (needs ~17 GiB)")
    ap.add_argument("--cases", default=None, help=f"comma-separated subset of {', '.join(CASES)}")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--save", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(CASES[args.child], args.quick, args.threads, args.save)), flush=True)
        return 0
    if args.out is None:
        args.out = RESULTS.with_name("memory-quick.md") if args.quick else RESULTS
    names = args.cases.split(",") if args.cases else list(CASES)
    unknown = [c for c in names if c not in CASES]
    if unknown:
        ap.error(f"unknown cases {unknown}; valid: {', '.join(CASES)}")
    load0, started = os.getloadavg(), dt.datetime.now().astimezone()
    rows, extra = [], []
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline and "mlp1m" in names:
            before = run_case(CASES["mlp1m"], args, str(Path(args.baseline).resolve()), f"{tmp}/before.pt")
            after = run_case(CASES["mlp1m"], args, save=f"{tmp}/after.pt")
            rows += [(CASES["mlp1m"].label + ", before (whole matrix)", before),
                     (CASES["mlp1m"].label + ", after (streamed)", after)]
            extra += _compare(before, after, f"{tmp}/before.pt", f"{tmp}/after.pt")
            names = [c for c in names if c != "mlp1m"]
        for name in names:
            rows.append((CASES[name].label, run_case(CASES[name], args)))
    text = report(rows, args, started, load0, os.getloadavg(), extra)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 1 if any("error" in r for _, r in rows) else 0


def _compare(before: dict, after: dict, a: str, b: str) -> list[str]:
    if "error" in before or "error" in after:
        return []
    import torch

    x, y = torch.load(a), torch.load(b)
    err = float((x - y).abs().max() / y.abs().max())
    return [f"Before vs after on the MLP: {before['peak_bytes'] / after['peak_bytes']:.1f}x less peak "
            f"memory, {before['seconds'] / after['seconds']:.1f}x less time; the two score matrices "
            f"differ by {err:.1e} (max |difference| / max |score|, float32)."]


if __name__ == "__main__":
    raise SystemExit(main())
