"""Entry point `mlflow run . -e simulate`: simulate a lensing dataset with lenstronomy (cached).

Reads: nothing (or the cache under out_dir). Writes: <out_dir>/<preset>-<digest>/ (images.npy,
labels.npy, params.csv, manifest.json) and run artifacts manifest.json and figures/examples.png.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dlfm.entrypoint import ParamParser, add_config_params, config_from_args, run_entry_point, typed  # noqa: E402


def main() -> None:
    from dlfm.simulation import SimulationConfig
    from dlfm.stages.simulate import run_simulate_stage

    parser = ParamParser(prog="pipelines/simulate.py", description="Simulate a DeepLense-style dataset.")
    add_config_params(parser, SimulationConfig)
    parser.add_argument("--out_dir", default="data")
    parser.add_argument("--workers", type=typed("workers", int), default=0, help="processes (0 = all cores)")
    parser.add_argument("--force", type=typed("force", bool), default=False, help="rebuild even if a verified cache exists")
    parser.add_argument("--experiment_name", default="deeplense-fm")
    args = parser.parse_args()
    config = config_from_args(SimulationConfig, args)
    summary = run_simulate_stage(config, args.out_dir, args.workers or None, args.force, args.experiment_name)
    print(f"simulate run {summary['run_id']}: dataset {summary['path']} (digest {summary['digest'][:12]})")


if __name__ == "__main__":
    run_entry_point(main)
