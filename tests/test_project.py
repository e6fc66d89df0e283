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


# Imported by dlfm but deliberately not declared, each with its reason.
UNDECLARED_IMPORTS = {
    "botocore": "boto3's own half: boto3 requires the botocore of its release, so a pin of ours would fight it",
    "numba": "optional (ImportError handled in simulation/physics.py); lenstronomy brings it",
    "threadpoolctl": "optional (ImportError handled in simulation/pool.py); scikit-learn brings it",
}


def test_every_third_party_import_of_dlfm_is_declared():
    """A module dlfm imports directly is a declared dependency, not something another package happens to bring."""
    import ast
    import importlib.metadata
    import sys

    modules = set()
    for path in (REPO / "dlfm").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    declared = {re.split(r"[\[=<>~ ]", req)[0].lower().replace("_", "-") for req in pyproject_dependencies()}
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for module in sorted(modules - set(sys.stdlib_module_names) - {"dlfm"} - set(UNDECLARED_IMPORTS)):
        names = {name.lower().replace("_", "-") for name in distributions.get(module, [module])}
        if not names & declared:
            missing.append(f"{module} ({', '.join(sorted(names))})")
    assert not missing, f"dlfm imports {missing} without declaring them in pyproject.toml (and conda.yaml)"


def test_required_pins_are_exact():
    deps = set(pyproject_dependencies())
    for pin in ("torch==2.14.1", "torchvision==0.29.1", "mlflow[auth]==3.17.2", "optuna==5.0.0", "lenstronomy==1.14.2"):
        assert pin in deps


def mlproject_entry_points() -> dict:
    return yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]


def test_mlproject_declares_conda_env():
    assert yaml.safe_load((REPO / "MLproject").read_text())["conda_env"] == "conda.yaml"


def test_mlproject_is_generated_from_the_dataclasses():
    """MLproject is what dlfm.project_spec renders; after a config change: python -m dlfm.project_spec > MLproject."""
    from dlfm.project_spec import render_mlproject

    assert (REPO / "MLproject").read_text() == render_mlproject(), "MLproject is stale: run python -m dlfm.project_spec > MLproject"


def test_every_row_declares_its_dataclass_fields_with_their_defaults():
    from dlfm.project_spec import ENTRY_POINTS, format_default, param_fields

    declared = mlproject_entry_points()
    assert sorted(declared) == sorted(row.name for row in ENTRY_POINTS)
    for row in ENTRY_POINTS:
        expected = {f.name: format_default(f.default) for _cls, f in param_fields(row, declared_only=True)}
        actual = {name: spec["default"] for name, spec in declared[row.name]["parameters"].items()}
        assert actual == expected, row.name


def test_every_param_is_described_in_help_and_mlproject():
    """--help shows each param's meaning and default, MLproject a one-line comment: both from the field's comment."""
    import argparse

    from dlfm.entrypoint import field_help
    from dlfm.project_spec import ENTRY_POINTS, add_entry_point_params, format_default, param_fields

    mlproject = (REPO / "MLproject").read_text().splitlines()
    for row in ENTRY_POINTS:
        parser = argparse.ArgumentParser(formatter_class=lambda prog: argparse.HelpFormatter(prog, width=100_000))  # no wrapping
        add_entry_point_params(parser, row.name)
        shown = " ".join(parser.format_help().split())
        for cls, field in param_fields(row):
            meaning = " ".join(field_help(cls)[field.name].split())
            assert meaning, f"{cls.__name__}.{field.name} has no comment to describe it"
            default = format_default(field.default) or "(empty)"
            assert f"--{field.name} " in shown and f"{meaning} (default: {default})" in shown, (row.name, field.name)
        block = mlproject[mlproject.index(f"  {row.name}:"):]
        for _cls, field in param_fields(row, declared_only=True):
            line = next(line for line in block if line.startswith(f"      {field.name}: "))
            assert re.search(r"\}  # \S", line), f"MLproject: {row.name}.{field.name} has no comment"


def test_training_corpus_seed_is_apart_from_every_evaluation_seed():
    """-P pretrain_dataset=pretrain simulates the corpus at pretrain_seed, never at a seed an evaluation set uses."""
    from dlfm.evaluation.config import EvaluateConfig
    from dlfm.simulation import SimulationConfig
    from dlfm.training import TrainConfig

    train = TrainConfig(objective="mae")
    assert train.pretrain_seed not in {train.seed, SimulationConfig().seed, EvaluateConfig().sim_seed}
    for name in ("autoencoder", "mae"):
        assert "pretrain_seed" in mlproject_entry_points()[name]["parameters"]


def test_a_pretrain_preset_is_simulated_at_pretrain_seed(monkeypatch):
    from types import SimpleNamespace

    import dlfm.stages.common as common
    from dlfm.stages.train import prepare_data
    from dlfm.training import TrainConfig

    seeds = {}

    class Resolved(Exception):
        pass

    def resolve_dataset(spec, *sizes, seed=0, **_):
        seeds[spec] = seed
        if len(seeds) == 2:
            raise Resolved
        return object()

    monkeypatch.setattr(common, "resolve_dataset", resolve_dataset)
    with pytest.raises(Resolved):
        prepare_data(TrainConfig(objective="mae", pretrain_dataset="pretrain", pretrain_seed=1234), SimpleNamespace(is_main_process=True))
    assert seeds == {"model_ii": 0, "pretrain": 1234}


