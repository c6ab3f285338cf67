"""Peers benchmark: this engine's K-FAC and EK-FAC against Kronfluence, dattri and pyDVL, and LDS
scoring against dattri's metric, on the models of the ground-truth study (notebook 08).

    python benchmarks/bench_peers.py [--quick] [--threads N] [--repeats N]

Models (``influence_widgets.experiments.studies.GROUND_TRUTH_MODELS``, quick-preset sizes, float64):
``iris_mlp`` (4-5-3 tanh MLP, weight decay 0.005, L-BFGS; 120 training and all 30 test points)
and ``digits_mlp`` (64-32-10 tanh MLP, weight decay 0.01, 500 full-batch Adam steps; 300
training and 100 test points, and ``digits_mlp_full``: all 1,438 training points, where fixed
overheads no longer decide). Every method scores every training point for every test point.

Methods, each in its own fresh process (so peaks are separate):

- this engine: ``InfluenceEngine(...).scores(solver="kfac" | "ekfac", fisher="empirical")``
  (EK-FAC with ``basis="kfac"``: K-FAC's eigenbasis, as the peers);
- Kronfluence 1.0.1: ``fit_all_factors`` + ``compute_pairwise_scores`` (strategy "kfac" /
  "ekfac", ``use_empirical_fisher=True``, every dtype float64, factors written to a temporary
  folder as Kronfluence always does);
- dattri 0.3.0: ``IFAttributorEKFAC`` (its only factored attributor; all Linear layers, the true
  labels, i.e. the empirical Fisher);
- pyDVL 0.10.0: ``EkfacInfluence(update_diagonal=True)`` with its own Fisher, on a float32 copy
  (its factors are float32); against this engine's default EK-FAC (the GGN Fisher in the
  nearest Kronecker product's eigenbasis), both
  compared with the exact scores (Spearman), as the matrices differ.

Same conventions everywhere: the empirical Fisher (true labels: Kronfluence's default draws
labels from the model, dattri has no such option, and two libraries' random draws would differ),
and the damping mapped so that each library inverts the same matrix: ``C + (weight_decay +
damping) I`` (Kronfluence ``damping_factor``, dattri ``damping``), with the model's own damping
(0 on Iris, 0.01 on digits). Both peers return ``g_train^T (C + lambda I)^{-1} g_test`` for the
summed loss, ``n`` times this engine's score with the same sign (positive: the training point
helps); the benchmark measures the scale (``<S, ours> / <ours, ours> / n``, 1 when mapped) and
divides by ``n`` before comparing.

Reported per method: time (best of ``--repeats`` runs in the same process, fit + all scores,
after a warm-up run on 16 training and 2 test points that pays one-time lazy imports), peak RSS
of its process (``ru_maxrss``, imports included) and working memory (the resident high-water
mark of the first measured run, reset just before it through ``/proc/self/clear_refs``, minus the
resident size then), agreement with
this engine's same strategy (relative Frobenius error and Pearson over the whole score matrix),
and the LDS of its scores (mean over test points, with its standard error) on one set of
retrains: ``iw.ground_truth.lds`` (24 half subsets, from scratch; 12 with ``--quick``). The same
retrains are then scored by dattri's ``dattri.metric.lds`` (which sums the scores of the *kept*
points against a target where higher is better: ``-actual`` here) and by ours, and the two LDS
compared. A peer that is not installed is skipped with a note (``pip install -e '.[bench]'``).
Writes ``benchmarks/results/peers.md`` (``peers-quick.md`` with ``--quick``: Iris only).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from _report import date_line, machine  # noqa: E402  (benchmarks/ is on sys.path)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "peers.md"
PROBLEMS = ("iris_mlp", "digits_mlp", "digits_mlp_full")
#: problem -> (study model, sizes): digits_mlp at the quick preset's 300 x 100, and at the full
#: 1,438 training points (where fixed overheads no longer decide)
SIZES = {"iris_mlp": ("iris_mlp", {}), "digits_mlp": ("digits_mlp", {}),
         "digits_mlp_full": ("digits_mlp", {"train_size": None, "test_size": 100})}
#: key -> (label, library, strategy)
METHODS = {
    "ours_kfac": ("this engine: K-FAC", "influence_widgets", "kfac"),
    "kron_kfac": ("Kronfluence: K-FAC", "kronfluence", "kfac"),
    "ours_ekfac": ("this engine: EK-FAC", "influence_widgets", "ekfac"),
    "kron_ekfac": ("Kronfluence: EK-FAC", "kronfluence", "ekfac"),
    "dattri_ekfac": ("dattri: EK-FAC (IFAttributorEKFAC)", "dattri", "ekfac"),
    "ours_ekfac_default": ("this engine: EK-FAC, default (GGN Fisher, nearest Kronecker basis)",
                           "influence_widgets",
                           "ekfac_default"),
    "pydvl_ekfac": ("pyDVL: EK-FAC (EkfacInfluence, its own Fisher, float32)", "pydvl", "ekfac"),
}
INSTALL = "pip install -c constraints.txt -e '.[bench]'"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def available(library: str) -> tuple[bool, str]:
    """Whether ``library`` is installed, and its version or why it is skipped."""
    if importlib.util.find_spec(library) is None:
        return False, f"{library} is not installed ({INSTALL}); its rows are skipped"
    try:
        return True, f"{library} {importlib.metadata.version(library)}"
    except importlib.metadata.PackageNotFoundError:
        return True, library


# ----------------------------------------------------------------------------- the problems


def make_problem(name: str, path: Path) -> dict[str, Any]:
    """Train the study's model ``name`` (quick-preset sizes) and save what a child needs."""
    import torch

    from influence_widgets.experiments import PRESETS, load_data, train_case
    from influence_widgets.experiments.studies import GROUND_TRUTH_MODELS, ground_truth_model_case

    study, sizes = SIZES[name]
    m = GROUND_TRUTH_MODELS[study]
    mc = ground_truth_model_case(study, 0, {**PRESETS["ground_truth"]["quick"], **sizes})
    data = load_data(mc.dataset, **mc.data_options)
    tm = train_case(mc, data)
    f64 = torch.float64  # the model's dtype: the peers do not cast the data
    n_test = sizes.get("test_size") or data.X_test.shape[0]
    pb = {"name": name, "model": tm.model.eval(), "train": (data.X_train.to(f64), data.y_train),
          "test": (data.X_test.to(f64)[:n_test], data.y_test[:n_test]), "wd": m.weight_decay,
          "damping": m.damping,
          "n": int(data.X_train.shape[0]), "p": sum(q.numel() for q in tm.model.parameters())}
    torch.save(pb, path)
    return {**pb, "tm": tm}


