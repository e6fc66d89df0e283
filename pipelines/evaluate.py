"""Entry point `mlflow run . -e evaluate`: label efficiency of a registered encoder.

Reads: models:/dlfm-encoder@<encoder_stage> (or encoder_uri), resolved to one version; a held-out
model_ii set, a regression set and (tasks=...,superres) a 64-px set to degrade (presets are simulated with
sim_seed and cached).
Writes: one child run per (task, budget, arm, seed); on the parent evaluation.md,
evaluation_summary.csv, evaluation_cells.csv, evaluation.json, figures/label_efficiency.png and
figures/label_efficiency_regression.png, verdict tags and the resolved version tag.
"""

from dlfm.entrypoint import ParamParser, config_from_args, run_entry_point
from dlfm.project_spec import add_entry_point_params


def main() -> None:
    from dlfm.evaluation import EvaluateConfig
    from dlfm.stages.evaluate import run_evaluate_stage

    parser = ParamParser(prog="pipelines/evaluate.py", description="Label-efficiency evaluation of a registered encoder.")
    add_entry_point_params(parser, "evaluate")
    summary = run_evaluate_stage(config_from_args(EvaluateConfig, parser.parse_args()))
    if not summary:  # a torchrun rank > 0: its cells are child runs of rank 0's parent, which reports them
        return
    print(f"evaluate run {summary['run_id']} (encoder version {summary['version']}):")
    print(summary["markdown"])


if __name__ == "__main__":
    run_entry_point(main)
