"""Entry point `mlflow run . -e main` (what `make demo` runs): the whole pipeline at demo size.

Reads: nothing but its params. Writes: nested runs for every step, registry versions and
promotions, reports/latest/ (report.md + figures) and the same under the run's report/ artifacts.
"""

from dlfm.entrypoint import ParamParser, config_from_args, run_entry_point
from dlfm.project_spec import add_entry_point_params


def main() -> None:
    from dlfm.stages.main import MainConfig, run_main_stage

    parser = ParamParser(prog="pipelines/main.py", description="Run the whole dlfm pipeline.")
    add_entry_point_params(parser, "main")
    run_main_stage(config_from_args(MainConfig, parser.parse_args()))


if __name__ == "__main__":
    run_entry_point(main)
