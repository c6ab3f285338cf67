"""Workshop mode: ``make workshop-headless`` serves the participant app (a copy written into
build/workshop/, never the notebook JupyterLab edits) through Voila, driven in headless Debian
Chromium (Playwright) as two participants would use it, the second on a 1366x768 screen: the
explorer is on the first screen, and the first Compute draws the scatter for both.

Starts the real Makefile target, opens the URL it prints (with its token), and checks that the
token is required, that the page shows no code, that the explorer renders and computes
(statistics and scatter appear), and that no Python error or failed progress bar is displayed.
Reuses the browser test's machinery (``tests/test_browser.py``): a missing ``chromium`` skips
locally and fails under ``CI=true``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_browser import (
    ARTIFACTS,
    CHROMIUM_ARGS,
    _check_data_drawn,
    _check_image,
    _chromium,
    _free_port,
    _remaining,
    click_compute,
)
from test_main_command import _env as _lab_command_env
from test_main_command import _get, _start_make, _stop, _wait_for_printed

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 480.0  # two visitors, one after the other, on a shared machine
START_TIMEOUT_S = 60.0
# The URL Voila prints once it listens, e.g. http://localhost:8866/?token=abc...
URL_RE = re.compile(r"(http://(?:localhost|127\.0\.0\.1):\d+/)\?token=([0-9a-f]+)")

# What the page must not show: source code of the notebook's code cells, and Python errors.
CODE_SNIPPETS = (
    "import influence_widgets",
    "iw.zoo.load(",
    "iw.InfluenceExplorer(",
    "explorer.compute(",
    "participant_app(",
)
ERROR_STATE_JS = """() => {
  const text = document.body.innerText;
  const found = [];
  for (const s of ['Traceback', 'There was an error when executing cell', 'javascript error',
                   'Error displaying widget', 'Failed to load model class']) {
    if (text.includes(s)) found.push(s);
  }
  for (const e of document.querySelectorAll(
      '.iw-error, [data-mime-type="application/vnd.jupyter.error"]')) {
    found.push(e.innerText.slice(0, 300));
  }
  for (const e of document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]')) {
    if (/Error|Exception/.test(e.innerText)) found.push(e.innerText.slice(0, 300));
  }
  return found;
}"""


def _env(tmp: Path) -> dict[str, str]:
    """The clean environment of the Lab command's test, with a private IW cache and Jupyter
    data folder in ``tmp`` too; the browser clicks Compute itself."""
    env = _lab_command_env(tmp)
    env.pop("IW_NOTEBOOK_QUICK", None)
    env.update(
        INFLUENCE_WIDGETS_CACHE=str(tmp / "iw-cache"),
        JUPYTER_DATA_DIR=str(tmp / "jupyter-data"),
        IPYTHONDIR=str(tmp / "ipython"),
        MPLBACKEND="Agg",
    )
    return env


def _wait_for_url(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    """The URL (with its token) that Voila prints once it is up."""
    return _wait_for_printed(proc, log, URL_RE, timeout, "workshop-headless").group(0)


def _compute(page, t_end: float) -> dict[str, float]:
    """Wait for the explorer, click Compute, wait for its statistics; the seconds each took."""
    t0 = time.monotonic()
    page.locator(".iw-explorer").first.wait_for(timeout=_remaining(t_end))
    page.wait_for_function(  # enabled once the model is loaded
        "() => [...document.querySelectorAll('.iw-explorer .widget-button')].some("
        "b => b.textContent.includes('Compute') && !b.disabled)",
        timeout=_remaining(t_end),
    )
    t1 = time.monotonic()
    click_compute(page, t_end)
    page.locator(".iw-stats", has_text="Spearman").first.wait_for(timeout=_remaining(t_end))
    page.locator(".iw-explorer", has_text="done in").first.wait_for(timeout=_remaining(t_end))
    return {"explorer_s": t1 - t0, "compute_s": time.monotonic() - t1}


def _check_scatter(page, t_end: float, name: str) -> None:
    """The scatter after the first Compute: not blank, and its dots drawn inside the axes."""
    scatter = page.locator(".iw-scatter img, .iw-scatter canvas").first
    scatter.wait_for(timeout=_remaining(t_end))
    page.wait_for_timeout(1000)  # a frame asked for by the browser lands
    shot = scatter.screenshot()
    (ARTIFACTS / name).write_bytes(shot)
    _check_image(shot)
    _check_data_drawn(shot)


def test_workshop_mode_serves_the_quickstart_as_an_app(tmp_path: Path) -> None:
    chromium = _chromium()
    make = shutil.which("make")
    if make is None:
        pytest.skip("`make` is not installed")
    bin_dir = Path(sys.executable).parent  # the venv running the tests (normally .venv/bin)
    if not (bin_dir / "voila").exists():
        pytest.fail(f"no voila beside {sys.executable}: install the dev extra (`make test` does)")
    from playwright.sync_api import sync_playwright

    t_end = time.monotonic() + DEADLINE_S
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "voila.log"
    start = time.monotonic()
    # Voila moves on if the port is taken, and prints it
    proc = _start_make(make, "workshop-headless", bin_dir, f"WORKSHOP_ARGS=--port={_free_port()}",
                       _env(tmp_path), log)
    try:
        url = _wait_for_url(proc, log, START_TIMEOUT_S)
        timings = {"server_s": time.monotonic() - start}
        assert _get(url.split("?")[0]) != 200  # the token is really required
        page_errors: list[str] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1300})
                page.on("pageerror", lambda exc: page_errors.append(str(exc)))
                try:
                    t0 = time.monotonic()
                    page.goto(url, timeout=_remaining(t_end))
                    timings.update(page_s=time.monotonic() - t0, **_compute(page, t_end))

                    # No code cells: neither editors nor code input areas nor the code itself.
                    code_cells = page.locator(".jp-CodeCell")
                    assert code_cells.count() >= 1  # the output (the app) is there
                    assert code_cells.count() == page.locator(".jp-CodeCell.jp-mod-noInput").count()
                    inputs = ".jp-CodeCell .jp-InputArea, .jp-CodeMirrorEditor, .cm-editor"
                    assert page.locator(inputs).count() == 0
                    text = page.locator("body").inner_text()
                    shown = [s for s in CODE_SNIPPETS if s in text]
                    assert not shown, f"the app shows code: {shown}"
                    # The markdown is there (the app explains itself).
                    assert "can i trust these influence estimates?" in text.lower()

                    # A result: statistics and a scatter that is not blank.
                    stats = page.locator(".iw-stats").first.inner_text()
                    assert re.search(r"Pearson", stats) and re.search(r"Spearman", stats), stats
                    _check_scatter(page, t_end, "workshop-visitor1-scatter.png")

                    # No Python error anywhere, and no failed (red) progress bar, e.g. the
                    # training bar of the first cell after an early stop at convergence.
                    errors = page.evaluate(ERROR_STATE_JS)
                    assert not errors, f"the app shows errors: {errors}"
                    assert page.locator(".progress-bar-danger").count() == 0, "a red progress bar"
                finally:
                    page.screenshot(path=str(ARTIFACTS / "workshop.png"), full_page=True)
                # A second fresh visitor (own browser context, own kernel): the first Compute
                # draws the scatter for every visitor, not only for one.
                second = browser.new_context(viewport={"width": 1366, "height": 768}).new_page()
                second.on("pageerror", lambda exc: page_errors.append(str(exc)))
                try:
                    second.goto(url, timeout=_remaining(t_end))
                    compute = second.locator(".iw-explorer .widget-button", has_text="Compute")
                    compute.first.wait_for(timeout=_remaining(t_end))
                    second.screenshot(path=str(ARTIFACTS / "workshop-1366x768-first-screen.png"))
                    box = compute.first.bounding_box()
                    assert box is not None and box["y"] + box["height"] <= 768, (
                        f"the Compute button is below the first screen at 1366x768: {box}")
                    timings.update({f"visitor2_{k}": v for k, v in _compute(second, t_end).items()})
                    _check_scatter(second, t_end, "workshop-visitor2-scatter.png")
                finally:
                    second.screenshot(path=str(ARTIFACTS / "workshop-visitor2.png"),
                                      full_page=True)
            finally:
                browser.close()
        assert not page_errors, f"JavaScript errors in the page: {page_errors}"
        print("workshop timings: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    except BaseException:
        sys.stderr.write(f"--- voila log ({log}) ---\n{log.read_text(errors='replace')[-4000:]}\n")
        raise
    finally:
        _stop(proc)
    text = log.read_text(errors="replace")
    served = next(line for line in text.splitlines() if "voila" in line and "--token" in line)
    assert "--no-browser" in served, served  # make echoes its command
    assert "build/workshop/" in served, served  # a copy, never the notebook Lab edits
