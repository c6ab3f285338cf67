#!/usr/bin/env bash
# One short GPU check (for a session lent a GPU machine): the CUDA test paths, then the benchmarks
# on CUDA. Writes the logs and RESULTS.md under $OUT (or ./gpu_out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
python3 -m venv .venv-gpu && .venv-gpu/bin/pip install -q -c constraints.txt -e ".[dev]" > "$OUT/install.log" 2>&1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
.venv-gpu/bin/python -m pytest -q -m gpu -p no:cacheprovider > "$OUT/pytest-gpu.log" 2>&1; echo "pytest gpu rc=$?" >> "$OUT/pytest-gpu.log"
.venv-gpu/bin/python benchmarks/run_all.py --out "$OUT/RESULTS-gpu.md" > "$OUT/bench.log" 2>&1; echo "bench rc=$?" >> "$OUT/bench.log"
tail -3 "$OUT/pytest-gpu.log" "$OUT/bench.log"
