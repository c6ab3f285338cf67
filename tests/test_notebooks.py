"""Execute every bundled notebook top to bottom in quick mode; a failing assert fails the test."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
#: Wall-clock budget per notebook (seconds) on the 2-core CI machine; most take 30-120 s.
TIMEOUT = int(os.environ.get("IW_NOTEBOOK_TIMEOUT", "600"))
DURATIONS: dict[str, float] = {}

pytestmark = pytest.mark.notebooks


def _notebooks() -> list[Path]:
    return sorted(p for p in NOTEBOOKS.glob("*.ipynb") if not p.name.startswith("."))


@pytest.fixture(scope="module", autouse=True)
def _report_durations():
    yield
    if DURATIONS:
        total = sum(DURATIONS.values())
        lines = [f"{name}: {seconds:.0f} s" for name, seconds in DURATIONS.items()]
        print("\nnotebook times: " + ", ".join(lines) + f"; total {total:.0f} s")


def _execute(path: Path, tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    deadline = time.monotonic() + TIMEOUT
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"{path.name} ran over its {TIMEOUT} s budget at cell {index}")
            client.timeout = max(1, int(remaining))
            client.execute_cell(cell, index)


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IW_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("IW_PRESET", raising=False)
    monkeypatch.setenv("INFLUENCE_WIDGETS_CACHE", str(tmp_path / "cache"))
    t0 = time.monotonic()
    try:
        _execute(path, tmp_path)
    finally:
        DURATIONS[path.name] = time.monotonic() - t0


def test_notebooks_are_stripped_and_switchable() -> None:
    import nbformat

    for path in _notebooks():
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), path
        if path.name[:2].isdigit() and path.name[:2] != "00":
            source = "\n".join(c.source for c in code)
            switch = 'PRESET = os.environ.get("IW_PRESET", "ci")'
            assert switch in source
            assert "assert " in source, f"{path.name} asserts nothing about its numbers"
