"""The conda environment lists the same packages as pyproject.toml, and the pins agree."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}


def _name(req: str) -> str:
    return re.split(r"[<>=!\[ ;]", req.strip(), maxsplit=1)[0].lower()


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _conda() -> tuple[set[str], set[str], dict[str, str]]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip, pins = set(), set(), {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip |= {_name(p) for p in dep["pip"]}
            continue
        name = CONDA_NAMES.get(_name(dep), _name(dep))
        if name in ("python", "pip"):
            continue
        conda.add(name)
        if "=" in dep and not any(op in dep for op in (">", "<")):
            pins[name] = dep.split("=")[-1]
    return conda, pip, pins


def test_runtime_dependencies_agree() -> None:
    deps = {_name(d) for d in _pyproject()["project"]["dependencies"]}
    conda, _, _ = _conda()
    assert deps == conda, f"only in pyproject: {deps - conda}; only in environment.yml: {conda - deps}"


def test_dev_dependencies_agree() -> None:
    dev = {_name(d) for d in _pyproject()["project"]["optional-dependencies"]["dev"]}
    _, pip, _ = _conda()
    assert dev == pip, f"only in pyproject[dev]: {dev - pip}; only in environment.yml pip: {pip - dev}"


def test_torch_pins_agree_with_constraints() -> None:
    pins = dict(
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    _, _, conda_pins = _conda()
    assert pins == {"torch": "2.14.1", "torchvision": "0.29.1"}
    assert conda_pins == pins


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and ci.rstrip().endswith("make test")
