"""Command line: ``python -m influence_widgets list`` and
``python -m influence_widgets reproduce STUDY [--preset quick|paper] [--out DIR] [--device cpu|cuda]
[--seeds N] [--root DIR] [--threads N]``: the study's table (CSV), figures (PNG) and a markdown
summary; ``python -m influence_widgets results-table DIR [DIR ...] [--out FILE]``: the README's
results table, every claim with its mean, SE, sd and seeds, from the CSVs ``reproduce`` wrote. ``--out`` is checked for writing before the study runs, and the rows of each finished case
are saved to ``STUDY.partial.csv`` as the study goes (replaced by ``STUDY.csv`` at the end)."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


MAX_SEEDS = 1000  # more seeds than any study could train in a day on this package's models


def _positive_int(text: str) -> int:
    """An argparse type: an integer from 1 to :data:`MAX_SEEDS` (argparse names the option in
    its error)."""
    try:
        n = int(text)
    except ValueError:
        n = None
    if n is None or n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r} (e.g. 3 "
                                         "runs seeds 0, 1, 2)")
    if n > MAX_SEEDS:
        raise argparse.ArgumentTypeError(
            f"{n} seeds would train {n} models per case; at most {MAX_SEEDS} (a study's "
            "claims are judged from 5 to 20 seeds)")
    return n


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m influence_widgets",
                                description="Influence estimates against leave-one-out retraining.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="name the studies, datasets, models and solvers")
    r = sub.add_parser("reproduce", help="run a study: table (CSV), figures (PNG), summary (MD)")
    r.add_argument("study", help="a study name (see `list`)")
    r.add_argument("--preset", default="quick", help="quick (the reported verdicts: minutes on a "
                   "CPU), ci (a slim grid), paper (the full grid, meant for a GPU) or tiny "
                   "(seconds, for tests); default quick")
    r.add_argument("--out", type=Path, default=None, help="output folder (default "
                   "reproduce_out/STUDY)")
    r.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    r.add_argument("--seeds", type=_positive_int, default=None, help="number of seeds "
                   "(0..N-1, N >= 1) instead of the preset's")
    r.add_argument("--check-seeds", type=_positive_int, default=None, help="number of check "
                   "seeds (100..100+N-1) instead of the preset's: every claim is also judged on "
                   "them")
    r.add_argument("--root", type=Path, default=None, help="image folder (root/<class>/*.png) "
                   "for the group study (default: a tiny synthetic folder)")
    r.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1: "
                   "fastest for the small models of the quick presets on a shared machine)")
    r.add_argument("--no-figures", action="store_true", help="write only the table and summary")
    r.add_argument("--quiet", action="store_true", help="no progress bar, no summary on stdout")
    t = sub.add_parser("results-table", help="the README's results table (markdown), computed "
                       "from the tables `reproduce` wrote")
    t.add_argument("folders", type=Path, nargs="+", help="folders holding STUDY.csv files "
                   "(e.g. reproduce_out/*), one or more studies")
    t.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    from .forecast.cli import add_parser as add_forecast

    add_forecast(sub)
    return p


def cmd_list() -> str:
    """The text ``list`` prints."""
    from . import datasets
    from .experiments import STUDIES
    from .experiments.core import DATASETS
    from .ground_truth import TRUTHS
    from .influence import SOLVERS
    from .models.architectures import ARCHITECTURES

    lines = ["Studies (python -m influence_widgets reproduce NAME --preset PRESET):"]
    lines += [f"  {s.name:<13} {s.finding}  [presets: {', '.join(s.presets)}]"
              for s in STUDIES.values()]
    names = sorted(set(datasets.names()) | set(DATASETS))
    lines += ["", "Datasets:", "  " + ", ".join(names)]
    lines += ["", "Models (zoo presets):", *_zoo_lines()]
    lines += ["", "Architectures:", "  " + ", ".join(ARCHITECTURES)]
    lines += ["", "Solvers (iw.influence(..., solver=NAME, damping=..., **settings)):"]
    for name, cls in SOLVERS.items():
        lines.append(f"  {name:<13} {cls.summary}")
        for line in cls.Settings.describe():
            lines += textwrap.wrap(line, 100, initial_indent="      ", subsequent_indent="          ")
    lines += ["", "Ground truths (iw.leave_one_out(..., mode=NAME, **settings); the explorer's "
              "ground truth; Truth(NAME) in a study):"]
    for name, cls in TRUTHS.items():
        lines += textwrap.wrap(f"{name:<13} {cls.label}: one dot per {cls.dot}. {cls.summary}",
                               100, initial_indent="  ", subsequent_indent="                ")
        for line in cls.Settings.describe():
            lines += textwrap.wrap(line, 100, initial_indent="      ", subsequent_indent="          ")
    return "\n".join(lines)


def _zoo_lines() -> list[str]:
    try:
        from .models import zoo
    except ImportError:
        return ["  (the model zoo is not available)"]
    names = zoo.available_names()
    lines = ["  " + ", ".join(names[i:i + 6]) for i in range(0, len(names), 6)]
    absent: dict[str, list[str]] = {}
    for name in zoo.names():
        if name not in names:
            absent.setdefault(zoo.missing_data(name) or "", []).append(name)
    if absent:
        lines.append("  Not listed, their data are not on this machine:")
        for why, models in absent.items():
            lines += textwrap.wrap(f"{', '.join(models)}: {why}", 100, initial_indent="    ",
                                   subsequent_indent="      ")
    return lines


def cmd_reproduce(args: argparse.Namespace) -> Path:
    """Run the study and write ``STUDY.csv``, its figures (``STUDY_*.png``) and
    ``STUDY_summary.md`` under ``--out``: every file named for its study, so two studies can
    share a folder without one overwriting the other."""
    import torch

    from .experiments import get_study, markdown_summary
    from .experiments.presets import resolve

    overrides = {"seeds": args.seeds, "check_seeds": args.check_seeds}
    if args.root is not None:
        overrides["root"] = str(args.root)
    try:
        study = get_study(args.study)
        options: dict[str, Any] = resolve(study.name, args.preset, overrides)
    except ValueError as e:
        raise CLIError(str(e)) from None
    if args.threads is not None and args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device is not None:
        from ._devices import resolve_device

        resolve_device(args.device)
    out = args.out if args.out is not None else Path("reproduce_out") / study.name
    _check_writable(out, study.name)
    t0 = time.perf_counter()
    partial = _PartialTable(out / f"{study.name}.partial.csv", study.name, show=not args.quiet)
    try:
        table = study(args.preset, device=args.device, progress=partial,
                      **{k: v for k, v in overrides.items() if v is not None})
    except BaseException:
        if partial.rows:
            print(f"the rows of the {partial.cases} case(s) finished before the error are in "
                  f"{partial.path}", file=sys.stderr)
        raise
    finally:
        partial.close()
    seconds = time.perf_counter() - t0
    _write_text(out / f"{study.name}.csv", table.to_csv(index=False))
    partial.path.unlink(missing_ok=True)
    figures = [] if args.no_figures else _write_figures(study.name, table, out)
    text = markdown_summary(study.name, table, preset=args.preset, seconds=seconds,
                            options=options, figures=figures)
    _write_text(out / f"{study.name}_summary.md", text)
    if not args.quiet:
        print(text)
        print(f"Wrote {out / (study.name + '.csv')}, {study.name}_summary.md and "
              f"{len(figures)} figure(s) "
              f"to {out}/")
    return out


def cmd_results_table(folders: list[Path], out: Path | None = None) -> str:
    """The results table of every ``STUDY.csv`` found in ``folders`` (see
    :func:`influence_widgets.experiments.claims.results_table`)."""
    import pandas as pd

    from .experiments import STUDIES, results_table

    tables = {}
    for folder in folders:
        for name in STUDIES:
            path = folder / f"{name}.csv"
            if path.is_file():
                tables[name] = _read_study_csv(path, pd)
    if not tables:
        raise CLIError(f"no study table (STUDY.csv) in {', '.join(map(str, folders))}; run "
                       "`python -m influence_widgets reproduce STUDY --out DIR` first")
    for t in tables.values():
        if "error" in t:
            t["error"] = t["error"].astype(object).where(t["error"].notna(), "").astype(str)
        if "converged" in t:
            t["converged"] = t["converged"].astype(str).str.lower().eq("true")
    text = results_table(tables)
    if out is not None:
        try:
            _write_text(out, text)
        except OSError as e:
            raise CLIError(f"cannot write the results table to --out {out} "
                           f"({e.strerror or e}); pass --out with a file in a folder you can "
                           "write to") from None
    return text


#: Columns every study table has, and those of them that hold numbers.
_NEEDED = ("seed",)
_NUMERIC = ("seed", "spearman", "pearson")


def _read_study_csv(path: Path, pd: Any) -> Any:
    """A study table written by ``reproduce``, or a :class:`CLIError` naming the file and what
    is wrong with it (not CSV text, a column missing, text where numbers belong)."""
    try:
        table = pd.read_csv(path, keep_default_na=False, na_values=["", "nan", "NaN"])
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as e:
        raise CLIError(f"{path} is not a study table that `reproduce` wrote ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else e}); move it away or run the "
                       "study again") from None
    missing = [c for c in _NEEDED if c not in table.columns]
    if missing:
        raise CLIError(f"{path} has no column {', '.join(map(repr, missing))}: it is not a study "
                       "table that `reproduce` wrote; move it away or run the study again")
    for col in _NUMERIC:
        if col in table.columns:
            values = pd.to_numeric(table[col], errors="coerce")
            bad = table[col][values.isna() & table[col].notna() & (table[col].astype(str) != "")]
            if len(bad):
                raise CLIError(f"{path}: column {col!r} holds {bad.iloc[0]!r} (row "
                               f"{int(bad.index[0]) + 2} of the file), not a number; fix the "
                               "file or run the study again")
            table[col] = values
    return table


def _check_writable(out: Path, study: str) -> None:
    """Fail before the study runs (not after it) when ``out`` cannot take its files."""
    blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise CLIError(f"cannot write to --out {out}: {blocker} is a file, not a folder; move "
                       "that file or pass another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise CLIError(f"cannot write to --out {out} ({e.strerror or e}); pass --out with a "
                       "folder you can write to") from None
    for name in (f"{study}.csv", f"{study}.partial.csv", f"{study}_summary.md"):
        if (out / name).exists() and not (out / name).is_file():
            raise CLIError(f"{out / name} is in the way (not a file); move it or pass another "
                           "--out")


def _write_text(path: Path, text: str) -> None:
    from ._cache import atomic_write_text

    atomic_write_text(path, text)


class _PartialTable:
    """The study's progress callback: after each finished case, all rows so far go to ``path``
    (written atomically); unless quiet, it also drives a progress bar."""

    def __init__(self, path: Path, desc: str, show: bool) -> None:
        self.path, self.desc, self.show = path, desc, show
        self.rows: list[dict[str, Any]] = []
        self.cases = 0
        self._bar: Any = None
        self._close: Any = None

    def __call__(self, done: int, total: int, info: dict[str, Any]) -> None:
        from .experiments.core import progress_callback, to_table

        if self.show and self._bar is None:
            self._bar, self._close = progress_callback(True, total, self.desc)
        if self._bar is not None:
            self._bar(done, total, info)
        if "rows" in info:
            self.rows += info["rows"].to_dict("records")
            self.cases += 1
            _write_text(self.path, to_table(self.rows).to_csv(index=False))

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._bar = self._close = None


def _write_figures(study: str, table: Any, out: Path) -> list[str]:
    from .plots.studies import study_figures

    names = []
    for stem, fig in study_figures(study, table).items():
        fig.savefig(out / f"{stem}.png", dpi=110)
        names.append(f"{stem}.png")
    return names


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 missing data or failure, 2 bad usage)."""
    args = _parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # third-party deprecation notices
    try:
        if args.command == "list":
            print(cmd_list())
        elif args.command == "results-table":
            print(cmd_results_table(args.folders, args.out), end="")
        elif args.command == "forecast-corpus":
            from .forecast.cli import run as run_forecast

            done = run_forecast(args)
            if not args.quiet:
                print(done)
        else:
            cmd_reproduce(args)
    except CLIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    except (RuntimeError, ValueError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; finished retrains are kept in the cache and resume on the next run",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