# ----------------------------------------------------------------------------- the methods


def run_ours(pb: dict[str, Any], strategy: str, workdir: str):
    from influence_widgets.influence import InfluenceEngine

    engine = InfluenceEngine(pb["model"], pb["train"], weight_decay=pb["wd"])
    if strategy == "ekfac_default":
        return engine.scores(pb["test"], solver="ekfac", damping=pb["damping"]).values
    basis = {"basis": "kfac"} if strategy == "ekfac" else {}  # Kronfluence's eigenbasis
    return engine.scores(pb["test"], solver=strategy, damping=pb["damping"],
                         fisher="empirical", **basis).values


def run_pydvl(pb: dict[str, Any], strategy: str, workdir: str):
    """pyDVL 0.10.0's EkfacInfluence (update_diagonal=True: EK-FAC), on a float32 copy: its
    factors are allocated in float32 whatever the model's dtype (a float64 model fails in its
    eigenvalue correction). Its Fisher is its own (the gradient of sum_k sqrt(p_k) log p_k per
    row), so its scores are compared with the exact ones, not with ours."""
    import torch
    from pydvl.influence.torch import EkfacInfluence
    from torch.utils.data import DataLoader, TensorDataset

    model = copy.deepcopy(pb["model"]).float()
    (X, y), (Xt, yt) = pb["train"], pb["test"]
    inf = EkfacInfluence(model, update_diagonal=True,
                         hessian_regularization=pb["wd"] + pb["damping"])
    inf = inf.fit(DataLoader(TensorDataset(X.float(), y), batch_size=128))
    return (inf.influences(Xt.float(), yt, X.float(), y) / X.shape[0]).to(torch.float64)


