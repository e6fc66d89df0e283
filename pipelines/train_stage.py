"""Shared body of the training entry points (one per row of dlfm.objectives.OBJECTIVES).

Reads: a preset (simulated into data/ if missing), a dataset dir or DeepLense class folders.
Writes (MLflow run artifacts): figures/*.png, encoder/ (weights.pt + arch.json), checkpoints/last.pt
(each epoch; a local copy in checkpoints/<run_id>/). With --resume <run_id> it continues that run.
"""

from __future__ import annotations

import dataclasses
import sys

from dlfm.entrypoint import ParamParser, config_from_args, run_entry_point
from dlfm.project_spec import add_entry_point_params
from dlfm.training import TrainConfig, distributed


def main_for(objective: str, argv: list[str] | None = None) -> None:
    """Parse params into a TrainConfig for ``objective`` and run the stage."""

    def main() -> None:
        from dlfm.stages.train import run_training_stage

        parser = ParamParser(prog=f"pipelines/{objective}.py", description=f"Train the {objective} stage.")
        add_entry_point_params(parser, objective)
        config = config_from_args(TrainConfig, parser.parse_args(argv), objective=objective)
        if distributed.under_torchrun():
            config = dataclasses.replace(config, nproc=distributed.world_size())
        elif config.nproc > 1:
            config.validate()
            distributed.check_nproc(config.nproc, config.device)
            sys.exit(distributed.relaunch_with_torchrun(config.nproc, sys.argv[0], sys.argv[1:] if argv is None else argv))
        run_training_stage(config)  # prints its closing lines (experiment, run, version, where to look)

    run_entry_point(main)
