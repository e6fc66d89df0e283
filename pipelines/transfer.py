"""Entry point `mlflow run . -e transfer`: pretrained (by registry stage) vs random frozen encoder.

evaluate's regression task at budget `all` with two arms (dlfm.stages.transfer).
Reads: models:/dlfm-encoder@<encoder_stage> (or encoder_uri) and a regression dataset (lens parameters,
or an imported set's numeric CSV columns).
Writes: one child run per arm and seed; on the parent everything evaluate writes plus
transfer_table.md/.json, figures/mae_bars.png and figures/parity.png.
"""

from dlfm.entrypoint import ParamParser, config_from_args, run_entry_point
from dlfm.project_spec import add_entry_point_params


def main() -> None:
    from dlfm.stages.transfer import run_transfer_stage
    from dlfm.transfer import TransferConfig

    parser = ParamParser(prog="pipelines/transfer.py",
                         description="Pretrained-vs-random transfer to lens parameters (or an imported set's CSV columns).")
    add_entry_point_params(parser, "transfer")
    config = config_from_args(TransferConfig, parser.parse_args())
    summary = run_transfer_stage(config)
    print(f"transfer run {summary['run_id']} (encoder version {summary['version']}), test MAE:")
    print(summary["transfer_markdown"])


if __name__ == "__main__":
    run_entry_point(main)