def run_kronfluence(pb: dict[str, Any], strategy: str, workdir: str):
    import kronfluence
    import torch
    import torch.nn.functional as F
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from torch.utils.data import TensorDataset

    class Task(kronfluence.Task):
        def compute_train_loss(self, batch, model, sample=False):
            x, y = batch  # use_empirical_fisher=True: never asked to sample
            return F.cross_entropy(model(x), y, reduction="sum")

        def compute_measurement(self, batch, model):
            x, y = batch
            return F.cross_entropy(model(x), y, reduction="sum")

    task = Task()
    model = prepare_model(copy.deepcopy(pb["model"]), task)
    analyzer = Analyzer("peers", model, task, cpu=True, disable_tqdm=True, output_dir=workdir,
                        log_level=logging.WARNING)
    f64 = torch.float64
    factor_args = FactorArguments(
        strategy=strategy, use_empirical_fisher=True, activation_covariance_dtype=f64,
        gradient_covariance_dtype=f64, eigendecomposition_dtype=f64,
        per_sample_gradient_dtype=f64, lambda_dtype=f64)
    score_args = ScoreArguments(damping_factor=pb["wd"] + pb["damping"],
                                per_sample_gradient_dtype=f64, precondition_dtype=f64,
                                score_dtype=f64)
    train, test = TensorDataset(*pb["train"]), TensorDataset(*pb["test"])
    analyzer.fit_all_factors("factors", train, per_device_batch_size=128,
                             factor_args=factor_args, overwrite_output_dir=True)
    analyzer.compute_pairwise_scores("scores", "factors", test, train,
                                     per_device_query_batch_size=128,
                                     per_device_train_batch_size=128, score_args=score_args,
                                     overwrite_output_dir=True)
    return analyzer.load_pairwise_scores("scores")["all_modules"]


def _dattri_ekfac(model, train, test, damping: float, fix: str = "none"):
    """dattri's EK-FAC scores ``(n_test, n_train)`` (n x ours when its conventions match).
    ``fix`` (a check of its conventions, see :func:`dattri_convention_check`): "eigenvectors"
    hands it the transposes of torch.linalg.eigh's eigenvector matrices; "both" also lays the
    test gradient out as ``[W | b]`` (:func:`_wb_transform`)."""
    import dattri.func.fisher as fisher
    import torch
    import torch.nn.functional as F
    from dattri.algorithm.influence_function import IFAttributorEKFAC
    from dattri.task import AttributionTask
    from torch.func import functional_call
    from torch.utils.data import DataLoader, TensorDataset

    model = copy.deepcopy(model)

    def loss_func(params, batch):
        x, y = batch
        return F.cross_entropy(functional_call(model, params, (x,)), y.long())

    task = AttributionTask(loss_func=loss_func, model=model, checkpoints=model.state_dict())
    att = IFAttributorEKFAC(task, damping=damping)
    n = train[0].shape[0]
    original = fisher.estimate_eigenvector
    if fix != "none":
        fisher.estimate_eigenvector = lambda cov: {
            k: (qa.T.contiguous(), qs.T.contiguous()) for k, (qa, qs) in original(cov).items()}
    if fix == "both":
        att.transform_test_rep = _wb_transform.__get__(att)
    try:
        att.cache(DataLoader(TensorDataset(*train), batch_size=n))
    finally:
        fisher.estimate_eigenvector = original
    scores = att.attribute(DataLoader(TensorDataset(*train), batch_size=n),
                           DataLoader(TensorDataset(*test), batch_size=test[0].shape[0]))
    return scores.T.to(torch.float64)


def _wb_transform(self, ckpt_idx: int, test_rep):
    """dattri's ``IFAttributorEKFAC.transform_test_rep`` with the test gradient of each layer laid
    out as ``[W | b]`` (the layout of its factors) and put back as ``[W.flatten(), b]`` (the
    layout of its training gradients); every layer is assumed to have a bias."""
    import torch

    params = {k: p for k, p in self.task.model.named_parameters() if p.requires_grad}
    parts, start = {}, 0
    for name in self.layer_name:
        size = math.prod(params[name].shape)
        parts[name] = test_rep[:, start:start + size].reshape(-1, *params[name].shape)
        start += size
    out = []
    for name in self.module_name:
        v = torch.cat([parts[name + ".weight"], parts[name + ".bias"].unsqueeze(-1)], dim=-1)
        q_a, q_s = self.cached_q[name]
        r = q_s.T @ ((q_s @ v @ q_a.T) / (self.cached_lambdas[name] + self.damping)) @ q_a
        out += [r[..., :-1].flatten(1), r[..., -1]]
    return torch.cat(out, dim=1)


