"""The README's main command, run the way a user runs it: ``make lab-headless``.

Starts the real Makefile target (as root it must add ``--allow-root`` itself, as any other user
it must not), reads the token from the URL the server prints, fetches the quickstart notebook's
page with it and checks that the token is really required. The server's whole process group
(make and jupyter) is stopped afterwards, also when the test fails.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "00_quickstart.ipynb"  # the target serves notebooks/ and opens this file
START_TIMEOUT_S = 120.0
# The URL JupyterLab prints once it listens, e.g. http://127.0.0.1:8888/lab?token=abc...
URL_RE = re.compile(r"http://127\.0\.0\.1:(\d+)/lab\S*\?token=([0-9a-f]+)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp: Path) -> dict[str, str]:
    """The user's environment, with Jupyter's runtime/config/workspace files in ``tmp``."""
    env = dict(os.environ)
    # A clean make, as typed in a shell, even when pytest itself runs under `make test`.
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        env.pop(name, None)
    for name in ("JUPYTER_TOKEN", "JUPYTER_PASSWORD"):  # let the server make its own token
        env.pop(name, None)
    env.update(
        JUPYTER_RUNTIME_DIR=str(tmp / "jupyter-runtime"),
        JUPYTER_CONFIG_DIR=str(tmp / "jupyter-config"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "lab-workspaces"),
    )
    return env


def _get(url: str, token: str | None = None) -> int:
    """HTTP status of ``url`` (no redirects followed: a login redirect is not a 200)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def _wait_for_printed(proc: subprocess.Popen, log: Path, pattern: re.Pattern, timeout: float,
                      target: str, ready=lambda match: True) -> re.Match:
    """The first match of ``pattern`` in the log of ``make <target>`` once ``ready(match)``;
    fails with the log's tail if the server exits first or prints nothing in ``timeout``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        match = pattern.search(log.read_text(errors="replace"))
        if match and ready(match):
            return match
        if proc.poll() is not None:
            pytest.fail(
                f"`make {target}` exited with code {proc.returncode} before serving:\n"
                + log.read_text(errors="replace")[-4000:]
            )
        time.sleep(0.3)
    pytest.fail(
        f"`make {target}` printed no URL with a token within {timeout:.0f} s:\n"
        + log.read_text(errors="replace")[-4000:]
    )


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _wait_for_url(proc: subprocess.Popen, log: Path, timeout: float) -> tuple[int, str]:
    """Port and token from the server's printed URL, once the server answers on that port."""
    match = _wait_for_printed(proc, log, URL_RE, timeout, "lab-headless",
                              ready=lambda m: _listening(int(m.group(1))))
    return int(match.group(1)), match.group(2)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group (make and jupyter), SIGKILL it if anything is left."""
    pgid = proc.pid  # start_new_session=True: make leads its own process group
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        end = time.monotonic() + grace
        while time.monotonic() < end:
            if proc.poll() is not None:
                try:
                    os.killpg(pgid, 0)  # a jupyter that outlived make?
                except ProcessLookupError:
                    return
            time.sleep(0.2)
    proc.wait(timeout=5)


def _start_make(make: str, target: str, bin_dir: Path, args: str, env: dict[str, str],
                log: Path) -> subprocess.Popen:
    """``make <target>`` as the README runs it, in its own session (``_stop`` ends it), with
    ``args`` (e.g. ``LAB_ARGS=--port=1234``) and its output to ``log``."""
    cmd = [
        make,
        "--no-print-directory",
        "-o",
        ".venv/.installed",  # never reinstall from inside a test: the venv is already there
        target,
        f"BIN={bin_dir}",
        args,
    ]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def test_make_lab_headless_serves_quickstart(tmp_path):
    make = shutil.which("make")
    if make is None:
        pytest.skip("`make` is not installed")
    bin_dir = Path(sys.executable).parent  # the venv running the tests (normally .venv/bin)
    if not (bin_dir / "jupyter").exists():
        pytest.skip(f"no jupyter beside {sys.executable}")
    log = tmp_path / "lab.log"
    start = time.monotonic()
    # A free port; JupyterLab moves to the next one if it is taken meanwhile, and prints it.
    proc = _start_make(make, "lab-headless", bin_dir, f"LAB_ARGS=--port={_free_port()}",
                       _env(tmp_path), log)
    try:
        port, token = _wait_for_url(proc, log, START_TIMEOUT_S)
        base = f"http://127.0.0.1:{port}"
        started_s = time.monotonic() - start

        # The page the README sends the user to, with the printed token.
        assert _get(f"{base}/lab/tree/{NOTEBOOK}?token={token}") == 200
        # The notebook is really there, and the token is really required (not disabled).
        contents = f"{base}/api/contents/{NOTEBOOK}?content=0"
        assert _get(contents, token) == 200
        assert _get(contents) == 403
        assert _get(f"{base}/lab") in (302, 303)  # to the login page

        text = log.read_text(errors="replace")
        command_line = text.splitlines()[0]  # make echoes the command it runs
        is_root = os.geteuid() == 0
        assert ("--allow-root" in command_line) == is_root, command_line
        assert "Running as root is not recommended" not in text
        print(f"server answered {started_s:.1f} s after `make lab-headless`")
    finally:
        _stop(proc)
