"""Entry point `mlflow run . -e simulate`: simulate a lensing dataset with lenstronomy (cached).

Reads: nothing (or the cache under out_dir). Writes: <out_dir>/<preset>-<digest>/ (images.npy,
labels.npy, params.csv, manifest.json) and run artifacts manifest.json and figures/examples.png; with
shard_images=K, <out_dir>/<preset>-<digest>-shards<K>/ (Parquet shards and manifest.json) and manifest.json.
"""

from dlfm.entrypoint import ParamParser, config_from_args, run_entry_point
from dlfm.project_spec import add_entry_point_params


def main() -> None:
    from dlfm.simulation import SimulationConfig
    from dlfm.stages.simulate import SimulateOptions, run_simulate_stage

    parser = ParamParser(prog="pipelines/simulate.py", description="Simulate a DeepLense-style dataset.")
    add_entry_point_params(parser, "simulate")
    args = parser.parse_args()
    config, options = config_from_args(SimulationConfig, args), config_from_args(SimulateOptions, args)
    summary = run_simulate_stage(config, options.out_dir, options.workers or None, options.force, options.experiment_name,
                                 options.shard_images)
    print(f"simulate run {summary['run_id']}: dataset {summary['path']} (digest {summary['digest'][:12]})")


if __name__ == "__main__":
    run_entry_point(main)
