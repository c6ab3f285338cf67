"""Equal-error benchmark: every solver family against pyDVL 0.10.0 and dattri 0.3.0, each library
at its own cheapest setting that reaches the same error against the exact solve.

    python benchmarks/bench_equal_error.py [--quick] [--repeats N] [--threads N]

Problems (float64, every training point x every test point):

- ``iris-mlp-d2-w5-wd`` and ``iris-mlp-d4-w5-wd`` (the zoo's presets: 120 train x 30 test,
  73 and 133 parameters, weight decay 0.005, damping 0);
- the digits MLP of the ground-truth study (64-32-10 tanh, weight decay 0.01, 500 full-batch Adam
  steps; all 1,438 training x 100 test points, 2,410 parameters, damping 0.01): large enough
  that fixed overheads do not decide the comparison.

Families and targets (max |S - S_exact| / max |S_exact| over the score matrix, against this
engine's exact float64 answer): exact (every library at rounding), CG (1e-6), Arnoldi (1e-2),
LiSSA (2e-2, Iris d2 only: thousands of full-batch steps per setting). Every library walks
a ladder of its own settings from cheap to expensive and keeps the first that reaches the target
(CG: this engine's ``tol``, pyDVL's ``rtol``, dattri's ``max_iter``; Arnoldi: the rank /
``proj_dim``; LiSSA: the recursion depth, full batch and the same scale for all three: the same
recursion). Then the chosen settings run interleaved, ``--repeats`` rounds, each run from scratch
(fresh engine, influence model or attributor), and the time is the median CPU time of one
thread (``time.process_time``): robust to the other jobs on a shared machine. The peers return
``n`` times this engine's score (pyDVL's ``influences(mode="up")``, dattri's ``attribute``); the
benchmark divides by ``n`` and checks the sign and scale on the exact rows.

Writes ``benchmarks/results/equal_error.md`` (``equal_error-quick.md`` with ``--quick``: the two
Iris models, exact and CG only).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # the peers' progress bars

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _report import date_line, machine  # noqa: E402  (benchmarks/ is on sys.path)
from torch import nn  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "equal_error.md"
TARGETS = {"exact": 1e-6, "cg": 1e-6, "arnoldi": 1e-2, "lissa": 2e-2}  # dattri returns float32
SLOW = 60.0  # seconds: a ladder stops at a setting whose single run took longer


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Problem:
    name: str
    model: nn.Module
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    weight_decay: float
    damping: float
    exact: torch.Tensor | None = None
    top: float = 1.0  # largest eigenvalue of H + (weight decay + damping) I
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.train[0].shape[0]

    @property
    def p(self) -> int:
        return sum(q.numel() for q in self.model.parameters())

    @property
    def reg(self) -> float:
        return self.weight_decay + self.damping

    @property
    def size(self) -> str:
        return f"{self.n:,} train x {self.test[0].shape[0]} test, {self.p:,} parameters"


def zoo_problem(name: str) -> Problem:
    from influence_widgets.models import zoo

    tm = zoo.load(name)
    d = tm.data
    return Problem(name, tm.model.eval(), (tm.X_train, tm.y_train),
                   (d.X_test.to(torch.float64), d.y_test), tm.config.weight_decay, 0.0)


def digits_problem() -> Problem:
    from influence_widgets.experiments import PRESETS, load_data, train_case
    from influence_widgets.experiments.studies import GROUND_TRUTH_MODELS, ground_truth_model_case

    opts = {**PRESETS["ground_truth"]["quick"], "train_size": None, "test_size": 100}
    mc = ground_truth_model_case("digits_mlp", 0, opts)
    data = load_data(mc.dataset, **mc.data_options)
    tm = train_case(mc, data)
    m = GROUND_TRUTH_MODELS["digits_mlp"]
    return Problem("digits MLP 64-32-10", tm.model.eval(), (data.X_train.double(), data.y_train),
                   (data.X_test.double()[:100], data.y_test[:100]), m.weight_decay, m.damping)


# ----------------------------------------------------------------------------- the libraries


def ours(solver: str, **fixed: Any) -> Callable[[Problem, dict], torch.Tensor]:
    def run(pb: Problem, setting: dict) -> torch.Tensor:
        import influence_widgets as iw

        return iw.influence(pb.model, pb.train, pb.test, weight_decay=pb.weight_decay,
                            solver=solver, damping=pb.damping, **fixed, **setting)
    return run


def _loader(data, batch: int):
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(TensorDataset(*data), batch_size=batch, shuffle=False)


def pydvl(kind: str) -> Callable[[Problem, dict], torch.Tensor]:
    def run(pb: Problem, setting: dict) -> torch.Tensor:
        from pydvl.influence.torch import (
            ArnoldiInfluence,
            CgInfluence,
            DirectInfluence,
            LissaInfluence,
        )

        cls = {"exact": DirectInfluence, "cg": CgInfluence, "arnoldi": ArnoldiInfluence,
               "lissa": LissaInfluence}[kind]
        setting = dict(setting)
        batch = setting.pop("batch", pb.n)
        inf = cls(pb.model, F.cross_entropy, regularization=pb.reg, **setting)
        inf = inf.fit(_loader(pb.train, batch))
        return inf.influences(pb.test[0], pb.test[1], pb.train[0], pb.train[1]) / pb.n
    return run


def dattri(kind: str) -> Callable[[Problem, dict], torch.Tensor]:
    def run(pb: Problem, setting: dict) -> torch.Tensor:
        from dattri.algorithm.influence_function import (
            IFAttributorArnoldi,
            IFAttributorCG,
            IFAttributorExplicit,
            IFAttributorLiSSA,
        )
        from dattri.task import AttributionTask
        from torch.func import functional_call

        # its Arnoldi projector is float32 whatever the model's dtype: a float32 copy there
        dtype = torch.float32 if kind == "arnoldi" else torch.float64
        model = copy.deepcopy(pb.model).to(dtype)
        train = (pb.train[0].to(dtype), pb.train[1])
        test = (pb.test[0].to(dtype), pb.test[1])

        def loss_func(params, data):
            x, y = data  # dattri's LiSSA hands the data over as float32: restore the dtype
            return F.cross_entropy(functional_call(model, params, (x.to(dtype),)), y.long())

        task = AttributionTask(loss_func=loss_func, model=model, checkpoints=model.state_dict())
        if kind == "exact":
            att = IFAttributorExplicit(task, regularization=pb.reg)
        elif kind == "cg":
            att = IFAttributorCG(task, regularization=pb.reg, tol=0.0, **setting)
        elif kind == "arnoldi":
            att = IFAttributorArnoldi(task, regularization=pb.reg, **setting)
        else:  # its damping d solves (H + d * scaling I)
            att = IFAttributorLiSSA(task, batch_size=pb.n, num_repeat=1,
                                    damping=pb.reg / setting["scaling"], **setting)
        att.cache(_loader(train, pb.n))
        with torch.no_grad():
            scores = att.attribute(_loader(train, pb.n), _loader(test, len(test[0])))
        return scores.T.to(torch.float64) / pb.n
    return run


@dataclass
class Method:
    family: str
    library: str
    label: str
    run: Callable[[Problem, dict], torch.Tensor]
    ladder: Callable[[Problem], list[dict]]


def _lissa_scale(pb: Problem) -> float:
    return float(f"{1.2 * pb.top:.2g}")  # the same for every library: the same recursion


LISSA_DEPTHS = (500, 1000, 2000, 5000, 10000, 20000)
RANKS = (5, 10, 20, 40, 60, 100, 200, 400)

METHODS = [
    Method("exact", "influence_widgets", "this engine: exact", ours("exact"), lambda pb: [{}]),
    Method("exact", "pydvl", "pyDVL: DirectInfluence", pydvl("exact"),
           lambda pb: [{"batch": pb.n if pb.p < 500 else 64}]),
    Method("exact", "dattri", "dattri: IFAttributorExplicit", dattri("exact"),
           lambda pb: [{}] if pb.p < 500 else []),
    Method("cg", "influence_widgets", "this engine: block CG", ours("cg", max_iter=5000),
           lambda pb: [{"tol": t} for t in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-10)]),
    Method("cg", "pydvl", "pyDVL: CgInfluence", pydvl("cg"),
           lambda pb: [{"rtol": t, "atol": 0.0, "maxiter": 5000, "warn_on_max_iteration": False,
                        "solve_simultaneously": simul}
                       for simul in (True, False) for t in (1e-3, 1e-4, 1e-5, 1e-6, 1e-8, 1e-10)]),
    Method("cg", "dattri", "dattri: IFAttributorCG", dattri("cg"),
           lambda pb: [{"max_iter": k} for k in (10, 20, 50, 100, 200, 500, 1000, 2000)]),
    Method("arnoldi", "influence_widgets", "this engine: Arnoldi", ours("arnoldi"),
           lambda pb: [{"rank": r} for r in RANKS if r < pb.p]),
    Method("arnoldi", "pydvl", "pyDVL: ArnoldiInfluence", pydvl("arnoldi"),
           lambda pb: [{"rank": r} for r in RANKS if r < pb.p]),
    Method("arnoldi", "dattri", "dattri: IFAttributorArnoldi", dattri("arnoldi"),
           lambda pb: [{"proj_dim": r, "max_iter": max(100, 2 * r)} for r in RANKS if r < pb.p]),
    Method("lissa", "influence_widgets", "this engine: LiSSA", ours("lissa", batch_size=None),
           lambda pb: [{"steps": k, "scale": _lissa_scale(pb)} for k in LISSA_DEPTHS]),
    Method("lissa", "pydvl", "pyDVL: LissaInfluence", pydvl("lissa"),
           lambda pb: [{"maxiter": k, "scale": _lissa_scale(pb), "rtol": 0.0,
                        "warn_on_max_iteration": False} for k in LISSA_DEPTHS]),
    Method("lissa", "dattri", "dattri: IFAttributorLiSSA", dattri("lissa"),
           lambda pb: [{"recursion_depth": k, "scaling": _lissa_scale(pb)} for k in LISSA_DEPTHS]),
]


def describe(setting: dict) -> str:
    shown = {k: v for k, v in setting.items() if k not in ("warn_on_max_iteration", "atol")}
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in shown.items()) or "—"


# ----------------------------------------------------------------------------- measuring


def rel_err(S: torch.Tensor, ref: torch.Tensor) -> float:
    S = S.detach().to("cpu", torch.float64)
    return float((S - ref).abs().max() / ref.abs().max())


def cpu(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.process_time()
    out = fn()
    return time.process_time() - t, out


@dataclass
class Found:
    method: Method
    setting: dict | None
    error: float | None
    note: str = ""
    times: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> float | None:
        return statistics.median(self.times) if self.times else None


def climb(m: Method, pb: Problem, target: float) -> Found:
    """The first setting of ``m``'s ladder whose error is within ``target``."""
    best: tuple[float, dict] | None = None
    for setting in m.ladder(pb):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sec, S = cpu(lambda s=setting: m.run(pb, s))
        except Exception as e:  # noqa: BLE001 - report and go on
            return Found(m, None, None, f"failed at {describe(setting)}: {type(e).__name__}: "
                         f"{str(e)[:100]}")
        err = rel_err(S, pb.exact)
        log(f"      {describe(setting)}: error {err:.1e} ({sec:.2f} s)")
        if err <= target:
            return Found(m, setting, err)
        if best is None or err < best[0]:
            best = (err, setting)
        if sec > SLOW:
            break
    if best is None:
        return Found(m, None, None, "not run at this size (see the notes)")
    return Found(m, None, best[0], f"never reached {target:g}: best {best[0]:.1e} at "
                 f"{describe(best[1])}")