def run_dattri(pb: dict[str, Any], strategy: str, workdir: str):
    return _dattri_ekfac(pb["model"], pb["train"], pb["test"], pb["wd"] + pb["damping"])


RUNNERS = {"influence_widgets": run_ours, "kronfluence": run_kronfluence, "dattri": run_dattri,
           "pydvl": run_pydvl}


def _status(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (its high-water mark) of this process, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    """Reset this process's resident high-water mark to its resident size (Linux: writing 5 to
    /proc/self/clear_refs), so a later peak is that of what runs after; False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child(method: str, problem: str, save: str, threads: int, repeats: int) -> dict[str, Any]:
    """Run one method on one problem in this (fresh) process: time, memory, scores."""
    import torch

    torch.set_num_threads(threads)
    label, library, strategy = METHODS[method]
    __import__(library)
    pb = torch.load(problem, weights_only=False)
    run = RUNNERS[library]
    times = []
    small = {**pb, "train": tuple(t[:16] for t in pb["train"]),
             "test": tuple(t[:2] for t in pb["test"])}
    with tempfile.TemporaryDirectory() as work, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trust findings, deprecations of the peers' dependencies
        run(small, strategy, work)  # one-time lazy imports and set-up, before measuring
        reset = _reset_peak()
        before = _status("VmRSS")
        for _ in range(repeats):
            t0 = time.perf_counter()
            scores = run(pb, strategy, work)
            times.append(time.perf_counter() - t0)
            if len(times) == 1:  # the high-water mark since the reset (else since the start)
                first_peak = (_status("VmHWM") if reset else
                              resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    torch.save(torch.as_tensor(scores).detach().to(torch.float64), save)
    return {"seconds": min(times), "first_seconds": times[0], "before": before,
            "working": max(0, first_peak - before), "peak_reset": reset,
            "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def run_child(method: str, problem: Path, save: Path, args) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--problem",
           str(problem), "--save", str(save), "--threads", str(args.threads), "--repeats",
           str(args.repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"failed (exit {out.returncode}): {last[:300]}"}


# ----------------------------------------------------------------------------- comparisons


def agreement(S, ours, n: int) -> dict[str, float]:
    """Scale (``<S, ours> / <ours, ours> / n``: 1 when the conventions map), then the relative
    Frobenius error and the Pearson correlation of ``S / n`` against ``ours``."""
    import torch

    s, o = S.flatten(), ours.flatten()
    scale = float(s @ o / (o @ o)) / n
    rel = float((S / n - ours).norm() / ours.norm())
    pearson = float(torch.corrcoef(torch.stack([s, o]))[0, 1])
    return {"scale": scale, "rel_error": rel, "pearson": pearson}


def exact_scores(pb: dict[str, Any]):
    """This engine's exact scores (the Hessian, the model's damping): what every factored
    method approximates."""
    import influence_widgets as iw

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return iw.influence(pb["model"], pb["train"], pb["test"], weight_decay=pb["wd"],
                            damping=pb["damping"])


def spearman_vs(S, exact) -> float:
    """Mean over test points of the Spearman correlation of a method's scores (whatever their
    scale) with the exact ones, across training points."""
    import numpy as np
    import torch

    from influence_widgets.ground_truth.lds import spearman_rows

    rho = spearman_rows(torch.as_tensor(S, dtype=torch.float64), exact.to(torch.float64))[0]
    rho = rho.numpy()
    return float(np.nanmean(rho))


def lds_of(S, res) -> tuple[float, float]:
    """Mean LDS of scores ``S`` on the retrains of ``res`` (an LDSResult) and its standard error
    over the test points."""
    import numpy as np
    import torch

    from influence_widgets.ground_truth.lds import spearman_rows

    predicted = S.to(torch.float64) @ (~res.subsets).to(torch.float64).T
    rho = spearman_rows(predicted, res.actual)[0].numpy()
    rho = rho[np.isfinite(rho)]
    return float(rho.mean()), float(rho.std(ddof=1) / math.sqrt(len(rho)))


def lds_metrics(pb: dict[str, Any], scores, n_subsets: int) -> dict[str, Any]:
    """One set of LDS retrains (this engine), scored by this engine and by ``dattri.metric.lds``."""
    import numpy as np
    import torch

    import influence_widgets as iw

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = iw.ground_truth.lds(pb["tm"], pb["train"], pb["test"], scores, n_subsets=n_subsets,
                                  mode="scratch", seed=0, store=None, dtype="float64")
    out: dict[str, Any] = {"res": res, "retrain_seconds": time.perf_counter() - t0}
    t0 = time.perf_counter()
    from influence_widgets.ground_truth.lds import spearman_rows

    ours = spearman_rows(scores @ (~res.subsets).to(torch.float64).T, res.actual)[0].numpy()
    out["ours_seconds"] = time.perf_counter() - t0
    ok, why = available("dattri")
    if not ok:
        out["dattri"] = why
        return out
    from dattri.metric import lds as dattri_lds

    kept = torch.stack([torch.nonzero(row).flatten() for row in res.subsets])
    t0 = time.perf_counter()
    theirs = dattri_lds(scores.T, (-res.actual.T, kept))[0].numpy()
    out["dattri_seconds"] = time.perf_counter() - t0
    both = np.isfinite(ours) & np.isfinite(theirs)
    out["max_diff"] = float(np.abs(ours[both] - theirs[both]).max())
    out["mean"] = (float(ours[both].mean()), float(theirs[both].mean()))
    out["n_test"] = int(both.sum())
    return out


def dattri_convention_check(threads: int) -> list[str]:
    """dattri's EK-FAC on a bias-free Iris MLP (seeded weights, empirical Fisher), as it is and
    with the transposes of its eigenvector matrices, against this engine's EK-FAC."""
    import torch
    from torch import nn

    from influence_widgets.datasets.tabular import iris
    from influence_widgets.influence import InfluenceEngine

    torch.manual_seed(0)
    data = iris().to(torch.float64)
    train, test = data.train, (data.X_test[:10], data.y_test[:10])
    lines = []
    fixes = {"none": "as it is", "eigenvectors": "its eigenvector matrices transposed",
             "both": "transposed and the test gradient laid out as [W | b]"}
    for bias in (False, True):
        model = nn.Sequential(nn.Linear(4, 5, bias=bias), nn.Tanh(),
                              nn.Linear(5, 3, bias=bias)).double()
        ours = InfluenceEngine(model, train, weight_decay=0.005).scores(
            test, solver="ekfac", damping=0.01, fisher="empirical", basis="kfac").values
        found = []
        for fix in ("none", "eigenvectors", "both") if bias else ("none", "eigenvectors"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                S = _dattri_ekfac(model, train, test, 0.015, fix)
            a = agreement(S, ours, len(train[0]))
            found.append(f"{fixes[fix]}: relative error {a['rel_error']:.2g}, Pearson "
                         f"{a['pearson']:.3f}")
        what = "with biases" if bias else "without biases"
        lines.append(f"- Iris MLP 4-5-3 {what} (seeded weights, 120 x 10): " + "; ".join(found))
    return lines


# ----------------------------------------------------------------------------- report


def fmt_t(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def fmt_b(b: float | None) -> str:
    if b is None:
        return "—"
    return f"{b / 2**20:.0f} MiB" if b >= 100 * 2**20 else f"{b / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="Iris only, 12 LDS subsets (a smoke check)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in each process")
    ap.add_argument("--repeats", type=int, default=3, help="runs per method (time: the best)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--problems", default=None, help="comma-separated subset of " + ",".join(PROBLEMS))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--problem", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--save", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        result = child(args.child, args.problem, args.save, args.threads, args.repeats)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    import torch

    torch.set_num_threads(args.threads)
    if args.out is None:
        args.out = RESULTS.with_name("peers-quick.md") if args.quick else RESULTS
    started, load0 = dt.datetime.now().astimezone(), os.getloadavg()
    peers = {lib: available(lib) for lib in ("kronfluence", "dattri", "pydvl")}
    problems = PROBLEMS[:1] if args.quick else PROBLEMS
    if args.problems:
        problems = tuple(args.problems.split(","))
    n_subsets = 12 if args.quick else 24
    rows, lds_lines, failed = [], [], False
    with tempfile.TemporaryDirectory() as tmp:
        for name in problems:
            log(f"== {name}")
            pb = make_problem(name, Path(tmp) / f"{name}.pt")
            scores: dict[str, Any] = {}
            for key, (label, library, _) in METHODS.items():
                if library in peers and not peers[library][0]:
                    rows.append((pb, label, {"skip": peers[library][1]}, None))
                    continue
                log(f"   {label} ...")
                save = Path(tmp) / f"{name}-{key}.pt"
                result = run_child(key, Path(tmp) / f"{name}.pt", save, args)
                failed |= "error" in result
                if "error" not in result:
                    scores[key] = torch.load(save)
                rows.append((pb, label, result, key))
            log("   exact scores and LDS retrains ...")
            exact = exact_scores(pb)
            lds = lds_metrics(pb, scores["ours_ekfac"], n_subsets)
            for row_pb, _, result, key in rows:
                if row_pb is not pb or key not in scores:
                    continue
                S, strategy = scores[key], METHODS[key][2]
                same_matrix = not key.startswith(("ours", "pydvl"))  # pyDVL: its own Fisher
                result["agreement"] = (agreement(S, scores[f"ours_{strategy}"], pb["n"])
                                       if same_matrix else None)
                result["lds"] = lds_of(S, lds["res"])
                result["vs_exact"] = spearman_vs(S, exact)
            lds_lines.append(_lds_line(pb, lds, n_subsets))
        check = dattri_convention_check(args.threads) if peers["dattri"][0] else []
    text = report(rows, lds_lines, check, peers, args, started, load0, n_subsets)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 1 if failed else 0


def _lds_line(pb: dict[str, Any], lds: dict[str, Any], n_subsets: int) -> str:
    n_test = pb["test"][0].shape[0]
    head = (f"| {pb['name']} | {n_subsets} x {pb['n'] // 2} kept, {n_test} test points | "
            f"{fmt_t(lds['retrain_seconds'])} | {fmt_t(lds['ours_seconds'])} | ")
    if "dattri" in lds:
        return head + f"— | — | {lds['dattri']} |"
    ours, theirs = lds["mean"]
    return head + (f"{fmt_t(lds['dattri_seconds'])} | {lds['max_diff']:.1e} | mean LDS {ours:.4f} "
                   f"(ours) vs {theirs:.4f} (dattri), {lds['n_test']} test points |")


def report(rows, lds_lines, check, peers, args, started, load0, n_subsets) -> str:
    load1 = os.getloadavg()
    import torch

    lines = [
        "# Peers benchmark: Kronfluence, dattri and pyDVL (K-FAC, EK-FAC)",
        "",
        date_line(started, args.quick),
        f"- machine: {machine()}, "
        f"torch {torch.__version__} ({args.threads} thread(s) per process), "
        f"device cpu; load average {load0[0]:.1f} at start, {load1[0]:.1f} at end",
        f"- command: `python benchmarks/bench_peers.py{' --quick' if args.quick else ''}`",
        "- peers: " + "; ".join(why for _, why in peers.values()),
        "- models: the ground-truth study's (notebook 08, float64): iris_mlp (4-5-3 tanh, weight "
        "decay 0.005; 120 train x 30 test), digits_mlp (64-32-10 tanh, weight decay 0.01, damping "
        "0.01, 500 full-batch Adam steps) at the quick preset's 300 train x 100 test and at all "
        "1,438 training points x 100 test (digits_mlp_full: fixed overheads no longer decide); "
        "every training point x every test point",
        "- Spearman vs exact: mean over test points of the rank correlation with this engine's "
        "exact scores (the Hessian, the model's damping); pyDVL's EK-FAC fits its own Fisher "
        "(float32: its factors are float32 whatever the model's dtype), so only this column and "
        "the time compare it",
        "- same matrix everywhere: empirical Fisher (true labels), damping mapped to weight decay + "
        "damping; peers' scores divided by n (their scale / n is measured, 1 when the conventions "
        "map; same sign)",
        f"- time: best of {args.repeats} runs in one process (fit + all scores), after a warm-up "
        "run on 16 training x 2 test points; peak RSS: the method's own process, imports included; "
        "working memory: the resident high-water mark of the first measured run (reset just "
        "before it) minus the resident size then; Kronfluence's time includes writing its factors "
        "and scores to disk, as it always does",
        f"- LDS: one set of {n_subsets} half-subset retrains from scratch "
        "(`iw.ground_truth.lds`), every method's scores ranked on them (mean ± SE over test points)",
        "",
        "| model | sizes | method | time | peak RSS | working memory | scale / n | rel. error "
        "vs ours | Pearson vs ours | Spearman vs exact | LDS |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pb, label, r, key in rows:
        n_test = pb["test"][0].shape[0]
        head = f"| {pb['name']} | {pb['n']:,} x {n_test}, {pb['p']:,} params | {label} |"
        if "skip" in r or "error" in r:
            lines.append(head + f" — | — | — | — | — | — | — | {r.get('skip') or r['error']} |")
            continue
        a = r.get("agreement")
        if a is None:
            ref = "(own Fisher)" if key.startswith("pydvl") else "(reference)"
            agree = f"{ref} | {ref} | {ref}"
        else:
            agree = f"{a['scale']:.4f} | {a['rel_error']:.1e} | {a['pearson']:.4f}"
        lds = r.get("lds")
        lds_txt = "—" if lds is None else f"{lds[0]:.3f} ± {lds[1]:.3f}"
        vs = r.get("vs_exact")
        vs_txt = "—" if vs is None else f"{vs:.4f}"
        lines.append(head + f" {fmt_t(r['seconds'])} | {fmt_b(r['peak'])} | "
                     f"{fmt_b(r['working'])} | {agree} | {vs_txt} | {lds_txt} |")
    lines += ["", "Time ratios (peer / this engine, same model and strategy, this run):", ""]
    lines += _ratios(rows)
    lines += ["", "## LDS scoring: this engine vs `dattri.metric.lds` on the same retrains", "",
              "dattri sums the scores of the points each subset *keeps* against a target where "
              "higher is better; with this project's convention (positive = the point helps) that "
              "target is minus the retrained test loss, and the two LDS are the same number.", "",
              "| model | retrains | retrain time (ours) | LDS scoring (ours) | LDS scoring (dattri) "
              "| max abs difference | note |", "|---|---|---|---|---|---|---|", *lds_lines]
    if check:
        lines += ["", "## dattri's EK-FAC: a convention check", "",
                  "dattri 0.3.0's `IFAttributorEKFAC` projects gradients as `q_s @ G @ q_a.T` with "
                  "the matrices of `torch.linalg.eigh`, whose eigenvectors are columns (the EK-FAC "
                  "eigenbasis is `q_s.T @ G @ q_a`). Against this engine's EK-FAC (empirical "
                  "Fisher, weight decay 0.005 + damping 0.01):", "", *check, "",
                  "Without biases, transposing its eigenvector matrices makes it agree with this "
                  "engine to float32 rounding (dattri returns float32). With biases a second "
                  "difference remains: its `transform_test_rep` reshapes the concatenated "
                  "`[weight.flatten(), bias]` test gradient to `(out, in + 1)`, which is not the "
                  "`[W | b]` layout of its factors; with both changed it agrees again. The rows "
                  "above use dattri as it is."]
    return "\n".join(lines) + "\n"


def _ratios(rows) -> list[str]:
    by: dict[tuple[str, str], dict[str, Any]] = {}
    for pb, _, r, key in rows:
        if key is not None and "seconds" in r:
            by.setdefault((pb["name"], METHODS[key][2]), {})[key] = r
    out = []
    for (name, strategy), rs in list(by.items()):
        ours = rs.get(f"ours_{strategy}")
        default = by.get((name, "ekfac_default"), {}).get("ours_ekfac_default")
        for key, r in rs.items():
            if key.startswith("pydvl") and default is not None:
                out.append(f"- {name}, {METHODS[key][0]}: {r['seconds'] / default['seconds']:.1f}x "
                           "the time of this engine's default EK-FAC (GGN Fisher, nearest Kronecker "
                           "basis)")
            if ours is None or key.startswith("ours"):
                continue
            t = r["seconds"] / ours["seconds"]
            if min(r["working"], ours["working"]) >= 2**20:
                mem = f"{r['working'] / ours['working']:.1f}x its working memory"
            else:
                mem = "working memory under 1 MiB for one of them: no ratio"
            name_ = strategy.upper().replace("EKFAC", "EK-FAC").replace("KFAC", "K-FAC")
            out.append(f"- {name}, {METHODS[key][0]}: {t:.1f}x the time of this engine's "
                       f"{name_}; {mem}")
    return out or ["- (no peer ran)"]


if __name__ == "__main__":
    raise SystemExit(main())
