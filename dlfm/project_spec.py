"""The MLflow Project spec, generated from the config dataclasses: one row per entry point.

The dataclasses are the one home of every param's name and default; ``MLproject`` is generated
from the rows below and checked in, so ``mlflow run`` and the MLflow UI still see every param.
Regenerate it after changing a config field or a row:

    python -m dlfm.project_spec > MLproject

``tests/test_project.py`` fails while MLproject, a dataclass or the docs param tables disagree. Adding an
entry point is one row here (plus its script in ``pipelines/``). Config classes are named by
import path, so a script that builds its parser from its row imports only its own configs.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
from dataclasses import dataclass

from dlfm.entrypoint import field_help, format_default  # noqa: F401 - format_default: tests and callers read it here
from dlfm.objectives import OBJECTIVES
from dlfm.training.config import objective_excluded_params

HEADER = """\
name: dlfm

# GENERATED from the config dataclasses by dlfm/project_spec.py; do not edit by hand.
# Regenerate: python -m dlfm.project_spec > MLproject
#
# The environment for `mlflow run .` with conda; pins mirror pyproject.toml (a test checks).
# Without conda: `mlflow run . -e <entry> --env-manager local` with .venv activated.
# Every param is declared as a string: the scripts convert and check them, so a bad value
# gets one clear line instead of an MLflow traceback.
conda_env: conda.yaml

# Runs land in the experiment of `mlflow run --experiment-name NAME` or MLFLOW_EXPERIMENT_NAME
# (export MLFLOW_EXPERIMENT_NAME=deeplense-fm once per shell); there is no experiment_name param.
#
# Training entry points take resume=<run_id>: reopen that killed or failed run and continue after its
# last checkpoint (params left at their defaults are taken from the checkpoint; epochs may grow).
entry_points:
"""

TRAIN = "dlfm.training.config:TrainConfig"
# Training fields that the scripts accept (`-P grad_clip=0.5` reaches them: MLflow passes undeclared
# params as --name value) but that MLproject leaves undeclared, to keep the UI's param list short.
TRAIN_ADVANCED = ("grad_clip", "label_smoothing")
# tune fixes these itself (its trials' objective is TuneConfig.objective, a param; TrainConfig.objective has no default)
SINGLE_LOSS = ("recon_weight", "loss_balance")
# Accepted by every script (a direct `python pipelines/x.py --experiment_name …`) but never declared: under
# `mlflow run` the run is filed by --experiment-name / MLFLOW_EXPERIMENT_NAME before the script starts, so a
# declared param would claim an experiment the run may not be in.
UNDECLARED = ("experiment_name",)


@dataclass(frozen=True)
class EntryPoint:
    """One MLproject entry point: its script and the config dataclasses whose fields are its params."""

    name: str  # `mlflow run . -e <name>`
    script: str  # the thin script in pipelines/ that parses the params
    configs: tuple[str, ...]  # "module:Class" of frozen config dataclasses; their fields are the params, in order
    fixed: tuple[str, ...] = ()  # fields the entry point sets itself: neither declared nor accepted
    advanced: tuple[str, ...] = ()  # fields the script accepts but MLproject does not declare
    comment: str = ""  # comment lines written above the entry point in MLproject


ENTRY_POINTS = (
    EntryPoint("simulate", "pipelines/simulate.py",
               ("dlfm.simulation.config:SimulationConfig", "dlfm.stages.simulate:SimulateOptions")),
    # One training entry point per row of dlfm.objectives.OBJECTIVES, taking the params that objective uses.
    *(EntryPoint(name, f"pipelines/{name}.py", (TRAIN,), fixed=("objective", *objective_excluded_params(name)),
                 advanced=TRAIN_ADVANCED) for name in OBJECTIVES),
    EntryPoint("transfer", "pipelines/transfer.py", ("dlfm.transfer:TransferConfig",)),
    EntryPoint("evaluate", "pipelines/evaluate.py", ("dlfm.evaluation.config:EvaluateConfig",)),
    EntryPoint("anomaly", "pipelines/anomaly.py", ("dlfm.anomaly:AnomalyConfig",)),
    EntryPoint("main", "pipelines/main.py", ("dlfm.stages.main:MainConfig",)),
    EntryPoint("tune", "pipelines/tune.py", (TRAIN, "dlfm.tune.config:TuneConfig"),
               fixed=SINGLE_LOSS + ("resume", "nproc", "train", "checkpoint_every_s"), advanced=TRAIN_ADVANCED,
               comment="n_trials counts the study's finished trials: rerunning the same command (or running it on another\n"
                       "machine with the same storage and study_name) joins the study and only adds the missing trials."),
)


def entry_point(name: str) -> EntryPoint:
    """The row of entry point ``name``."""
    for row in ENTRY_POINTS:
        if row.name == name:
            return row
    raise KeyError(f"no entry point {name!r} in dlfm.project_spec.ENTRY_POINTS")


def config_class(path: str) -> type:
    """Import ``module:Class``."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def param_fields(row: EntryPoint, declared_only: bool = False) -> list[tuple[type, dataclasses.Field]]:
    """(config class, field) of every param of ``row``, in order; fields without a default are never params."""
    skip = set(row.fixed) | (set(row.advanced) | set(UNDECLARED) if declared_only else set())
    found = []
    for path in row.configs:
        cls = config_class(path)
        found += [(cls, f) for f in dataclasses.fields(cls) if f.name not in skip and f.default is not dataclasses.MISSING]
    return found


def add_entry_point_params(parser: argparse.ArgumentParser, name: str) -> None:
    """One typed ``--field`` option per param the script of entry point ``name`` accepts."""
    from dlfm.entrypoint import add_config_params

    row = entry_point(name)
    for path in row.configs:
        add_config_params(parser, config_class(path), exclude=row.fixed)


def render_mlproject() -> str:
    """The text of MLproject."""
    blocks = []
    for row in ENTRY_POINTS:
        params = param_fields(row, declared_only=True)
        fields = [f for _cls, f in params]
        lines = [f"  # {line}" for line in row.comment.splitlines()]
        lines += [f"  {row.name}:", "    parameters:"]
        lines += [f"      {f.name}: {{type: string, default: {json.dumps(format_default(f.default))}}}  # {field_help(cls)[f.name]}"
                  for cls, f in params]
        command = " ".join([f"python {row.script}"] + [f"--{f.name} {{{f.name}}}" for f in fields])
        lines.append(f"    command: {json.dumps(command)}")
        blocks.append("\n".join(lines) + "\n")
    return HEADER + "\n".join(blocks)


if __name__ == "__main__":
    print(render_mlproject(), end="")