def race(found: list[Found], pb: Problem, repeats: int) -> None:
    """The chosen settings, interleaved: ``repeats`` rounds of one run each."""
    runnable = [f for f in found if f.setting is not None]
    for _ in range(repeats):
        for f in runnable:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                f.times.append(cpu(lambda f=f: f.method.run(pb, f.setting))[0])


def prepare(pb: Problem) -> None:
    import influence_widgets as iw

    res = iw.influence(pb.model, pb.train, pb.test, weight_decay=pb.weight_decay,
                       solver="exact", damping=pb.damping, return_result=True)
    pb.exact = res.values.to(torch.float64)
    pb.top = res.diagnostics["top_eigenvalue"] + pb.damping
    pb.info.update(min_eigenvalue=res.diagnostics.get("min_eigenvalue"))


# ----------------------------------------------------------------------------- report


def fmt_t(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="Iris only, exact and CG")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds (median)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--families", default=None, help="comma-separated subset of " + ",".join(TARGETS))
    ap.add_argument("--problems", default=None, help="comma-separated subset: d2,d4,digits")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out or (RESULTS.with_name("equal_error-quick.md") if args.quick else RESULTS)
    started, load0 = dt.datetime.now().astimezone(), os.getloadavg()
    families = (args.families.split(",") if args.families else
                ["exact", "cg"] if args.quick else list(TARGETS))
    which = args.problems.split(",") if args.problems else (
        ["d2", "d4"] if args.quick else ["d2", "d4", "digits"])
    makers = {"d2": lambda: zoo_problem("iris-mlp-d2-w5-wd"),
              "d4": lambda: zoo_problem("iris-mlp-d4-w5-wd"), "digits": digits_problem}
    import importlib.metadata as md

    versions = "; ".join(f"{lib} {md.version(lib)}" for lib in ("pydvl", "dattri"))
    warm = zoo_problem("iris-mlp-d1-w5-wd")
    prepare(warm)
    for m in METHODS:  # one-time imports and first-call costs, before any timing
        if m.family in families and m.family != "lissa":
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    m.run(warm, m.ladder(warm)[0])
            except Exception as e:  # noqa: BLE001
                log(f"warm-up of {m.label} failed: {e}")
    rows: list[tuple[Problem, str, list[Found]]] = []
    for key in which:
        pb = makers[key]()
        log(f"== {pb.name}: {pb.size}")
        prepare(pb)
        for fam in families:
            if fam == "lissa" and key != "d2":
                continue  # thousands of full-batch steps per setting: Iris d2 only
            log(f"   {fam} (target {TARGETS[fam]:g})")
            found = []
            for m in (m for m in METHODS if m.family == fam):
                log(f"   {m.label}")
                found.append(climb(m, pb, TARGETS[fam]))
            slow = key == "digits" or fam == "lissa"
            race(found, pb, max(3, args.repeats // 2) if slow else args.repeats)
            rows.append((pb, fam, found))
    text = report(rows, args, started, load0, versions)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return 0


def report(rows, args, started, load0, versions: str) -> str:
    load1 = os.getloadavg()
    cmd = "python benchmarks/bench_equal_error.py" + (" --quick" if args.quick else "")
    lines = [
        "# Equal-error benchmark: pyDVL and dattri, every solver family",
        "",
        date_line(started, args.quick),
        f"- machine: {machine()}, torch {torch.__version__} ({args.threads} thread(s)), device "
        f"cpu; load average {load0[0]:.1f} at start, {load1[0]:.1f} at end",
        f"- command: `{cmd}`",
        f"- peers: {versions}",
        "- error: max |S - S_exact| / max |S_exact| against this engine's exact float64 scores; "
        "targets: " + ", ".join(f"{k} {v:g}" for k, v in TARGETS.items()) + "; every library at "
        "the first setting of its own ladder (cheap to expensive) that reaches the target",
        f"- time: median CPU time of one thread over {args.repeats} interleaved rounds "
        f"({max(3, args.repeats // 2)} on digits and for LiSSA), each run from scratch (fit + all "
        "scores), after a warm-up on Iris d1",
        "- LiSSA: full batch and the same scale (1.2 x the top eigenvalue of H + damping) in "
        "every library, so all three run the same recursion; Iris d2 only (thousands of "
        "full-batch steps per setting)",
        "- dattri's Arnoldi runs on a float32 copy (its projector is float32 whatever the "
        "model's dtype; a float64 model fails in it)",
        "",
        "| problem | sizes | family | method | setting | error | time | peer / this engine |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for pb, fam, found in rows:
        ours_f = next((f for f in found if f.method.library == "influence_widgets"), None)
        for f in found:
            ratio = "—"
            if f.method.library != "influence_widgets" and f.seconds and ours_f and ours_f.seconds:
                ratio = f"{f.seconds / ours_f.seconds:.2f}x"
            err = "—" if f.error is None else f"{f.error:.1e}"
            setting = describe(f.setting) if f.setting is not None else f.note
            lines.append(f"| {pb.name} | {pb.size} | {fam} | {f.method.label} | {setting} | {err} "
                         f"| {fmt_t(f.seconds)} | {ratio} |")
    lines += ["", "Notes:", "",
              "- dattri's explicit attributor vmaps `torch.func.hessian` over every tangent at "
              "once: not run above 500 parameters (tens of GB on the digits MLP); pyDVL's "
              "DirectInfluence runs there with batches of 64 rows.",
              "- pyDVL's CgInfluence ladder tries its block variant (`solve_simultaneously=True`) "
              "first, then its default (one test vector at a time); this engine's CG is a block "
              "CG over all test vectors; dattri's CG runs a fixed number of iterations (`tol=0`)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
