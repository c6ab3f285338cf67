"""``python -m influence_widgets forecast-corpus``: generate the corpus (resumable), fit the
forecaster, cross-validate it by family and check it on held-out models.

::

    python -m influence_widgets forecast-corpus --out forecast_corpus --cases 120 --heldout 8
    python -m influence_widgets forecast-corpus --out forecast_corpus --fit   # + shipped JSON

Every finished case is saved under ``OUT/cases``; a second run computes only what is missing.
``--fit`` fits on the corpus rows, writes the forecaster JSON (``--model``, default the
package's ``forecaster.json``) with its provenance, ``OUT/cv.csv`` (leave-one-family-out),
``OUT/heldout.json`` (the done-when check) and ``OUT/forecast_report.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import subprocess
import time
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    f = sub.add_parser("forecast-corpus", help="generate the trust forecast's corpus "
                       "(resumable) and fit the forecaster (--fit)")
    f.add_argument("--out", type=Path, default=Path("reproduce_out") / "forecast_corpus",
                   help="corpus folder (default reproduce_out/forecast_corpus)")
    f.add_argument("--cases", type=int, default=120, help="corpus models (default 120)")
    f.add_argument("--heldout", type=int, default=8, help="held-out models: widths, "
                   "activations and schedules in no preset, study or corpus (default 8)")
    f.add_argument("--seed", type=int, default=0, help="seed of the case draw (default 0)")
    f.add_argument("--budget-min", type=float, default=None, help="start no new case after "
                   "this many minutes (the rest resume on the next run)")
    f.add_argument("--shard", default="0/1", help="I/N: this process evaluates every N-th case "
                   "from the I-th (run N processes side by side; default 0/1)")
    f.add_argument("--fit", action="store_true", help="fit the forecaster on the saved rows, "
                   "cross-validate it and write the JSON")
    f.add_argument("--no-generate", action="store_true", help="only fit (with --fit)")
    f.add_argument("--model", type=Path, default=None, help="where --fit writes the forecaster "
                   "(default: the package's forecaster.json)")
    f.add_argument("--results", type=Path, default=None, help="also copy the validation files "
                   "(cv.csv, heldout.csv.gz, forecast_report.md) here (the repository keeps "
                   "them in benchmarks/results/forecast for notebook 09)")
    f.add_argument("--tiny", action="store_true", help="seconds-long cases (tests)")
    f.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    f.add_argument("--quiet", action="store_true", help="no progress lines")


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        i = n = -1
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard must be I/N with 0 <= I < N, got {text!r}")
    return i, n


def git_commit() -> str:
    """The commit of the package's source tree, or "unknown" outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=here.parent,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cases_of(args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    from . import corpus

    if args.tiny:
        return corpus.tiny_cases(args.cases, args.seed), []
    return (corpus.corpus_cases(args.cases, args.seed),
            corpus.heldout_cases(args.heldout, args.seed + 1) if args.heldout else [])


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The command; returns what it wrote (paths and numbers)."""
    import torch

    from . import corpus

    if args.threads and args.threads > 0:
        torch.set_num_threads(args.threads)
    i, n = _shard(args.shard)
    train_cases, held_cases = cases_of(args)
    out: dict[str, Any] = {"folder": str(args.out)}
    t0 = time.perf_counter()

    def progress(done: int, total: int, info: dict[str, Any]) -> None:
        if not args.quiet and info:
            print(f"[{time.perf_counter() - t0:7.0f}s] case {done + 1}/{total} "
                  f"{info.get('case_id')}: {info.get('dataset')} d{info.get('depth')} "
                  f"w{info.get('width')} {info.get('activation')} {info.get('schedule')}",
                  flush=True)

    if not args.no_generate:
        budget = None if args.budget_min is None else 60 * args.budget_min
        corpus.generate(args.out, held_cases[i::n], progress=progress, budget_s=budget)
        left = None if budget is None else max(0.0, budget - (time.perf_counter() - t0))
        corpus.generate(args.out, train_cases[i::n], progress=progress, budget_s=left)
    out["generate_seconds"] = time.perf_counter() - t0
    table = corpus.load(args.out, [c.case_id for c in train_cases])
    out["rows"], out["models"] = len(table), int(table["case_id"].nunique()) if len(table) else 0
    if args.fit:
        out.update(fit_and_check(args, table, [c.case_id for c in held_cases]))
    return out


def fit_and_check(args: argparse.Namespace, table: Any, held_ids: list[str]) -> dict[str, Any]:
    """Fit on ``table``, cross-validate, check on the held-out rows; write the JSON and the
    report."""
    import numpy as np

    from . import corpus, shipped_path
    from .model import GBR, LEVEL, conformal_quantile, fit
    from .validation import cross_validate, heldout_check

    if len(table) < 10:
        raise ValueError(f"only {len(table)} corpus rows under {args.out}: generate more cases "
                         "before --fit")
    t0 = time.perf_counter()
    cv = cross_validate(table) if not args.tiny else cross_validate(table, ["activation"])
    cv.to_csv(Path(args.out) / "cv.csv", index=False)
    y = table["spearman"].to_numpy(float)
    const_q = conformal_quantile(np.abs(y - y.mean()), LEVEL)
    provenance = {
        "package": "influence_widgets", "version": _version(), "git_commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "corpus_rows": len(table), "corpus_models": int(table["case_id"].nunique()),
        "corpus_seconds": float(table.groupby("case_id")["seconds"].first().sum())
        if "seconds" in table else None,
        "solvers": sorted(table["solver"].unique().tolist()),
        "truths": sorted(table["truth"].unique().tolist()),
        "families": {c: sorted(table[c].astype(str).unique().tolist())
                     for c in corpus.FAMILIES if c in table},
        "command": "python -m influence_widgets forecast-corpus --fit",
        "boosting": dict(GBR),
        "corpus_mean": float(y.mean()), "const_halfwidth": float(const_q),
        # the cases fitted (a budget or shards may leave some of the drawn ones for later)
        "case_ids": sorted(table["case_id"].astype(str).unique().tolist()),
        "cv": {"mae": float(cv["mae"].mean()), "coverage": float(cv["coverage"].mean()),
               "width": float(cv["width"].mean())} if len(cv) else {},
    }
    f = fit(table, provenance=provenance)
    held = corpus.load(args.out, held_ids) if held_ids else None
    result: dict[str, Any] = {"halfwidth": f.halfwidth, "cv_rows": len(cv)}
    if held is not None and len(held):
        check = heldout_check(f, held, float(y.mean()), const_q)
        warm = held[held["truth"] == "warm_start"]
        check_warm = heldout_check(f, warm, float(y.mean()), const_q) if len(warm) else {}
        f.provenance["heldout"] = {"all": check, "warm_start": check_warm}
        (Path(args.out) / "heldout.json").write_text(json.dumps(f.provenance["heldout"],
                                                                indent=2) + "\n")
        held.to_csv(Path(args.out) / "heldout.csv.gz", index=False)
        result["heldout"] = f.provenance["heldout"]
    f.provenance["fit_seconds"] = time.perf_counter() - t0
    path = args.model if args.model is not None else shipped_path()
    f.to_json(path)
    result["model"] = str(path)
    (Path(args.out) / "forecast_report.md").write_text(report(f, cv, result.get("heldout")))
    if getattr(args, "results", None) is not None:
        import shutil

        Path(args.results).mkdir(parents=True, exist_ok=True)
        for name in ("cv.csv", "heldout.csv.gz", "forecast_report.md"):
            if (Path(args.out) / name).exists():
                shutil.copyfile(Path(args.out) / name, Path(args.results) / name)
    return result


def _version() -> str:
    import influence_widgets

    return influence_widgets.__version__


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def report(f: Any, cv: Any, held: dict[str, Any] | None) -> str:
    """The markdown of the CV table and the held-out check."""
    p = f.provenance
    lines = [f"Corpus: {p.get('corpus_rows')} rows from {p.get('corpus_models')} models "
             f"(solvers {', '.join(p.get('solvers', []))}; ground truths "
             f"{', '.join(p.get('truths', []))}); commit {p.get('git_commit')}, {p.get('date')}.",
             f"Interval: 80% split-conformal, half-width {f.halfwidth:.3f} (residuals of "
             "leave-one-family-out predictions).", "",
             "All held-out rows (warm-start LOO and exact-solve ground truths), then the "
             "warm-start rows alone (those judged by retraining):", "",
             "| held-out family | value | models | rows | mean abs error | coverage | width | "
             "constant: error | coverage | width | warm-start rows | error | coverage | width | "
             "constant: error |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def warm(r: Any) -> str:
        if "warm_mae" not in r or r["warm_mae"] != r["warm_mae"]:
            return " | | | | |"
        return (f" {int(r['warm_rows'])} | {r['warm_mae']:.3f} | {r['warm_coverage']:.2f} | "
                f"{r['warm_width']:.2f} | {r['const_warm_mae']:.3f} |")

    for r in cv.to_dict("records"):
        lines.append(f"| {r['family']} | {r['held_out']} | {r['models']} | {r['rows']} | "
                     f"{r['mae']:.3f} | {r['coverage']:.2f} | {r['width']:.2f} | "
                     f"{r['const_mae']:.3f} | {r['const_coverage']:.2f} | "
                     f"{r['const_width']:.2f} |" + warm(r))
    if len(cv):
        m = cv.mean(numeric_only=True)
        lines.append(f"| **mean over folds** | | | | {m['mae']:.3f} | {m['coverage']:.2f} | "
                     f"{m['width']:.2f} | {m['const_mae']:.3f} | {m['const_coverage']:.2f} | "
                     f"{m['const_width']:.2f} |" + warm({**m, "warm_rows": 0}).replace(
                         " 0 |", " |", 1))
    if held:
        lines += ["", "Held-out models (widths, activations, schedules in no preset, study grid "
                  "or corpus); done when mean abs error <= 0.15, coverage >= 0.7, width <= 0.6:",
                  "", "| rows | models | mean abs error | coverage | width | in range | "
                  "constant: error | coverage | width | met |", "|---|---|---|---|---|---|---|---|"
                  "---|---|"]
        for name, h in held.items():
            if h:
                lines.append(f"| {h['rows']} ({name}) | {h['models']} | {h['mae']:.3f} | "
                             f"{h['coverage']:.2f} | {h['width']:.2f} | {h['in_range']:.2f} | "
                             f"{h['const_mae']:.3f} | {h['const_coverage']:.2f} | "
                             f"{h['const_width']:.2f} | {'yes' if h['met'] else 'no'} |")
    return "\n".join(lines) + "\n"
