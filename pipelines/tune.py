"""Entry point `mlflow run . -e tune`: Optuna searches the multitask recon_weight, or with objective=mae the
mask_ratio (and lr with tune_lr).

Reads: `dataset` (preset, dataset dir or DeepLense folders) and the Optuna `storage` (joins the
study if it exists). Writes: the study's trials to `storage`; a parent run with figures/optuna_*.png
and optuna/trials.json, one child run per trial (the best-so-far ones with encoder/), and a
dlfm-encoder version of the best trial's encoder.
"""

from dlfm.entrypoint import ParamParser, config_from_args, run_entry_point
from dlfm.project_spec import add_entry_point_params


def main() -> None:
    from dlfm.stages.tune import run_tune_stage
    from dlfm.training import TrainConfig
    from dlfm.tune import TuneConfig

    parser = ParamParser(prog="pipelines/tune.py", description="Tune the multitask loss weight (or mae's mask ratio) with Optuna.")
    add_entry_point_params(parser, "tune")
    args = parser.parse_args()
    config = config_from_args(TuneConfig, args, train=config_from_args(TrainConfig, args))
    summary = run_tune_stage(config)
    params = ", ".join(f"{k}={v:.4g}" for k, v in summary["best_params"].items())
    print(f"tune run {summary['run_id']}: study {summary['study_name']} {summary['states']}; best trial "
          f"{summary['best_trial']} ({params}) score={summary['best_value']:.4f}; "
          f"registered dlfm-encoder version {summary['version']}")


if __name__ == "__main__":
    run_entry_point(main)
