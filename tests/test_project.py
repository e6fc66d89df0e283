"""The project files agree with each other: pins, MLproject params and scripts."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from conftest import REPO, run_script


def pyproject_dependencies() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def test_conda_pip_section_matches_pyproject_pins():
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    pip_section = next(item["pip"] for item in conda["dependencies"] if isinstance(item, dict))
    conda_requirements = sorted(req for req in pip_section if not req.startswith("-e"))
    assert conda_requirements == sorted(pyproject_dependencies())


def test_required_pins_are_exact():
    deps = set(pyproject_dependencies())
    for pin in ("torch==2.14.1", "torchvision==0.29.1", "mlflow[auth]==3.17.2", "optuna==5.0.0", "lenstronomy==1.14.2"):
        assert pin in deps


def mlproject_entry_points() -> dict:
    return yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]


def test_mlproject_declares_conda_env():
    assert yaml.safe_load((REPO / "MLproject").read_text())["conda_env"] == "conda.yaml"


@pytest.mark.parametrize("entry", sorted(mlproject_entry_points()))
def test_every_declared_param_reaches_its_script(entry):
    spec = mlproject_entry_points()[entry]
    command = spec["command"]
    script = re.search(r"python (pipelines/\S+\.py)", command).group(1)
    for name in spec.get("parameters", {}):
        assert f"--{name} {{{name}}}" in command, f"{entry}: param {name} is not passed to {script}"
    help_text = run_script([script, "--help"], cwd=REPO).stdout
    for name in spec.get("parameters", {}):
        assert f"--{name}" in help_text, f"{script} does not accept --{name}"


def test_pipelines_stay_thin():
    for script in (REPO / "pipelines").glob("*.py"):
        lines = [line for line in script.read_text().splitlines() if line.strip()]
        assert len(lines) <= 70, f"{script.name} has {len(lines)} lines; move logic into dlfm/"
