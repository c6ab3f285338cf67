"""Issue 21 (10): the URL ``make lab-headless`` prints opens the quickstart, and the workshop
app is served from a copy that JupyterLab does not edit."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
from test_main_command import _env, _free_port, _start_make, _stop, _wait_for_printed

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART_URL_RE = re.compile(
    r"http://127\.0\.0\.1:(\d+)/lab/tree/00_quickstart\.ipynb\?token=([0-9a-f]+)")


def test_the_printed_lab_url_opens_the_quickstart(tmp_path):
    make = shutil.which("make")
    if make is None:
        pytest.skip("`make` is not installed")
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "jupyter").exists():
        pytest.skip(f"no jupyter beside {sys.executable}")
    log = tmp_path / "lab.log"
    proc = _start_make(make, "lab-headless", bin_dir, f"LAB_ARGS=--port={_free_port()}",
                       _env(tmp_path), log)
    try:
        match = _wait_for_printed(proc, log, QUICKSTART_URL_RE, 120.0, "lab-headless")
        assert match.group(2)  # with its token
    finally:
        _stop(proc)


def test_the_workshop_serves_a_copy_lab_does_not_edit():
    makefile = (ROOT / "Makefile").read_text()
    [notebook] = re.findall(r"^WORKSHOP_NOTEBOOK := (\S+)$", makefile, flags=re.M)
    assert notebook.startswith("build/") and "notebooks/" not in notebook
    for target in ("workshop", "workshop-headless"):
        recipe = makefile.split(f"\n{target}: ", 1)[1].split("\n\n", 1)[0]
        assert "$(WORKSHOP_APP)" in recipe and "$(WORKSHOP_NOTEBOOK)" in recipe, recipe
