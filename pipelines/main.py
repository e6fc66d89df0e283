"""Entry point `mlflow run . -e main` (what `make demo` runs): the whole pipeline at demo size.

Reads: nothing but its params. Writes: nested runs for every step, registry versions and
promotions, reports/latest/ (report.md + figures) and the same under the run's report/ artifacts.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dlfm.entrypoint import ParamParser, add_config_params, config_from_args, run_entry_point  # noqa: E402


def main() -> None:
    from dlfm.stages.main import MainConfig, run_main_stage

    parser = ParamParser(prog="pipelines/main.py", description="Run the whole dlfm pipeline.")
    add_config_params(parser, MainConfig)
    run_main_stage(config_from_args(MainConfig, parser.parse_args()))


if __name__ == "__main__":
    run_entry_point(main)
