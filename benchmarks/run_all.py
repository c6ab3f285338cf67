"""Run every benchmark in one go and assemble benchmarks/RESULTS.md (date, machine, command).

    python benchmarks/run_all.py [--quick]

Each ``bench_*.py`` prints a markdown section and writes ``results/<name>.md``; this script runs
them one after another (so they do not compete for cores) and stitches the sections together.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["bench_influence.py", "bench_equal_error.py", "bench_loo.py", "bench_hvp_routes.py",
           "bench_peers.py", "bench_memory.py"]


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, {dev}; "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller runs (for a smoke check)")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--assemble", action="store_true",
                    help="do not run: stitch the sections already in results/ (each keeps its date)")
    args = ap.parse_args()
    sections, failed = [], []
    if args.assemble:
        sections = [(HERE / "results" / f"{b[6:-3]}.md").read_text().strip() + "\n" for b in BENCHES]
    for bench in [] if args.assemble else BENCHES:
        cmd = [sys.executable, str(HERE / bench)] + (["--quick"] if args.quick else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            failed.append(bench)
            sections.append(f"## {bench}\n\nFAILED (exit {proc.returncode}):\n\n```\n{proc.stderr[-3000:]}\n```\n")
        else:
            sections.append(proc.stdout.strip() + "\n")
    cmdline = "python benchmarks/run_all.py" + (" --quick" if args.quick else "")
    if args.assemble:
        cmdline = ("python benchmarks/bench_influence.py; python benchmarks/bench_equal_error.py; "
                   "python benchmarks/bench_loo.py --threads 1; "
                   "python benchmarks/bench_hvp_routes.py; python benchmarks/bench_peers.py; "
                   "python benchmarks/bench_memory.py --baseline DIR; "
                   "python benchmarks/run_all.py --assemble")
    header = (
        "# Benchmark results\n\n"
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC\n"
        f"- machine: {machine()}\n"
        f"- command: `{cmdline}` (or `make bench`)\n\n"
        "Ratios are measured in one run on the same models and data; see each section for the "
        "baseline it is a ratio against. Every comparison with a peer library is at equal error "
        "against the exact solve (each library at its own cheapest setting that reaches it) or, "
        "for K-FAC and EK-FAC, on the same matrix; each section states its sizes, date, machine "
        "and command (sections keep the date of their own run).\n\n"
    )
    Path(args.out).write_text(header + "\n".join(sections))
    print(Path(args.out).read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