# The hand-written param tables live on the docs pages of their tasks (the README is short); the generated
# docs/reference/entry-points.md is checked by tests/test_docs.py instead.
TABLE_PAGES = ("docs/data.md", "docs/pretraining.md", "docs/evaluate.md")


def readme_tables() -> dict[tuple[str, ...], dict[str, str]]:
    """{entry points of a docs page's "`name` — …" section: {param: default text}} from its param tables."""
    tables, section = {}, None
    for line in "\n".join((REPO / page).read_text() for page in TABLE_PAGES).splitlines():
        if line.startswith("#"):  # a section is a heading "## `simulate` — …"; any other heading ends it
            section = tuple(re.findall(r"`(\w+)`", line.split(" — ")[0])) if " — " in line else None
        elif section and line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            names = re.findall(r"`(\w+)`", cells[0])
            defaults = [cells[1]] if len(names) == 1 else [d.strip() for d in cells[1].split(",")]
            assert len(defaults) == len(names), f"README row {line!r}: one default per name"
            tables.setdefault(section, {}).update(zip(names, defaults))
    return tables


def same_default(readme: str, declared: str) -> bool:
    """README writes defaults for people: `auto`, 1e-3, 0 (all cores), (empty)."""
    text = "" if readme == "(empty)" else re.sub(r"\s*\(.*\)$", "", readme).strip("`")
    try:
        return float(text) == float(declared)
    except ValueError:
        return text == declared


def test_readme_param_tables_agree_with_mlproject():
    from dlfm.project_spec import entry_point

    declared = mlproject_entry_points()
    tables = readme_tables()
    assert {"simulate", "multitask", "transfer"} <= {name for section in tables for name in section}
    for section, rows in tables.items():
        params = {}
        for entry in section:
            params.update({k: v["default"] for k, v in declared[entry]["parameters"].items()})
            missing = set(declared[entry]["parameters"]) - set(rows)
            assert not missing, f"README table of {entry} lacks {sorted(missing)}"
        for name, default in rows.items():
            assert name in params, f"README documents {name!r} for {section}, which MLproject does not declare"
            assert same_default(default, params[name]), f"README default of {name} ({default}) != MLproject ({params[name]})"
    main_line = re.search(r"^Params: (.*?)\(see", (REPO / "docs/pretraining.md").read_text(), re.M | re.S).group(1)
    names = set()
    for pattern in re.findall(r"`(\w+\*?)`", main_line):
        names |= {p for p in declared["main"]["parameters"] if p.startswith(pattern[:-1])} if pattern.endswith("*") else {pattern}
    assert names == set(declared["main"]["parameters"]), "README's main Params list disagrees with MLproject"
    assert entry_point("main").script == "pipelines/main.py"


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
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


@pytest.mark.parametrize("entry", sorted(mlproject_entry_points()))
def test_every_declared_param_is_parsed_from_the_same_row(entry):
    """In-process twin of the --help test: each script builds its parser from its own project_spec row."""
    import argparse

    from dlfm.project_spec import add_entry_point_params, entry_point

    spec = mlproject_entry_points()[entry]
    script = (REPO / entry_point(entry).script).read_text()
    assert f'add_entry_point_params(parser, "{entry}")' in script or f'main_for("{entry}")' in script
    parser = argparse.ArgumentParser()
    add_entry_point_params(parser, entry)
    args = parser.parse_args([arg for name, p in spec["parameters"].items() for arg in (f"--{name}", p["default"] or "")])
    assert set(vars(args)) >= set(spec["parameters"])


def test_pipelines_stay_thin():
    for script in (REPO / "pipelines").glob("*.py"):
        lines = [line for line in script.read_text().splitlines() if line.strip()]
        assert len(lines) <= 70, f"{script.name} has {len(lines)} lines; move logic into dlfm/"


def test_readmes_own_pytorch_snippet_embeds_with_the_registered_encoder(tracking_uri, tmp_path):
    """The docs' "Using a registered encoder in your own PyTorch code" block (docs/registry.md) runs as written."""
    import numpy as np
    import torch

    from dlfm.models import create_encoder
    from dlfm.tracking import registry
    from dlfm.tracking.runs import stage_run

    with stage_run("multitask", "multitask-test", "readme-test", system_metrics=False) as run_id:
        version = registry.register_encoder_version(create_encoder("conv4"), 64, "multitask", {"val/macro_auc": 0.7}, "d" * 64, run_id)
    registry.promote(version, "production")
    readme = (REPO / "docs/registry.md").read_text()
    section = readme[readme.index("## Using a registered encoder"):]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    np.save(tmp_path / "my_images.npy", np.random.default_rng(0).random((3, 1, 64, 64), dtype=np.float32) * 100)
    scope: dict = {}
    exec(compile(snippet, "docs/registry.md", "exec"), scope)  # noqa: S102 - our own docs, run in tmp_path
    assert scope["embeddings"].shape == (3, 128) and torch.isfinite(scope["embeddings"]).all()


@pytest.mark.parametrize("value", ["", "0,1,2", "/data/my lenses", "it's", "models:/dlfm-encoder@production", "a*b"])
def test_a_param_is_read_back_as_the_entry_point_received_it(value):
    """`mlflow run` stores each -P value as it quotes it for the shell; step reuse, resume and the results page undo it."""
    from mlflow.utils.string_utils import quote

    from dlfm.params import param_as_given, param_from_string

    assert param_as_given(quote(value)) == value
    assert param_from_string("", quote(value)) == value
